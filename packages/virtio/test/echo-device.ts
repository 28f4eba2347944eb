/**
 * A minimal virtio device for transport tests: one or more queues whose
 * requests are a device-readable part followed by a device-writable part;
 * the device copies the readable bytes into the writable ones (direction
 * checked by the device, as the queue contract says).
 */
import type { DeviceContext } from '@tsvmm/core';
import { ChainLayoutError, RequestBuffers } from '../src/chain.js';
import { VirtioCommon } from '../src/common.js';
import { VirtioDeviceError, type RequestHandlerFactory } from '../src/data-plane.js';
import { VirtioPciTransport } from '../src/pci-transport.js';

export const ECHO_DEVICE_TYPE = 0x3f;

export interface EchoInit {
  /** complete requests after this many macrotasks instead of at once */
  delayTurns: number;
}

export const createEchoHandler: RequestHandlerFactory<EchoInit> = async (init, env) => ({
  info: { opened: true },
  handler: {
    handle(chain) {
      const req = RequestBuffers.from(chain);
      if (req instanceof ChainLayoutError) throw new VirtioDeviceError(req.message);
      if (req.readableBytes === 0 || req.writableBytes === 0) throw new VirtioDeviceError(`chain ${chain.head}: an echo request needs readable and writable buffers`);
      const n = Math.min(req.readableBytes, req.writableBytes);
      const copy = (): number => {
        const tmp = new Uint8Array(n);
        req.read(env.memory, 0, tmp);
        req.write(env.memory, 0, tmp);
        return n;
      };
      if (init.delayTurns === 0) return copy();
      return new Promise<number>((resolve) => {
        let left = init.delayTurns;
        const step = (): void => {
          if (--left <= 0) resolve(copy());
          else setImmediate(step);
        };
        setImmediate(step);
      });
    },
  },
});

export class EchoDevice {
  readonly virtio: VirtioCommon<EchoInit>;
  readonly transport: VirtioPciTransport<EchoInit>;

  private constructor(ctx: DeviceContext, id: string, queues: number, init: EchoInit) {
    this.virtio = new VirtioCommon<EchoInit>(ctx, {
      id,
      deviceType: ECHO_DEVICE_TYPE,
      queueMaxSizes: Array.from({ length: queues }, () => 16),
      deviceFeatures: 1n << 3n,
      config: {
        size: 8,
        read: (offset, data) => {
          const cfg = new Uint8Array([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
          data.set(cfg.subarray(offset, offset + data.length));
        },
      },
      dataPlane: { factory: createEchoHandler, moduleUrl: 'unused:', init },
    });
    this.transport = new VirtioPciTransport(ctx, this.virtio, { classCode: 0x00ff, msixVectors: queues + 1 });
  }

  static async create(ctx: DeviceContext, opts: { id?: string; queues?: number; delayTurns?: number } = {}): Promise<EchoDevice> {
    const d = new EchoDevice(ctx, opts.id ?? 'echo0', opts.queues ?? 1, { delayTurns: opts.delayTurns ?? 0 });
    await d.virtio.start(d.transport);
    d.transport.attach();
    return d;
  }

  reset(): void {
    this.transport.reset();
    this.virtio.reset();
  }

  async close(): Promise<void> {
    this.transport.release();
    await this.virtio.close();
  }
}
