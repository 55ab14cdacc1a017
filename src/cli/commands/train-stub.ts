import { PainterError } from '../../errors.js';

/** Commands whose issue has not landed say so plainly: no fake success. */
export function notYet(command: string, issue: number): never {
  throw new PainterError(`painter ${command} is not implemented yet (tracked in issue #${issue}); nothing was done`);
}
