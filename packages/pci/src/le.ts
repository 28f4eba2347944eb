/**
 * The little-endian value of a bus access (1-8 bytes; PCI and virtio
 * registers are little-endian, PCI Local Bus 3.0 §3.2.4.3, VIRTIO 1.2 §4.1.3).
 */

/** The value the bytes of an access carry. */
export function readLe(data: Uint8Array): number {
  let v = 0;
  for (let i = data.length - 1; i >= 0; i--) v = v * 256 + (data[i] as number);
  return v;
}

/** Fills the bytes of an access with `value`. */
export function writeLe(data: Uint8Array, value: number): void {
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(value / 2 ** (8 * i)) & 0xff;
}
