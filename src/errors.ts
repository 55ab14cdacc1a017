/**
 * Errors that painter reports to the user as one line (exit 1), as opposed to
 * programming errors, whose stack the CLI prints.
 */
export class PainterError extends Error {
  /** Process exit code the CLI maps this error to (STYLE.md: 1 user/config error). */
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = 'PainterError';
    this.exitCode = exitCode;
  }
}

/** Bad command-line usage (exit 2). */
export class UsageError extends PainterError {
  constructor(message: string) {
    super(message, 2);
    this.name = 'UsageError';
  }
}

/** The user interrupted a run (exit 130) after painter saved what it could. */
export class InterruptedError extends PainterError {
  constructor(message: string) {
    super(message, 130);
    this.name = 'InterruptedError';
  }
}

export function isPainterError(e: unknown): e is PainterError {
  return e instanceof PainterError;
}
