import type { Command } from '../command.ts';
import { benchCommand } from './bench.ts';
import { runCommand } from './run.ts';
import { xenstoredCommand } from './xenstored.ts';

export const commands: readonly Command[] = [runCommand, benchCommand, xenstoredCommand];
