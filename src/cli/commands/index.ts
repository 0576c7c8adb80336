import type { Command } from '../command.ts';
import { benchCommand } from './bench.ts';
import { fioCommand } from './fio.ts';
import { reproduceCommand } from './reproduce.ts';
import { runCommand } from './run.ts';
import { xenstoredCommand } from './xenstored.ts';

export const commands: readonly Command[] = [reproduceCommand, fioCommand, runCommand, benchCommand, xenstoredCommand];
