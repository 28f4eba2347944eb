/**
 * The virtio-rng request path (OASIS VIRTIO 1.2 §5.4 "Entropy Device"):
 * every chain on the requestq is device-writable buffers that the device
 * fills with bytes read from its backend file.
 *
 * - The backend is read asynchronously (libuv's thread pool), so a source
 *   that blocks — /dev/random before the pool is seeded, a hardware RNG such
 *   as /dev/hwrng — never blocks the thread the queue runs on.
 * - Rate limit, as QEMU's virtio-rng (hw/virtio/virtio-rng.c): at most
 *   `maxBytes` per `periodMs`. A period starts when a request is served and
 *   no period is running; when it ends the quota is full again. A request
 *   gets min(its buffer space, the quota left) bytes; with no quota left it
 *   waits for the next period. Requests are served in order.
 * - A chain with a device-readable buffer breaks §5.4.6.1 ("the driver MUST
 *   NOT place driver-readable buffers"): the device needs a reset.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { ChainLayoutError, RequestBuffers, VirtioDeviceError, iothreadEntry, type DataPlaneEnv, type DescriptorChain, type RequestHandler, type RequestHandlerFactory } from '@tsvmm/virtio';

export interface RngInit {
  /** device id, for messages */
  id: string;
  /** the entropy source */
  filename: string;
  /** bytes per period; undefined: unlimited */
  maxBytes: number | undefined;
  /** period in milliseconds */
  periodMs: number;
}

/** Timers, replaceable in tests. */
export interface RngTimers {
  start(ms: number, cb: () => void): () => void;
}

const hostTimers: RngTimers = {
  start(ms, cb) {
    const t = setTimeout(cb, ms);
    // A waiting rate limit must not keep the VMM alive.
    t.unref();
    return () => clearTimeout(t);
  },
};

class RequestCancelled extends Error {
  constructor() {
    super('request dropped by a device reset');
  }
}

interface Waiting {
  req: RequestBuffers;
  resolve: (len: number) => void;
  reject: (err: Error) => void;
}

export class RngRequestHandler implements RequestHandler {
  private readonly queue: Waiting[] = [];
  private quota: number;
  private stopPeriod: (() => void) | undefined;
  private busy = false;
  private warnedEmpty = false;

  constructor(
    private readonly init: RngInit,
    private readonly env: DataPlaneEnv,
    private readonly file: FileHandle,
    private readonly timers: RngTimers,
  ) {
    this.quota = init.maxBytes ?? Number.POSITIVE_INFINITY;
  }

  handle(chain: DescriptorChain): Promise<number> {
    const req = RequestBuffers.from(chain);
    if (req instanceof ChainLayoutError) throw new VirtioDeviceError(req.message);
    if (req.readableBytes > 0) {
      throw new VirtioDeviceError(`${this.init.id}: chain ${chain.head} has device-readable buffers; an entropy request is device-writable only`);
    }
    return new Promise<number>((resolve, reject) => {
      this.queue.push({ req, resolve, reject });
      this.pump();
    });
  }

  /** Serves waiting requests in order while there is quota; one backend read at a time. */
  private pump(): void {
    if (this.busy) return;
    const next = this.queue[0];
    if (next === undefined) return;
    if (this.init.maxBytes !== undefined && this.stopPeriod === undefined) {
      this.stopPeriod = this.timers.start(this.init.periodMs, () => this.periodEnded());
    }
    const want = Math.min(next.req.writableBytes, this.quota);
    if (want === 0 && next.req.writableBytes > 0) return; // wait for the next period
    this.queue.shift();
    this.busy = true;
    this.quota -= want;
    this.fill(next.req, want).then(
      (n) => {
        this.busy = false;
        next.resolve(n);
        this.pump();
      },
      (err: unknown) => {
        this.busy = false;
        next.reject(err instanceof Error ? err : new Error(String(err)));
        this.pump();
      },
    );
  }

  private periodEnded(): void {
    this.stopPeriod = undefined;
    this.quota = this.init.maxBytes ?? Number.POSITIVE_INFINITY;
    this.pump();
  }

  private async fill(req: RequestBuffers, want: number): Promise<number> {
    if (want === 0) return 0;
    const bytes = new Uint8Array(want);
    let got: number;
    try {
      ({ bytesRead: got } = await this.file.read(bytes, 0, want, null));
    } catch (err) {
      // The backend failing is not the guest's fault: answer with no bytes (§5.4.6.2 lets the device use less than the buffer).
      this.env.warn(`reading ${this.init.filename} failed: ${(err as Error).message}`);
      return 0;
    }
    if (got === 0 && !this.warnedEmpty) {
      this.warnedEmpty = true;
      this.env.warn(`${this.init.filename} returned no bytes (end of file?)`);
    }
    const e = req.write(this.env.memory, 0, bytes.subarray(0, got));
    if (e !== undefined) throw new VirtioDeviceError(e.message);
    return got;
  }

  reset(): void {
    for (const w of this.queue.splice(0)) w.reject(new RequestCancelled());
    this.stopPeriod?.();
    this.stopPeriod = undefined;
    this.quota = this.init.maxBytes ?? Number.POSITIVE_INFINITY;
  }

  async close(): Promise<void> {
    this.reset();
    await this.file.close();
  }
}

/** Main-thread-only objects for the handler (tests inject timers). */
export interface RngLocal {
  timers?: RngTimers;
}

export const createRngHandler: RequestHandlerFactory<RngInit, RngLocal> = async (init, env, local) => {
  let file: FileHandle;
  try {
    file = await open(init.filename, 'r');
  } catch (err) {
    throw new Error(`${init.id}: cannot open the entropy source ${init.filename}: ${(err as Error).message}`);
  }
  return { handler: new RngRequestHandler(init, env, file, local?.timers ?? hostTimers) };
};

export default iothreadEntry(createRngHandler);
