/// <reference types="mocha" />
import { expect } from 'chai';
import { createTestDeviceContext } from '@tsvmm/core/testing';
import { PCI_CAP_ID_MSI, PCI_MSI_FLAGS_64BIT, PCI_MSI_FLAGS_ENABLE, PCI_MSI_FLAGS_MASKBIT, PciConfigSpace, PciMsi } from '../src/index.js';

function rig(opts: { vectors?: number; is64?: boolean; perVectorMask?: boolean } = {}) {
  const t = createTestDeviceContext();
  const config = new PciConfigSpace('dev', { vendorId: 0x1234, deviceId: 0x11e8, classCode: 0x00ff });
  const msi = new PciMsi(config, { notify: t.ctx.notify, vectors: opts.vectors ?? 1, ...opts });
  return { t, config, msi, cap: msi.capOffset };
}

describe('MSI (PCI 3.0 §6.8.1)', () => {
  it('lays out a 64-bit capability with Multiple Message Capable and the 64-bit bit', () => {
    const { config, cap } = rig({ vectors: 4 });
    expect(config.findCapability(PCI_CAP_ID_MSI)).to.equal(cap);
    expect(config.read(cap + 2, 2)).to.equal((2 << 1) | PCI_MSI_FLAGS_64BIT);
  });

  it('sends nothing until enabled, then the programmed message through KVM_SIGNAL_MSI', () => {
    const { t, config, msi, cap } = rig();
    config.write(cap + 4, 4, 0xfee00000);
    config.write(cap + 12, 2, 0x4042);
    msi.notify(0);
    expect(t.notify.signalledMsis).to.deep.equal([]);
    config.write(cap + 2, 2, PCI_MSI_FLAGS_ENABLE);
    msi.notify(0);
    expect(t.notify.signalledMsis).to.deep.equal([{ address: 0xfee00000n, data: 0x4042 }]);
  });

  it('puts the vector number in the low data bits of the granted vectors', () => {
    const { t, config, msi, cap } = rig({ vectors: 4 });
    config.write(cap + 4, 4, 0xfee00000);
    config.write(cap + 12, 2, 0x40);
    config.write(cap + 2, 2, PCI_MSI_FLAGS_ENABLE | (2 << 4));
    msi.notify(3);
    msi.notify(4);
    expect(t.notify.signalledMsis.map((m) => m.data)).to.deep.equal([0x43]);
  });

  it('holds a masked vector pending and sends it on unmask', () => {
    const { t, config, msi, cap } = rig({ vectors: 2, perVectorMask: true });
    expect(config.read(cap + 2, 2) & PCI_MSI_FLAGS_MASKBIT).to.equal(PCI_MSI_FLAGS_MASKBIT);
    config.write(cap + 4, 4, 0xfee00000);
    config.write(cap + 2, 2, PCI_MSI_FLAGS_ENABLE | (1 << 4));
    config.write(cap + 16, 4, 0x2);
    msi.notify(1);
    expect(msi.isPending(1)).to.equal(true);
    expect(t.notify.signalledMsis).to.have.length(0);
    config.write(cap + 16, 4, 0);
    expect(msi.isPending(1)).to.equal(false);
    expect(t.notify.signalledMsis).to.have.length(1);
  });

  it('uses a 32-bit layout when asked', () => {
    const { config, msi, cap } = rig({ is64: false });
    config.write(cap + 4, 4, 0xfee01000);
    config.write(cap + 8, 2, 0x55);
    expect(msi.message(0)).to.deep.equal({ address: 0xfee01000n, data: 0x55 });
  });
});
