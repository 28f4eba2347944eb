/**
 * Cold-plug over the protocol on KVM: a PCI device added with device/add
 * between vm/create and vm/start is laid out like a boot-time one, so the
 * guest's own driver finds and uses it (QEMU's device_add under -S).
 */
import { expect } from 'chai';
import { TsvmmClient } from '@tsvmm/client';
import { buildGuests, guestImage } from './guest-harness.js';
import { startServer, type ServerProcess } from './rpc-harness.js';
import { parseTap, tapVerdict } from './tap.js';

describe('rpc cold-plug on KVM', function () {
  this.timeout(120_000);
  let server: ServerProcess;
  let client: TsvmmClient;

  before(async () => {
    buildGuests();
    server = await startServer({ fake: false });
    client = await TsvmmClient.connect(server.address);
  });
  after(async () => {
    await client?.close();
    await server?.stop();
  });

  /** Boots the virtio-rng guest, with `plug` run between create and start; returns its console and exit status. */
  async function run(plug: (vmId: string) => Promise<void>): Promise<{ text: string; exitStatus: number | undefined }> {
    const { vmId } = await client.vmCreate({
      description: {
        kernel: guestImage('virtio_rng.elf'),
        devices: [{ driver: 'isa-debug-exit', iobase: '0xf4', iosize: '0x4' }],
      },
    });
    let text = '';
    const sub = client.onConsoleOutput((o) => {
      if (o.vmId === vmId) text += Buffer.from(o.data, 'base64').toString('utf8');
    });
    try {
      await plug(vmId);
      const ended = client.waitForState(vmId, (c) => c.to === 'shutdown' || c.to === 'crashed', 60_000);
      await client.vmStart({ vmId });
      const end = await ended;
      // console output is batched: let the last batch arrive
      await new Promise((r) => setTimeout(r, 200));
      return { text, exitStatus: end.exitStatus };
    } finally {
      sub.dispose();
      await client.vmDestroy({ vmId }).catch(() => undefined);
    }
  }

  it('a virtio-rng-pci added before vm/start is found and read by the guest', async () => {
    const { text, exitStatus } = await run(async (vmId) => {
      const info = await client.deviceAdd({ vmId, device: { driver: 'virtio-rng-pci', id: 'rng0' } });
      expect(info.properties?.['addr']).to.be.a('string');
    });
    const verdict = tapVerdict(parseTap(text));
    expect(verdict.passed, `${JSON.stringify(verdict)}\n${text}`).to.equal(true);
    expect(exitStatus).to.equal(1);
  });

  it('without it the same guest finds no device (so the test above can fail)', async () => {
    const { text } = await run(async () => undefined);
    expect(text).to.include('no virtio device of type 4');
    expect(tapVerdict(parseTap(text)).passed, text).to.equal(false);
  });

  it('a device added and removed again before vm/start is gone for the guest', async () => {
    const { text } = await run(async (vmId) => {
      await client.deviceAdd({ vmId, device: { driver: 'virtio-rng-pci', id: 'rng0' } });
      await client.deviceRemove({ vmId, id: 'rng0' });
    });
    expect(text).to.include('no virtio device of type 4');
    expect(tapVerdict(parseTap(text)).passed, text).to.equal(false);
  });
});
