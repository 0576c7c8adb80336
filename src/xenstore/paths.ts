// Path rules of docs/misc/xenstore.txt: absolute paths start with '/', relative ones are taken
// below /local/domain/<domid>; characters are alphanumerics and -/_@; no doubled or trailing
// slash (except the root); at most XENSTORE_ABS_PATH_MAX bytes.

import { XENSTORE_ABS_PATH_MAX, XENSTORE_REL_PATH_MAX } from './constants.ts';

const VALID = /^[A-Za-z0-9\-/_@]+$/;

export function domainPath(domid: number): string {
  return `/local/domain/${domid}`;
}

/** The absolute form of a client-supplied path, or undefined when the path is not valid. */
export function resolvePath(path: string, domid: number): string | undefined {
  if (path.length === 0) return undefined;
  let abs = path;
  if (!path.startsWith('/')) {
    if (path.length > XENSTORE_REL_PATH_MAX) return undefined;
    abs = `${domainPath(domid)}/${path}`;
  }
  if (abs.length > XENSTORE_ABS_PATH_MAX || !VALID.test(abs)) return undefined;
  if (abs !== '/' && (abs.endsWith('/') || abs.includes('//'))) return undefined;
  return abs;
}

/** True when `child` is `parent` or lies below it (the spec's "child" relation). */
export function isChildOf(child: string, parent: string): boolean {
  if (parent === '/') return child.startsWith('/');
  return child === parent || (child.startsWith(parent) && child.charCodeAt(parent.length) === 0x2f);
}

export function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

export function segments(path: string): string[] {
  return path === '/' ? [] : path.slice(1).split('/');
}
