/**
 * The private channel between the RPC server and one VM process: JSON-RPC
 * (vscode-jsonrpc) over the child_process IPC channel. It is not part of the
 * public protocol and may change with every release, since both ends ship in
 * the same `tsvmm` package; the public shapes it reuses come from
 * @tsvmm/protocol.
 */
import type { DeviceInfo, DeviceSpec, MachineDescription, MigrationParametersInput, MigrationStatusResult, StateReason, VmState } from '@tsvmm/protocol';
import { NotificationType, ParameterStructures, RequestType, RequestType0 } from 'vscode-jsonrpc';

export interface VmProcessStatus {
  state: VmState;
  reason?: StateReason;
  detail?: string;
  machineType: string;
  vcpus: number;
  memory: { bytes: number; belowFourGiB: number; aboveFourGiB: number };
  devices: DeviceInfo[];
  uptimeMs: number;
  kernel?: string;
  ports: string[];
  exitStatus?: number;
}

export interface VmProcessStateChange {
  from: VmState;
  to: VmState;
  reason: StateReason;
  detail: string;
  exitStatus?: number;
}

const byName = ParameterStructures.byName;

export const ChildCreate = new RequestType<{ description: MachineDescription }, VmProcessStatus, unknown>('vmp/create', byName);
export const ChildStart = new RequestType0<{ state: VmState }, unknown>('vmp/start');
export const ChildPause = new RequestType0<{ state: VmState }, unknown>('vmp/pause');
export const ChildResume = new RequestType0<{ state: VmState }, unknown>('vmp/resume');
export const ChildReset = new RequestType0<{ state: VmState }, unknown>('vmp/reset');
export const ChildShutdown = new RequestType0<{ state: VmState }, unknown>('vmp/shutdown');
export const ChildStatus = new RequestType0<VmProcessStatus, unknown>('vmp/status');
export const ChildDeviceAdd = new RequestType<{ device: DeviceSpec }, DeviceInfo, unknown>('vmp/deviceAdd', byName);
export const ChildDeviceRemove = new RequestType<{ id: string }, { id: string }, unknown>('vmp/deviceRemove', byName);
export const ChildConsoleWrite = new RequestType<{ port: string; data: string }, { written: number }, unknown>('vmp/consoleWrite', byName);

/** migration/start and migration/saveToFile (`snapshot`: a file; resume the VM afterwards or not) */
export const ChildMigrationStart = new RequestType<
  { uri: string; parameters?: MigrationParametersInput; snapshot?: { resume: boolean } },
  MigrationStatusResult,
  unknown
>('vmp/migrationStart', byName);
export const ChildMigrationCancel = new RequestType0<{ status: MigrationStatusResult['status'] }, unknown>('vmp/migrationCancel');
export const ChildMigrationSetParameters = new RequestType<
  { parameters: MigrationParametersInput },
  { strategy: string; maxDowntimeMs: number; maxBandwidth: number; xbzrleCacheSize: number; maxIterations: number },
  unknown
>('vmp/migrationSetParameters', byName);
export const ChildMigrationStatus = new RequestType0<MigrationStatusResult, unknown>('vmp/migrationStatus');

export const ChildStateChanged = new NotificationType<VmProcessStateChange>('vmp/stateChanged', byName);
/** a device was cold-plugged (sent before the response of the vmp/deviceAdd that did it) */
export const ChildDeviceAdded = new NotificationType<{ device: DeviceInfo }>('vmp/deviceAdded', byName);
/** a device was cold-unplugged (sent before the response of the vmp/deviceRemove that did it) */
export const ChildDeviceRemoved = new NotificationType<{ id: string }>('vmp/deviceRemoved', byName);
/** the migration's statistics, at most every 200 ms while it runs */
export const ChildMigrationProgress = new NotificationType<{ status: MigrationStatusResult }>('vmp/migrationProgress', byName);
/** data is base64 */
export const ChildConsoleOutput = new NotificationType<{ port: string; data: string }>('vmp/consoleOutput', byName);
export const ChildLog = new NotificationType<{ level: 'trace' | 'debug' | 'info' | 'warn' | 'error'; message: string; fields: Record<string, unknown>; causes?: string[] }>(
  'vmp/log',
  byName,
);
export const ChildProgress = new NotificationType<{ message: string; percentage: number }>('vmp/progress', byName);

/** Environment variable selecting the test-mode fake accelerator in the VM process. */
export const FAKE_ACCELERATOR_ENV = 'TSVMM_TEST_ACCELERATOR';
