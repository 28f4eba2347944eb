/**
 * GUIDs as [MS-VHDX] stores them ([MS-DTYP] GUID): Data1 (u32), Data2 (u16)
 * and Data3 (u16) little-endian, Data4 as 8 bytes in order. Held as the 16
 * on-disk bytes; converted to and from the registry string form.
 */
import { randomBytes } from 'node:crypto';

export type Guid = Uint8Array;

export function guidFromString(s: string): Guid {
  const hex = s.replace(/[{}-]/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new RangeError(`'${s}' is not a GUID`);
  const b = Buffer.from(hex, 'hex');
  const out = new Uint8Array(16);
  // Data1..Data3 are little-endian on disk
  out.set([b[3] ?? 0, b[2] ?? 0, b[1] ?? 0, b[0] ?? 0, b[5] ?? 0, b[4] ?? 0, b[7] ?? 0, b[6] ?? 0], 0);
  out.set(b.subarray(8, 16), 8);
  return out;
}

export function guidToString(g: Guid): string {
  const h = (i: number): string => (g[i] ?? 0).toString(16).padStart(2, '0');
  return (
    h(3) + h(2) + h(1) + h(0) + '-' + h(5) + h(4) + '-' + h(7) + h(6) + '-' + h(8) + h(9) + '-' +
    h(10) + h(11) + h(12) + h(13) + h(14) + h(15)
  );
}

export function guidEquals(a: Guid, b: Guid): boolean {
  if (a.length !== 16 || b.length !== 16) return false;
  for (let i = 0; i < 16; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function guidIsZero(g: Guid): boolean {
  return g.every((x) => x === 0);
}

/** A random (version 4, RFC 4122 variant) GUID. */
export function newGuid(): Guid {
  const b = new Uint8Array(randomBytes(16));
  // Data3 high nibble = 4 (it is byte 7 on disk, little-endian u16)
  b[7] = ((b[7] ?? 0) & 0x0f) | 0x40;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  return b;
}

export const ZERO_GUID: Guid = new Uint8Array(16);
