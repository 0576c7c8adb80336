// xl domain config files (xl.cfg(5)): `key = value` settings ended by a newline or ';', values are
// strings ('…' or "…", with C escapes), numbers (decimal, 0x hex) or lists `[ v, v, ]` that may span
// lines and nest; `#` starts a comment; `key += value` appends (xl's own grammar,
// tools/libs/util/libxlu_cfg_y.y). A later setting of the same key replaces the earlier one.
// Pure: takes the text and the file name (for messages only).
import { UsageError } from '../internal/errors.ts';
import { parseXlDiskSpec } from './xl-disk.ts';
import type { XlDisk } from './xl-disk.ts';

export type XlValue = string | number | XlValue[];

export interface XlConfig {
  readonly file: string;
  readonly name: string;
  /** MiB. */
  readonly memory: number;
  /** MiB, when given (a simulated guest does not balloon, so it is also listed in `ignored`). */
  readonly maxmem?: number;
  readonly vcpus: number;
  readonly disks: XlDisk[];
  /** Keys present in the file that mean nothing here (kernel, vif, on_crash, …), in file order. */
  readonly ignored: string[];
  /** Every setting as parsed. */
  readonly raw: Record<string, XlValue>;
}

/** Keys this project acts on; everything else lands in `ignored`. */
const USED_KEYS = new Set(['name', 'memory', 'vcpus', 'disk']);
/** Our defaults where the file says nothing (a small simulated guest). */
const DEFAULT_MEMORY_MIB = 128;
const DEFAULT_VCPUS = 1;

interface Node {
  readonly value: string | number | Node[];
  readonly line: number;
}

type Token =
  | { readonly t: 'id'; readonly v: string; readonly line: number }
  | { readonly t: 'str'; readonly v: string; readonly line: number }
  | { readonly t: 'num'; readonly v: number; readonly line: number }
  | { readonly t: 'op'; readonly v: '=' | '+=' | '[' | ']' | ',' | ';' | '\n'; readonly line: number }
  | { readonly t: 'eof'; readonly line: number };

const ESCAPES: Readonly<Record<string, string>> = { n: '\n', t: '\t', r: '\r', '\\': '\\', "'": "'", '"': '"', a: '\x07', b: '\b', f: '\f', v: '\v' };

