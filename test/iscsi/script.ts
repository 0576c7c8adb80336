// The command-line entry of the scripts in this folder (conformance.ts, capture.ts): modules the
// tests import too, so they run their main() only when node was started on them.
import { pathToFileURL } from 'node:url';

/**
 * Runs `main` with the command line when `moduleUrl` (the caller's import.meta.url) is the script
 * node was started with. Its answer is the exit code; a throw prints "<name>: <message>" and exits 2.
 */
export function runIfScript(moduleUrl: string, name: string, main: (argv: string[]) => Promise<number>): void {
  const script = process.argv[1];
  if (script === undefined || moduleUrl !== pathToFileURL(script).href) return;
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`${name}: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 2;
    },
  );
}
