/**
 * Devices of a VM. Since 1.2.0 `device/add` and `device/remove` cold-plug
 * PCI devices into a VM that has not run yet (between vm/create and
 * vm/start, as QEMU's device_add under -S). Hot-plug into a running guest
 * arrives in a later protocol version; until then they validate their input
 * and answer HotplugUnsupported naming why.
 */
import { z } from 'zod';
import { deviceInfoSchema, vmIdSchema, vmParamsSchema } from './common.js';
import { defineNotification, defineRequest } from './define.js';
import { deviceSpecSchema } from './machine-description.js';

export const DeviceList = defineRequest('device/list', {
  doc: 'The VM\'s devices (board devices, serial ports, user devices) with their properties.',
  since: '1.0.0',
  params: vmParamsSchema,
  result: z.object({ devices: z.array(deviceInfoSchema) }),
  errors: ['VmNotFound', 'InvalidVmState'],
});

export const DeviceAdd = defineRequest('device/add', {
  doc:
    'Adds a device. The spec is validated first (device type installed, properties valid, id unused). A PCI device added to a VM that has not run yet (state `created`, not waiting for a migration stream) is cold-plugged: realized and laid out as a boot-time device would be, `device/added` is sent, and the result describes it (since 1.2.0). Otherwise the answer is HotplugUnsupported naming why the device or its bus cannot be hot-plugged in this version.',
  since: '1.0.0',
  params: z.strictObject({ vmId: vmIdSchema, device: deviceSpecSchema }),
  result: deviceInfoSchema,
  errors: ['VmNotFound', 'InvalidVmState', 'ConfigError', 'HotplugUnsupported'],
});

export const DeviceRemove = defineRequest('device/remove', {
  doc:
    'Removes a device. The id is checked first. A PCI device of a VM that has not run yet is cold-unplugged (since 1.2.0; refused with InvalidVmState while devices sit on its bus), and `device/removed` is sent once it is gone, so the id can be reused safely. Otherwise the answer is HotplugUnsupported naming why.',
  since: '1.0.0',
  params: z.strictObject({ vmId: vmIdSchema, id: z.string().min(1) }),
  result: z.object({ id: z.string() }),
  errors: ['VmNotFound', 'InvalidVmState', 'DeviceNotFound', 'HotplugUnsupported'],
});

export const DeviceAdded = defineNotification('device/added', {
  doc: 'A device was added and is usable by the guest; sent before the response of the device/add that added it.',
  since: '1.0.0',
  params: z.object({ vmId: vmIdSchema, device: deviceInfoSchema }),
});

export const DeviceRemoved = defineNotification('device/removed', {
  doc: 'A device is gone; its id may be reused. Sent before the response of the device/remove that removed it.',
  since: '1.0.0',
  params: z.object({ vmId: vmIdSchema, id: z.string() }),
});
