/**
 * pci-bridge: QEMU's standard PCI-to-PCI bridge (hw/pci-bridge/
 * pci_bridge_dev.c) — vendor 1b36, device 0001, class 0x0604, type 1 header
 * (PCI-to-PCI Bridge Architecture 1.2 §3.2) with a secondary bus of 32
 * slots named by the bridge's id, so `--device pci-bridge,id=br0,chassis_nr=1
 * --device pci-testdev,bus=br0,addr=3` puts the test device in slot 3 behind
 * it. 16-bit I/O window, memory window, 64-bit prefetchable window.
 *
 * `chassis_nr` (1-255, required as in QEMU) goes into a Slot Identification
 * capability (§13.1; First In Chassis set, chassis number writable and kept
 * across reset). tsvmm implements QEMU's `shpc=off` configuration: no
 * Standard Hot-Plug Controller, hence (as QEMU) no SHPC BAR, no MSI and no
 * interrupt pin, and devices cannot be hot-plugged behind the bridge.
 * `shpc=on` is refused with an error saying so; QEMU's default is on, so a
 * differential test gives QEMU `shpc=off` explicitly.
 */
import { z } from 'zod';
import { checkStateVersion, defineDeviceType, devicePlugin, prop, type Device, type DeviceContext } from '@tsvmm/core';
import {
  PCI_VENDOR_ID_REDHAT,
  PciBridge,
  addSlotIdCapability,
  loadPciFunctionState,
  pciBusFor,
  pciDeviceProperties,
  savePciFunctionState,
  type PciAttachment,
} from '@tsvmm/pci';

export const PCI_DEVICE_ID_REDHAT_BRIDGE = 0x0001;

export interface PciBridgeDeviceProperties {
  bus?: string | undefined;
  addr?: string | number | undefined;
  multifunction: boolean;
  chassis_nr: number;
  shpc: boolean;
  msi: 'on' | 'off' | 'auto';
}

export class PciBridgeDevice implements Device {
  readonly typeName = 'pci-bridge';
  readonly bridge: PciBridge;
  private attachment: PciAttachment | undefined;

  constructor(
    readonly id: string,
    readonly props: PciBridgeDeviceProperties,
  ) {
    this.bridge = new PciBridge({
      id,
      vendorId: PCI_VENDOR_ID_REDHAT,
      deviceId: PCI_DEVICE_ID_REDHAT_BRIDGE,
      multifunction: props.multifunction,
      hotpluggable: false,
      hotplugRefusal: `pci-bridge ${id} has no hot-plug controller (tsvmm implements QEMU's shpc=off), so devices behind it must be present when the VM starts`,
    });
    addSlotIdCapability(this.bridge.config, props.chassis_nr);
  }

  realize(ctx: DeviceContext): void {
    this.attachment = pciBusFor(ctx, this.props.bus, this.id).attach(this.bridge, this.props.addr !== undefined ? { addr: this.props.addr } : {});
  }

  unrealize(): void {
    for (const a of this.bridge.secondaryBus.attachments()) {
      // Devices behind an unplugged bridge lose their mappings with it.
      a.detach();
    }
    this.attachment?.detach();
    this.attachment = undefined;
  }

  /** The bus resets the bridge's config space; the chassis number survives (non-volatile). */
  reset(): void {}

  /** Saved state, version 1: the bridge function (bus numbers and windows are in its config space). */
  readonly stateVersion = 1;

  saveState(): unknown {
    return savePciFunctionState(this.bridge, { attachment: this.attachment });
  }

  loadState(version: number, state: unknown): void {
    const subject = `pci-bridge '${this.id}'`;
    checkStateVersion(version, [1], subject);
    loadPciFunctionState(this.bridge, state, { attachment: this.attachment }, subject);
  }

  describe(): Record<string, unknown> {
    const b = this.bridge;
    return {
      bus: this.attachment?.bus.name,
      addr: this.attachment?.location,
      chassis_nr: this.props.chassis_nr,
      secondaryBus: b.secondaryBusNumber,
      subordinateBus: b.subordinateBusNumber,
      devices: b.secondaryBus.attachments().length,
    };
  }
}

export const pciBridgeType = defineDeviceType({
  name: 'pci-bridge',
  description: "QEMU's standard PCI-to-PCI bridge (1b36:0001) with shpc=off: a 32-slot secondary bus named by its id; chassis_nr=1-255 required",
  bus: 'pci',
  hotpluggable: false,
  idPrefix: 'pcibridge',
  properties: z
    .strictObject({
      ...pciDeviceProperties,
      chassis_nr: prop.int(0, 255).default(0),
      shpc: prop.bool().default(false),
      msi: prop.oneOf(['on', 'off', 'auto']).default('auto'),
    })
    .superRefine((p, ctx) => {
      if (p.chassis_nr === 0) {
        ctx.addIssue({ code: 'custom', path: ['chassis_nr'], message: 'each pci-bridge needs a unique chassis_nr of 1-255 (as QEMU: "Bridge chassis not specified")' });
      }
      if (p.shpc) {
        ctx.addIssue({ code: 'custom', path: ['shpc'], message: 'the standard hot-plug controller is not implemented; use shpc=off (the default in tsvmm)' });
      }
      if (p.msi === 'on') {
        ctx.addIssue({ code: 'custom', path: ['msi'], message: 'MSI on a pci-bridge serves the hot-plug controller, which tsvmm does not have (shpc=off); use msi=off or auto' });
      }
    }),
  create(id, props) {
    return new PciBridgeDevice(id, props);
  },
});


export default devicePlugin(pciBridgeType);
