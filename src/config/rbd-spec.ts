// QEMU's spelling of a Ceph RBD image (block/rbd.c, qemu_rbd_parse_filename), parsed without I/O:
//
//   rbd:POOL/[NAMESPACE/]IMAGE[@SNAP][:id=NAME][:conf=PATH][:KEY=VALUE...]
//
// A backslash takes the next character literally (QEMU's escape for ':', '/', '@' in names).
// `id` is the cephx user without "client." (QEMU's id=), `conf` a ceph.conf to read instead of
// the default search. Other keys are Ceph configuration options that QEMU also passes through to
// rados_conf_set; only the ones listed in RBD_CONF_KEYS are taken here, so a typo fails at parse
// time rather than as a cluster's "unrecognized option". Secrets (QEMU's key=) are refused: a spec
// is shown by xenstore and `ps`; a keyring file holds them instead.

export interface RbdStoreSpec {
  readonly kind: 'rbd';
  readonly pool: string;
  /** RADOS namespace inside the pool ('' for the default one). */
  readonly namespace: string;
  readonly image: string;
  /** A snapshot: the image opens read-only at that snapshot. */
  readonly snapshot: string | undefined;
  /** cephx user without the "client." prefix; undefined: librados' default (admin). */
  readonly id: string | undefined;
  /** ceph.conf to read; undefined: librados' default search ($CEPH_CONF, /etc/ceph/ceph.conf, ...). */
  readonly conf: string | undefined;
  /** Further Ceph options, applied after the conf file, in the order given. */
  readonly options: readonly (readonly [string, string])[];
}

/** Ceph options a spec may set (QEMU passes any; these are the ones a disk spec has cause to). */
export const RBD_CONF_KEYS: readonly string[] = [
  'mon_host',
  'keyring',
  'client_mount_timeout',
  'rados_mon_op_timeout',
  'rados_osd_op_timeout',
  'rbd_cache',
  'rbd_cache_policy',
  'auth_client_required',
  'auth_supported',
];

/** Splits at unescaped `sep`s, removing the escapes; `\` at the very end is an error. */
function splitEscaped(text: string, seps: string, fail: (why: string) => never): { parts: string[]; seps: string[] } {
  const parts: string[] = [];
  const found: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '\\') {
      if (i + 1 >= text.length) fail('a trailing backslash escapes nothing');
      cur += text[++i];
    } else if (seps.includes(c)) {
      parts.push(cur);
      found.push(c);
      cur = '';
    } else cur += c;
  }
  parts.push(cur);
  return { parts, seps: found };
}

/** `body` is the spec after "rbd:"; `fail` throws the caller's error naming the whole spec. */
export function parseRbdSpec(body: string, fail: (why: string) => never): RbdStoreSpec {
  const usage = 'expected rbd:POOL/IMAGE[@SNAP][:id=NAME][:conf=PATH]';
  const fields = splitEscaped(body, ':', fail).parts;
  // Re-split the first field for '/' and '@' honouring escapes: work on the raw text up to the first unescaped ':'.
  const rawHead = rawFirstField(body);
  const { parts: names, seps } = splitEscaped(rawHead, '/@', fail);
  const at = seps.indexOf('@');
  if (at >= 0 && at !== seps.length - 1) return fail(`the snapshot name comes last (${usage})`);
  if (seps.filter((s) => s === '@').length > 1) return fail(`more than one '@' (${usage})`);
  const slashes = at < 0 ? seps.length : at;
  if (slashes < 1) return fail(`no pool (${usage})`);
  if (slashes > 2) return fail(`too many '/' (POOL/IMAGE or POOL/NAMESPACE/IMAGE; escape a '/' in a name as \\/)`);
  const pool = names[0]!;
  const namespace = slashes === 2 ? names[1]! : '';
  const image = names[slashes]!;
  const snapshot = at < 0 ? undefined : names[slashes + 1]!;
  if (pool === '') return fail(`empty pool name (${usage})`);
  if (image === '') return fail(`empty image name (${usage})`);
  if (slashes === 2 && namespace === '') return fail('empty namespace name');
  if (snapshot === '') return fail("empty snapshot name after '@'");
  let id: string | undefined;
  let conf: string | undefined;
  const options: [string, string][] = [];
  for (const field of fields.slice(1)) {
    const eq = field.indexOf('=');
    if (eq <= 0) return fail(`option '${field}' is not KEY=VALUE`);
    const key = field.slice(0, eq);
    const value = field.slice(eq + 1);
    if (value === '') return fail(`${key}= needs a value`);
    if (key === 'id') {
      if (value.startsWith('client.')) return fail(`id=${value}: give the user without "client." (id=${value.slice(7)}), as QEMU does`);
      id = value;
    } else if (key === 'conf') conf = value;
    else if (key === 'key') return fail('key= would put a secret where xenstore and ps show it; name a keyring file with keyring=PATH');
    else if (RBD_CONF_KEYS.includes(key)) options.push([key, value]);
    else return fail(`unknown option '${key}' (expected id, conf, ${RBD_CONF_KEYS.join(', ')})`);
  }
  return { kind: 'rbd', pool, namespace, image, snapshot, id, conf, options };
}

function rawFirstField(body: string): string {
  for (let i = 0; i < body.length; i++) {
    if (body[i] === '\\') i++;
    else if (body[i] === ':') return body.slice(0, i);
  }
  return body;
}

/** How the image is named in messages: "pool/image@snap" (namespace included when there is one). */
export function rbdImageName(s: RbdStoreSpec): string {
  return `${s.pool}/${s.namespace === '' ? '' : `${s.namespace}/`}${s.image}${s.snapshot === undefined ? '' : `@${s.snapshot}`}`;
}
