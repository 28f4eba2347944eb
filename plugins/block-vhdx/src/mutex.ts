/**
 * A FIFO async mutex: metadata updates (block allocation, bitmap bits, the
 * flush write-back) run one at a time while plain data I/O stays concurrent.
 * (Private copy; a shared one in @tsvmm/block would replace it.)
 */
export class AsyncMutex {
  private tail: Promise<void> = Promise.resolve();

  async run<T>(fn: () => Promise<T>): Promise<T> {
    let release: () => void = () => undefined;
    const next = new Promise<void>((r) => (release = r));
    const prev = this.tail;
    this.tail = prev.then(() => next);
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
