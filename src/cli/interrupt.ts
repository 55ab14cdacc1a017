/**
 * Ctrl-C handling: the first SIGINT asks the running job to stop at its next safe point (after
 * a step; training saves a checkpoint); a second one exits at once.
 */
export interface InterruptFlag {
  readonly requested: boolean;
  dispose(): void;
}

export function watchInterrupt(onRequest?: () => void): InterruptFlag {
  let requested = false;
  const handler = () => {
    if (requested) process.exit(130);
    requested = true;
    onRequest?.();
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    get requested() {
      return requested;
    },
    dispose() {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}