function tokenize(text: string, file: string): Token[] {
  const out: Token[] = [];
  let line = 1;
  let i = 0;
  const fail = (why: string): never => {
    throw new UsageError(`${file}:${line}: ${why}`);
  };
  while (i < text.length) {
    const c = text[i] as string;
    if (c === '\n') {
      out.push({ t: 'op', v: '\n', line });
      line++;
      i++;
    } else if (c === ' ' || c === '\t' || c === '\r') {
      i++;
    } else if (c === '#') {
      while (i < text.length && text[i] !== '\n') i++;
    } else if (c === '"' || c === "'") {
      const start = line;
      let s = '';
      i++;
      for (;;) {
        if (i >= text.length || text[i] === '\n') fail(`unterminated string (opened with ${c})`);
        const ch = text[i] as string;
        if (ch === c) {
          i++;
          break;
        }
        if (ch === '\\') {
          const e = text[i + 1] ?? '';
          const simple = ESCAPES[e];
          if (simple !== undefined) {
            s += simple;
            i += 2;
          } else if (e === 'x' && /^[0-9a-fA-F]{2}$/.test(text.slice(i + 2, i + 4))) {
            s += String.fromCharCode(Number.parseInt(text.slice(i + 2, i + 4), 16));
            i += 4;
          } else if (/^[0-7]$/.test(e)) {
            const oct = /^[0-7]{1,3}/.exec(text.slice(i + 1))?.[0] ?? e;
            s += String.fromCharCode(Number.parseInt(oct, 8));
            i += 1 + oct.length;
          } else {
            fail(`unknown escape '\\${e}' in string`);
          }
          continue;
        }
        s += ch;
        i++;
      }
      out.push({ t: 'str', v: s, line: start });
    } else if (/[A-Za-z_]/.test(c)) {
      const m = /^[A-Za-z_][A-Za-z0-9_.]*/.exec(text.slice(i, i + 256)) as RegExpExecArray;
      out.push({ t: 'id', v: m[0], line });
      i += m[0].length;
    } else if (/[0-9]/.test(c) || ((c === '-' || c === '+') && /[0-9]/.test(text[i + 1] ?? ''))) {
      const m = /^[-+]?(0x[0-9a-fA-F]+|[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?)(?![A-Za-z0-9_.])/.exec(text.slice(i, i + 64));
      if (m === null) fail(`bad number '${/^[^\s,\]#;]*/.exec(text.slice(i))?.[0] ?? c}'`);
      const lit = (m as RegExpExecArray)[0];
      const sign = lit.startsWith('-') ? -1 : 1;
      const body = lit.replace(/^[-+]/, '');
      out.push({ t: 'num', v: sign * (body.startsWith('0x') ? Number.parseInt(body.slice(2), 16) : Number(body)), line });
      i += lit.length;
    } else if (c === '+' && text[i + 1] === '=') {
      out.push({ t: 'op', v: '+=', line });
      i += 2;
    } else if (c === '=' || c === '[' || c === ']' || c === ',' || c === ';') {
      out.push({ t: 'op', v: c, line });
      i++;
    } else {
      fail(`unexpected character '${c}'`);
    }
  }
  out.push({ t: 'eof', line });
  return out;
}

function describe(tok: Token): string {
  switch (tok.t) {
    case 'eof':
      return 'end of file';
    case 'op':
      return tok.v === '\n' ? 'end of line' : `'${tok.v}'`;
    case 'str':
      return `string '${tok.v}'`;
    default:
      return `'${tok.v}'`;
  }
}

function parseSettings(text: string, file: string): { settings: Map<string, Node>; order: string[] } {
  const toks = tokenize(text, file);
  let p = 0;
  const peek = (): Token => toks[p] as Token;
  const fail = (tok: Token, why: string): never => {
    throw new UsageError(`${file}:${tok.line}: ${why}`);
  };
  const skipNewlines = (): void => {
    for (let t = peek(); t.t === 'op' && t.v === '\n'; t = peek()) p++;
  };

  const parseValue = (key: string): Node => {
    const t = peek();
    if (t.t === 'str' || t.t === 'num') {
      p++;
      return { value: t.v, line: t.line };
    }
    if (t.t === 'op' && t.v === '[') {
      p++;
      const items: Node[] = [];
      for (;;) {
        skipNewlines();
        const n = peek();
        if (n.t === 'op' && n.v === ']') {
          p++;
          break;
        }
        items.push(parseValue(key));
        skipNewlines();
        const sep = peek();
        if (sep.t === 'op' && sep.v === ',') {
          p++;
          continue;
        }
        if (sep.t === 'op' && sep.v === ']') continue;
        fail(sep, `in the list for '${key}' (opened on line ${t.line}): expected ',' or ']' but found ${describe(sep)}`);
      }
      return { value: items, line: t.line };
    }
    if (t.t === 'id') fail(t, `value of '${key}' must be quoted: "${t.v}" (a bare word is not a value)`);
    return fail(t, `expected a value for '${key}' (a string, number or [list]) but found ${describe(t)}`);
  };

  const settings = new Map<string, Node>();
  const order: string[] = [];
  for (;;) {
    const t = peek();
    if (t.t === 'eof') break;
    if (t.t === 'op' && (t.v === '\n' || t.v === ';')) {
      p++;
      continue;
    }
    if (t.t !== 'id') fail(t, `expected a setting name but found ${describe(t)}`);
    const key = (t as { v: string }).v;
    p++;
    const op = peek();
    if (op.t !== 'op' || (op.v !== '=' && op.v !== '+=')) fail(op, `expected '=' after '${key}' but found ${describe(op)}`);
    p++;
    const value = parseValue(key);
    const end = peek();
    if (!(end.t === 'eof' || (end.t === 'op' && (end.v === '\n' || end.v === ';')))) {
      fail(end, `after the value of '${key}': expected end of line or ';' but found ${describe(end)}`);
    }
    const old = settings.get(key);
    if ((op as { v: string }).v === '+=' && old !== undefined) {
      if (Array.isArray(old.value) && Array.isArray(value.value)) {
        settings.set(key, { value: [...old.value, ...value.value], line: old.line });
      } else if (typeof old.value === 'string' && typeof value.value === 'string') {
        settings.set(key, { value: old.value + value.value, line: old.line });
      } else {
        fail(t, `'${key} +=' needs a list added to a list or a string to a string`);
      }
    } else {
      settings.set(key, value);
    }
    if (!order.includes(key)) order.push(key);
  }
  return { settings, order };
}

function plain(node: Node): XlValue {
  return Array.isArray(node.value) ? node.value.map(plain) : node.value;
}

/** Parses an xl config file's text; errors are UsageErrors naming file:line. */
export function parseXlConfig(text: string, file: string): XlConfig {
  const { settings, order } = parseSettings(text, file);
  const at = (key: string): string => `${file}:${settings.get(key)?.line ?? 0}`;

  const str = (key: string): string | undefined => {
    const n = settings.get(key);
    if (n === undefined) return undefined;
    if (typeof n.value !== 'string') throw new UsageError(`${at(key)}: '${key}' must be a string`);
    return n.value;
  };
  const mib = (key: string, min: number): number | undefined => {
    const n = settings.get(key);
    if (n === undefined) return undefined;
    // xl accepts numbers written as strings ("2048") too.
    const v = typeof n.value === 'string' && /^\d+$/.test(n.value) ? Number(n.value) : n.value;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
      throw new UsageError(`${at(key)}: '${key}' must be a whole number >= ${min}`);
    }
    return v;
  };

  const name = str('name');
  if (name === undefined || name === '') throw new UsageError(`${file}: no 'name' setting (xl requires a domain name)`);
  const memory = mib('memory', 1) ?? DEFAULT_MEMORY_MIB;
  const maxmem = mib('maxmem', 1);
  const vcpus = mib('vcpus', 1) ?? DEFAULT_VCPUS;

  const disks: XlDisk[] = [];
  const diskNode = settings.get('disk');
  if (diskNode !== undefined) {
    if (!Array.isArray(diskNode.value)) {
      throw new UsageError(`${at('disk')}: 'disk' must be a list of strings, e.g. disk = [ 'phy:/dev/sdb,xvda,w' ]`);
    }
    const seen = new Map<number, string>();
    for (const item of diskNode.value) {
      const where = `${file}:${item.line}`;
      if (typeof item.value !== 'string') throw new UsageError(`${where}: each 'disk' entry must be a string`);
      const disk = parseXlDiskSpec(item.value, where);
      const clash = seen.get(disk.deviceId);
      if (clash !== undefined) {
        throw new UsageError(`${where}: disk spec '${item.value}': vdev ${disk.vdev} is already used by '${clash}'`);
      }
      seen.set(disk.deviceId, item.value);
      disks.push(disk);
    }
  }

  const raw: Record<string, XlValue> = {};
  for (const key of order) raw[key] = plain(settings.get(key) as Node);
  const ignored = order.filter((k) => !USED_KEYS.has(k));

  return {
    file,
    name,
    memory,
    ...(maxmem !== undefined ? { maxmem } : {}),
    vcpus,
    disks,
    ignored,
    raw,
  };
}
