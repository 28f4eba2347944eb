/**
 * The machine description: one JSON shape for `tsvmm run --config FILE`, the
 * command-line options (which are translated into it) and the RPC `vm/create`.
 */
import { z } from 'zod';

export const deviceSpecSchema = z
  .looseObject({
    driver: z.string().min(1),
    id: z.string().regex(/^[A-Za-z][A-Za-z0-9_.-]*$/, { error: 'must start with a letter and use letters, digits, _ . -' }).optional(),
  })
  .describe('a device: its driver (type name), optional id, and the driver\'s properties');

export const smpSchema = z.union([
  z.number().int().min(1),
  z.strictObject({
    cpus: z.number().int().min(1),
    sockets: z.number().int().min(1).optional(),
    cores: z.number().int().min(1).optional(),
    threads: z.number().int().min(1).optional(),
    maxcpus: z.number().int().min(1).optional(),
  }),
]);

export const fwCfgEntrySchema = z.union([
  z.strictObject({ name: z.string().min(1), string: z.string() }),
  z.strictObject({ name: z.string().min(1), file: z.string().min(1) }),
]);

const idSchema = z.string().regex(/^[A-Za-z][A-Za-z0-9_.-]*$/, { error: 'must start with a letter and use letters, digits, _ . -' });

/** `--object iothread,id=io0`: a dedicated thread for devices' data planes. */
export const objectSpecSchema = z
  .discriminatedUnion(
    'qom-type',
    [
      z
        .strictObject({
          'qom-type': z.literal('iothread'),
          id: idSchema,
          'poll-max-ns': z.union([z.number().int().min(0), z.string()]).optional(),
        })
        .describe("an iothread that runs devices' queue processing (QEMU's -object iothread,id=...)"),
      z
        .strictObject({
          'qom-type': z.literal('rng-random'),
          id: idSchema,
          filename: z.string().min(1).optional().describe('the entropy source; default /dev/urandom, as QEMU'),
        })
        .describe("an entropy source read from a file or device, for virtio-rng-pci's rng= (QEMU's -object rng-random,id=...,filename=...)"),
      z
        .strictObject({ 'qom-type': z.literal('rng-builtin'), id: idSchema })
        .describe("the host's own random number generator (/dev/urandom), for virtio-rng-pci's rng= (QEMU's -object rng-builtin,id=...)"),
    ],
    { error: "unknown object type: the supported ones are 'iothread', 'rng-random' and 'rng-builtin'" },
  )
  .describe('an object: an iothread, or an entropy source for virtio-rng-pci (rng-random, rng-builtin)');

/** `--drive file=PATH,format=raw,if=virtio,...`: a block backend, attached to a device by id. */
export const driveSpecSchema = z
  .looseObject({
    id: idSchema.optional(),
    file: z.string().min(1),
    format: z.string().optional(),
    if: z.enum(['virtio', 'none'], { error: "if= must be 'virtio' or 'none'" }).optional(),
  })
  .describe('a drive: image file and format, interface (virtio adds a virtio-blk-pci device; none only defines it), and backend options such as readonly=on, discard=unmap, iothread=ID');

export const machineDescriptionSchema = z.strictObject({
  name: z.string().optional().describe('a name for the VM'),
  machine: z.string().optional().describe('machine type, e.g. pc-i440fx-rhel7.0.0 (default) or pc'),
  cpu: z.string().optional().describe('CPU model with optional +feat/-feat modifiers'),
  smp: smpSchema.optional(),
  memory: z.union([z.string(), z.number().int().positive()]).optional().describe('RAM size: bytes, or a string such as 128M (bare numbers in strings are MiB)'),
  kernel: z.string().optional(),
  append: z.string().optional(),
  initrd: z.string().optional(),
  devices: z.array(deviceSpecSchema).optional(),
  serial: z.array(z.string()).optional().describe('backends for COM1, COM2...: stdio, null, none, file:PATH'),
  noReboot: z.boolean().optional().describe('stop instead of resetting on a guest reset or triple fault'),
  fwCfg: z.array(fwCfgEntrySchema).optional(),
  plugins: z.array(z.string()).optional().describe('plugin package directories to load in addition to installed ones'),
  objects: z.array(objectSpecSchema).optional(),
  drives: z.array(driveSpecSchema).optional(),
  incoming: z
    .string()
    .regex(/^(tcp:.+:\d{1,5}|unix:.+|file:.+)$/, { error: 'expected tcp:HOST:PORT, unix:PATH or file:PATH' })
    .optional()
    .describe('the VM\'s state comes from a migration stream (QEMU -incoming): listen at tcp:HOST:PORT or unix:PATH, or read file:PATH; it starts by itself once the stream is loaded'),
});

export type DeviceSpec = z.infer<typeof deviceSpecSchema>;
export type ObjectSpec = z.infer<typeof objectSpecSchema>;
export type DriveSpec = z.infer<typeof driveSpecSchema>;
export type MachineDescription = z.infer<typeof machineDescriptionSchema>;
