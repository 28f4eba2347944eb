/**
 * virtio-rng-pci: the virtio entropy device (OASIS VIRTIO 1.2 §5.4) on the
 * virtio-pci transport — the model device for third-party virtio plugins:
 * properties, then realize (a VirtioCommon, a transport, a data plane,
 * handed to VirtioPciDeviceBase.start), and describe; reset, state,
 * quiesce and unrealize come from VirtioPciDeviceBase. The request path is
 * in data-plane.ts.
 *
 * Properties (QEMU spellings): `rng=` an rng object (`--object
 * rng-random,id=rng0,filename=/dev/hwrng` or `rng-builtin`, as QEMU) or,
 * tsvmm's shorthand, `filename=` the entropy source itself (/dev/urandom,
 * /dev/hwrng or any readable file); with neither, /dev/random. `max-bytes=`
 * and `period=` (ms) for QEMU's rate limit, `bus=`, `addr=`,
 * `multifunction=`.
 */
import { z } from 'zod';
import { ConfigError, defineDeviceType, devicePlugin, prop, type DeviceContext } from '@tsvmm/core';
import { pciDeviceProperties } from '@tsvmm/pci';
import { VIRTIO_ID_RNG, VirtioCommon, VirtioPciDeviceBase, VirtioPciTransport } from '@tsvmm/virtio';
import { createRngHandler, type RngInit, type RngLocal } from './data-plane.js';

/** The entropy source without rng= or filename= (the default; QEMU's is its rng-builtin). */
export const DEFAULT_SOURCE = '/dev/random';
/** QEMU's default period: 1 << 16 ms. */
export const DEFAULT_PERIOD_MS = 1 << 16;
/** QEMU's virtio-rng queue size. */
const RNG_QUEUE_SIZE = 8;

export const virtioRngProperties = z.strictObject({
  filename: prop.str().optional(),
  rng: prop.str().optional(),
  'max-bytes': prop.int(0).optional(),
  period: prop.int(1, 0xffff_ffff).default(DEFAULT_PERIOD_MS),
  ...pciDeviceProperties,
});
export type VirtioRngProperties = z.output<typeof virtioRngProperties>;

export class VirtioRngPci extends VirtioPciDeviceBase<RngInit, RngLocal> {
  readonly typeName = 'virtio-rng-pci';
  /** the entropy source, once realized */
  private sourceFile: string | undefined;

  constructor(
    id: string,
    readonly props: VirtioRngProperties,
  ) {
    super(id, 'virtio-rng');
  }

  async realize(ctx: DeviceContext): Promise<void> {
    const filename = this.source(ctx);
    this.sourceFile = filename;
    const virtio = new VirtioCommon<RngInit, RngLocal>(ctx, {
      id: this.id,
      deviceType: VIRTIO_ID_RNG,
      queueMaxSizes: [RNG_QUEUE_SIZE],
      deviceFeatures: 0n,
      // §5.4.4: the entropy device has no configuration space
      config: { size: 0, read: (_o, data) => data.fill(0) },
      dataPlane: {
        factory: createRngHandler,
        moduleUrl: new URL('./data-plane.js', import.meta.url).href,
        init: { id: this.id, filename, maxBytes: this.props['max-bytes'], periodMs: this.props.period },
      },
    });
    const pci = new VirtioPciTransport(ctx, virtio, {
      classCode: 0x00ff,
      msixVectors: 2,
      bus: this.props.bus,
      addr: this.props.addr,
      multifunction: this.props.multifunction,
    });
    await this.start(virtio, pci);
  }

  /** The entropy source: the rng object's, filename=, or the default. */
  private source(ctx: DeviceContext): string {
    const { rng, filename } = this.props;
    if (rng !== undefined && filename !== undefined) {
      throw new ConfigError(`${this.id}: rng=${rng} and filename=${filename} both name an entropy source`, {
        hint: 'give one: rng= for an --object rng-random, or filename= for the file itself',
      });
    }
    if (rng !== undefined) return ctx.rngBackend(rng).filename;
    return filename ?? DEFAULT_SOURCE;
  }

  describe(): Record<string, unknown> {
    return {
      filename: this.sourceFile ?? this.props.filename ?? DEFAULT_SOURCE,
      ...(this.props.rng !== undefined ? { rng: this.props.rng } : {}),
      ...(this.props['max-bytes'] !== undefined ? { 'max-bytes': this.props['max-bytes'], period: this.props.period } : {}),
      ...this.addr,
    };
  }
}

export const virtioRngPci = defineDeviceType({
  name: 'virtio-rng-pci',
  description: 'virtio entropy device (virtio 1.x PCI), fed from /dev/random, an rng object (rng=) or filename=, rate-limited by max-bytes/period',
  bus: 'pci',
  hotpluggable: false,
  properties: virtioRngProperties,
  idPrefix: 'rng',
  create: (id, props) => new VirtioRngPci(id, props),
});

export default devicePlugin(virtioRngPci);
