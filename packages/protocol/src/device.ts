/**
 * Devices of a running VM. Hot-plug itself arrives in a later protocol
 * version; `device/add` and `device/remove` already validate their input and
 * answer HotplugUnsupported naming why the bus or device cannot hot-plug.
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
    'Hot-plugs a device. The spec is validated first (device type installed, properties valid, id unused); then, in this version, the answer is HotplugUnsupported naming why the device or its bus cannot be hot-plugged. `device/added` is sent once a device has really been added.',
  since: '1.0.0',
  params: z.strictObject({ vmId: vmIdSchema, device: deviceSpecSchema }),
  result: deviceInfoSchema,
  errors: ['VmNotFound', 'InvalidVmState', 'ConfigError', 'HotplugUnsupported'],
});

export const DeviceRemove = defineRequest('device/remove', {
  doc:
    'Hot-unplugs a device. The id is checked first; then, in this version, the answer is HotplugUnsupported naming why. `device/removed` is sent once the guest has released the device, so the id can be reused safely.',
  since: '1.0.0',
  params: z.strictObject({ vmId: vmIdSchema, id: z.string().min(1) }),
  result: z.object({ id: z.string() }),
  errors: ['VmNotFound', 'InvalidVmState', 'DeviceNotFound', 'HotplugUnsupported'],
});

export const DeviceAdded = defineNotification('device/added', {
  doc: 'A device was added and is usable by the guest.',
  since: '1.0.0',
  params: z.object({ vmId: vmIdSchema, device: deviceInfoSchema }),
});

export const DeviceRemoved = defineNotification('device/removed', {
  doc: 'A device is gone; its id may be reused.',
  since: '1.0.0',
  params: z.object({ vmId: vmIdSchema, id: z.string() }),
});
