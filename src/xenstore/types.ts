// The xenstore client as its users see it (the hypervisor layer hands one to each backend and
// guest). It lives here, not in src/hypervisor, so xenstore never imports the layer that uses it.

/** Perms as xenstored prints them: 'n' none, 'r' read, 'w' write, 'b' both; the first entry's domid is the owner. */
export interface XsPermission {
  readonly domid: number;
  readonly perm: 'n' | 'r' | 'w' | 'b';
}

export type XsWatchCallback = (path: string, token: string) => void;

/** A xenstore connection that speaks for one domain. Errors reject with XenstoreError (code = 'ENOENT', 'EACCES', 'EAGAIN', ...). */
export interface XenstoreClient {
  readonly domid: number;
  read(path: string, tx?: number): Promise<string>;
  /** read() that resolves undefined instead of rejecting with ENOENT. */
  tryRead(path: string, tx?: number): Promise<string | undefined>;
  write(path: string, value: string, tx?: number): Promise<void>;
  mkdir(path: string, tx?: number): Promise<void>;
  rm(path: string, tx?: number): Promise<void>;
  directory(path: string, tx?: number): Promise<string[]>;
  getPerms(path: string, tx?: number): Promise<XsPermission[]>;
  setPerms(path: string, perms: readonly XsPermission[], tx?: number): Promise<void>;
  /** Registers a watch; the callback fires once at once (xenstored's initial event) and on every change at or below path. */
  watch(path: string, token: string, callback: XsWatchCallback): Promise<void>;
  unwatch(path: string, token: string): Promise<void>;
  transactionStart(): Promise<number>;
  /** Rejects with code 'EAGAIN' when a commit conflicts. */
  transactionEnd(tx: number, commit: boolean): Promise<void>;
  /** Runs fn in a transaction, retrying on EAGAIN (bounded). */
  transaction<T>(fn: (tx: number) => Promise<T>): Promise<T>;
  close(): void;
}
