/**
 * The table of every message in the protocol, in documentation order. The
 * server dispatches and validates from it, `tsvmm protocol schema` and
 * docs/protocol.md are generated from it, and the Python client's method
 * table is checked against it.
 */
import { ConsoleOutput, ConsoleWrite } from './console.js';
import { CpuListModels, MachineListTypes, PluginList } from './catalog.js';
import type { AnyMessageDefinition } from './define.js';
import { DeviceAdd, DeviceAdded, DeviceList, DeviceRemove, DeviceRemoved } from './device.js';
import { HostCapabilitiesRequest } from './host.js';
import { MigrationCancel, MigrationSaveToFile, MigrationSetParameters, MigrationStart, MigrationStatusRequest } from './migration.js';
import { CancelRequest, Exit, Initialize, Initialized, LogMessage, Progress, Shutdown } from './lifecycle.js';
import { VmCreate, VmDestroy, VmList, VmPause, VmReset, VmResume, VmShutdown, VmStart, VmStateChanged, VmStatusRequest } from './vm.js';

export interface FeatureArea {
  name: string;
  doc: string;
  messages: AnyMessageDefinition[];
}

export const featureAreas: FeatureArea[] = [
  {
    name: 'Lifecycle and base protocol',
    doc: 'As in LSP: `initialize`, `initialized`, requests, `shutdown`, `exit`; `$/cancelRequest` and `$/progress` work as LSP specifies.',
    messages: [Initialize, Initialized, Shutdown, Exit, CancelRequest, Progress, LogMessage],
  },
  {
    name: 'Virtual machines',
    doc: 'Create, run and stop VMs. Every VM runs in its own process.',
    messages: [VmCreate, VmStart, VmPause, VmResume, VmReset, VmShutdown, VmDestroy, VmList, VmStatusRequest, VmStateChanged],
  },
  {
    name: 'Devices',
    doc: 'List devices; hot-plug requests (validated, refused with the reason until hot-plug lands).',
    messages: [DeviceList, DeviceAdd, DeviceRemove, DeviceAdded, DeviceRemoved],
  },
  {
    name: 'Console',
    doc: 'Serial console input and output.',
    messages: [ConsoleWrite, ConsoleOutput],
  },
  {
    name: 'Migration',
    doc: 'Live migration and snapshot files: a destination is a VM created with `description.incoming`; the source runs `migration/start` (see docs/migration.md).',
    messages: [MigrationStart, MigrationSaveToFile, MigrationCancel, MigrationSetParameters, MigrationStatusRequest],
  },
  {
    name: 'Host and plugins',
    doc: 'What this host, build and the installed plugins provide.',
    messages: [HostCapabilitiesRequest, PluginList, MachineListTypes, CpuListModels],
  },
];

export const allMessages: AnyMessageDefinition[] = featureAreas.flatMap((a) => a.messages);

/** Requests the server handles, by method. */
export const serverRequests: ReadonlyMap<string, AnyMessageDefinition> = new Map(
  allMessages.filter((m) => m.kind === 'request' && m.direction === 'clientToServer').map((m) => [m.method, m]),
);

/** Notifications the server sends, by method. */
export const serverNotifications: readonly string[] = allMessages
  .filter((m) => m.kind === 'notification' && m.direction === 'serverToClient')
  .map((m) => m.method);
