// A subcommand: `blkback <name> ...`. `help` is printed for `blkback <name> --help`; it should teach
// (what it does, every option, an example).
export interface Command {
  readonly name: string;
  /** One line for `blkback --help`. */
  readonly summary: string;
  readonly help: string;
  /** Returns the process exit code. */
  run(argv: string[]): Promise<number>;
}
