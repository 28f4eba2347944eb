/**
 * An async readers-writer lock: many shared holders or one exclusive holder,
 * granted in arrival order so a stream of readers cannot starve a writer.
 * Formats with metadata (qcow2) take it shared for lookups and exclusive for
 * anything that allocates, frees or rewrites tables.
 */
export class AsyncRwLock {
  private shared = 0;
  private exclusive = false;
  private readonly queue: Array<{ exclusive: boolean; grant: () => void }> = [];

  async withShared<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire(false);
    try {
      return await fn();
    } finally {
      this.release(false);
    }
  }

  async withExclusive<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire(true);
    try {
      return await fn();
    } finally {
      this.release(true);
    }
  }

  private canGrant(exclusive: boolean): boolean {
    return exclusive ? !this.exclusive && this.shared === 0 : !this.exclusive;
  }

  private acquire(exclusive: boolean): Promise<void> {
    if (this.queue.length === 0 && this.canGrant(exclusive)) {
      this.take(exclusive);
      return Promise.resolve();
    }
    return new Promise((resolve) => this.queue.push({ exclusive, grant: resolve }));
  }

  private take(exclusive: boolean): void {
    if (exclusive) this.exclusive = true;
    else this.shared++;
  }

  private release(exclusive: boolean): void {
    if (exclusive) this.exclusive = false;
    else this.shared--;
    while (this.queue.length > 0) {
      const next = this.queue[0];
      if (!next || !this.canGrant(next.exclusive)) break;
      this.queue.shift();
      this.take(next.exclusive);
      next.grant();
    }
  }
}
