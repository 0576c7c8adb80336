// Value substitution fio applies to every option line before parsing it (options.c
// fio_option_dup_subs, fio_keyword_replace, bc_calc): ${VAR} from the environment (undefined -> ""),
// then $pagesize/$mb_memory/$ncpus, and when a keyword was replaced and the line holds + - * /,
// integer arithmetic on the value (fio pipes it through bc; we evaluate bc's integer subset here).

export interface Keywords {
  readonly pagesize: number;
  readonly mb_memory: number;
  readonly ncpus: number;
}

export function substituteEnv(line: string, env: Readonly<Record<string, string | undefined>>): string {
  let out = '';
  let i = 0;
  while (i < line.length) {
    if (line[i] === '$' && line[i + 1] === '{') {
      const close = line.indexOf('}', i);
      if (close > i + 1) {
        out += env[line.slice(i + 2, close)] ?? '';
        i = close + 1;
        continue;
      }
    }
    out += line[i];
    i++;
  }
  return out;
}

/** Returns the substituted line, or null when fio's bc step would fail (the option then fails to parse). */
export function substituteKeywords(line: string, kw: Keywords): string | null {
  let s = line;
  let replaced = false;
  for (const [word, value] of [
    ['$pagesize', kw.pagesize],
    ['$mb_memory', kw.mb_memory],
    ['$ncpus', kw.ncpus],
  ] as const) {
    while (s.includes(word)) {
      s = s.replace(word, String(value));
      replaced = true;
    }
  }
  if (!replaced) return s;
  if (!/[+\-*/]/.test(s) || s.includes("'")) return s;
  const eq = s.indexOf('=');
  if (eq < 0) return s;
  const value = s.slice(eq + 1);
  if (s.length >= 128 || value.length > 100) return s;
  const r = evalBcInteger(value);
  return r === null ? null : `${s.slice(0, eq + 1)}${r.toString()}`;
}

/** bc with scale=0: integers, + - * / % ^, unary minus, parentheses. Null on a syntax error. */
export function evalBcInteger(expr: string): bigint | null {
  const toks = expr.match(/\d+|[-+*/%^()]|\S/g) ?? [];
  let pos = 0;
  const peek = (): string | undefined => toks[pos];
  const primary = (): bigint | null => {
    const t = toks[pos++];
    if (t === undefined) return null;
    if (/^\d+$/.test(t)) return BigInt(t);
    if (t === '-') {
      const v = power();
      return v === null ? null : -v;
    }
    if (t === '(') {
      const v = sum();
      if (toks[pos++] !== ')') return null;
      return v;
    }
    return null;
  };
  const power = (): bigint | null => {
    const b = primary();
    if (b === null) return null;
    if (peek() === '^') {
      pos++;
      const e = power();
      if (e === null) return null;
      return e < 0n ? 0n : b ** e;
    }
    return b;
  };
  const product = (): bigint | null => {
    let v = power();
    while (v !== null && (peek() === '*' || peek() === '/' || peek() === '%')) {
      const op = toks[pos++];
      const r = power();
      if (r === null) return null;
      if ((op === '/' || op === '%') && r === 0n) return null;
      v = op === '*' ? v * r : op === '/' ? v / r : v % r;
    }
    return v;
  };
  const sum = (): bigint | null => {
    let v = product();
    while (v !== null && (peek() === '+' || peek() === '-')) {
      const op = toks[pos++];
      const r = product();
      if (r === null) return null;
      v = op === '+' ? v + r : v - r;
    }
    return v;
  };
  const v = sum();
  return v !== null && pos === toks.length ? v : null;
}
