// The cached images (Xen, kernel, dom0 root with the guests' base initramfs): reuse them when the
// cache key matches, else build them with images.sh. The key is the versions of the packages used
// and a hash of images.sh itself, so a new package or a changed builder rebuilds.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export const DEFAULT_CACHE = '/var/cache/blkback/xen-tcg';

export interface Images {
  readonly dir: string;
  readonly key: string;
  readonly xen: string;
  readonly vmlinuz: string;
  readonly dom0Cpio: string;
  /** Seconds spent building, 0 when the cache had them. */
  readonly buildSeconds: number;
  readonly manifest: Record<string, unknown>;
}

function imagesAt(dir: string, key: string, buildSeconds: number): Images {
  return {
    dir,
    key,
    xen: join(dir, 'xen'),
    vmlinuz: join(dir, 'vmlinuz'),
    dom0Cpio: join(dir, 'dom0.cpio'),
    buildSeconds,
    manifest: JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Record<string, unknown>,
  };
}

export async function ensureImages(script: string, cacheDir: string, log: (line: string) => void): Promise<Images> {
  const key = execFileSync('bash', [script, 'key'], { encoding: 'utf8' }).trim();
  const dir = join(cacheDir, key);
  if (existsSync(join(dir, 'manifest.json'))) return imagesAt(dir, key, 0);

  mkdirSync(cacheDir, { recursive: true });
  const partial = `${dir}.partial-${process.pid}`;
  rmSync(partial, { recursive: true, force: true });
  log(`images: no cache for key ${key} in ${cacheDir}: building (about 2-5 minutes)`);
  const started = Date.now();
  const child = spawn('bash', [script, 'build', partial], { stdio: ['ignore', 'pipe', 'pipe'] });
  const relay = (chunk: Buffer): void => {
    for (const line of chunk.toString().split('\n')) if (line.startsWith('images:')) log(line);
  };
  child.stdout.on('data', relay);
  child.stderr.on('data', relay);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  if (code !== 0) {
    rmSync(partial, { recursive: true, force: true });
    throw new Error(`images: ${script} build failed (exit ${code})`);
  }
  renameSync(partial, dir);
  return imagesAt(dir, key, (Date.now() - started) / 1000);
}
