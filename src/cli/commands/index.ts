import type { Command } from '../command.ts';
import { benchCommand } from './bench.ts';
import { ctlCommand } from './ctl.ts';
import { fioCommand } from './fio.ts';
import { fuzzCommand } from './fuzz.ts';
import { iscsiTargetCommand } from './iscsi-target.ts';
import { nbdServerCommand } from './nbd-server.ts';
import { reproduceCommand } from './reproduce.ts';
import { runCommand } from './run.ts';
import { serveCommand } from './serve.ts';
import { xenstoredCommand } from './xenstored.ts';

export const commands: readonly Command[] = [
  reproduceCommand,
  fioCommand,
  runCommand,
  serveCommand,
  iscsiTargetCommand,
  nbdServerCommand,
  ctlCommand,
  benchCommand,
  xenstoredCommand,
  fuzzCommand,
];
