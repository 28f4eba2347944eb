/**
 * A bounded least-recently-used map. Used for qcow2 L2 tables and refcount
 * blocks; eviction is left to the owner (`oldest()` + `delete()`) because
 * evicting a dirty table needs an ordered, asynchronous write-back that only
 * the format knows how to do.
 */
export class LruCache<K, V> {
  private readonly map = new Map<K, V>();

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`LruCache capacity must be a positive integer, got ${capacity}`);
    }
  }

  get size(): number {
    return this.map.size;
  }

  get full(): boolean {
    return this.map.size >= this.capacity;
  }

  /** Looks up and marks most recently used. */
  get(key: K): V | undefined {
    const v = this.map.get(key);
    if (v !== undefined) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }

  /** Looks up without touching recency. */
  peek(key: K): V | undefined {
    return this.map.get(key);
  }

  has(key: K): boolean {
    return this.map.has(key);
  }

  /** Inserts as most recently used; returns the entries pushed out beyond capacity. */
  set(key: K, value: V): Array<[K, V]> {
    this.map.delete(key);
    this.map.set(key, value);
    const evicted: Array<[K, V]> = [];
    while (this.map.size > this.capacity) {
      const first = this.map.entries().next();
      if (first.done) break;
      this.map.delete(first.value[0]);
      evicted.push(first.value);
    }
    return evicted;
  }

  delete(key: K): boolean {
    return this.map.delete(key);
  }

  /** Least recently used entries first, optionally only those matching. */
  *oldest(filter?: (key: K, value: V) => boolean): IterableIterator<[K, V]> {
    for (const e of this.map.entries()) if (!filter || filter(e[0], e[1])) yield e;
  }

  entries(): IterableIterator<[K, V]> {
    return this.map.entries();
  }

  clear(): void {
    this.map.clear();
  }
}
