/**
 * The machine description schema lives in @tsvmm/protocol, because `vm/create`
 * takes it over the wire and clients in other languages get it from the
 * protocol's JSON Schema. The core re-exports it so `tsvmm run --config`,
 * Machine.create and the RPC server validate against the very same schema.
 */
export {
  deviceSpecSchema,
  smpSchema,
  fwCfgEntrySchema,
  machineDescriptionSchema,
  objectSpecSchema,
  driveSpecSchema,
  type DeviceSpec,
  type ObjectSpec,
  type DriveSpec,
  type MachineDescription,
} from '@tsvmm/protocol';
