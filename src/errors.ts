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

/** What a file-system error code means, for the one line the user sees. */
const FILE_SYSTEM_ERRORS: Record<string, string> = {
  ENOSPC: 'no space left on the device',
  EROFS: 'read-only file system',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOTDIR: 'a part of the path is a file, not a folder',
  EISDIR: 'it is a folder',
  EEXIST: 'it already exists',
  ENAMETOOLONG: 'the name is too long',
  EMFILE: 'too many open files',
  EDQUOT: 'disk quota exceeded',
};

/**
 * A file-system error that reached the top level as a PainterError (one line naming the path, exit
 * 1), or undefined for anything else (a programming error, whose stack is printed).
 */
export function fileSystemError(e: unknown): PainterError | undefined {
  const err = e as NodeJS.ErrnoException | undefined;
  const why = err?.code !== undefined ? FILE_SYSTEM_ERRORS[err.code] : undefined;
  if (!why || typeof err?.path !== 'string') return undefined;
  return new PainterError(`cannot ${err.syscall ?? 'use'} ${err.path}: ${why} (${err.code})`);
}
