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

/**
 * Serializes operations on overlapping ranges [start, end) while letting
 * disjoint ones run concurrently (qcow2: two writes to the same cluster must
 * not allocate it twice; writes to different clusters overlap their I/O).
 */
export class AsyncRangeLock {
  private readonly held: Array<{ start: number; end: number; done: Promise<void> }> = [];

  async withRange<T>(start: number, end: number, fn: () => Promise<T>): Promise<T> {
    for (;;) {
      const busy = this.held.find((h) => h.start < end && start < h.end);
      if (!busy) break;
      await busy.done;
    }
    let release: () => void = () => undefined;
    const entry = { start, end, done: new Promise<void>((r) => (release = r)) };
    this.held.push(entry);
    try {
      return await fn();
    } finally {
      this.held.splice(this.held.indexOf(entry), 1);
      release();
    }
  }
}
