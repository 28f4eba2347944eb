/// <reference types="mocha" />
/**
 * PCI guest tests (docs/pci.md): the guests of test/guest/guests/pci_*.c boot
 * under tsvmm and under QEMU (qemu-system-x86_64 -accel kvm, SeaBIOS) with
 * the same devices, print TAP and end through isa-debug-exit; both VMMs must
 * pass the same TAP. Differences by design, named where they matter:
 *
 * - tsvmm's pci-bridge implements QEMU's shpc=off (no hot-plug controller),
 *   so QEMU gets `shpc=off` on every bridge.
 * - QEMU's pc board has two more PCI functions, the PIIX3 IDE (00:01.1) and
 *   PIIX4 ACPI (00:01.3) controllers; tsvmm has neither as a PCI function.
 * - SeaBIOS sets the ELCR (ports 0x4d0/0x4d1) for IRQ 10/11; those are
 *   KVM's in-kernel PIC registers, which tsvmm's firmware-less setup does not
 *   program.
 */
import { expect } from 'chai';
import { buildGuests, describeRun, describeTapGuest, guestImage, runGuest, type GuestRun, type RunGuestOptions, type Vmm } from './guest-harness.js';

const TIMEOUT_MS = 60_000;
/** tap_done() with every test passed writes 0: status (0 << 1) | 1 */

/** `--device` (tsvmm) / `-device` (QEMU) arguments; QEMU's bridges get shpc=off, the configuration tsvmm implements. */
function devices(vmm: Vmm, specs: string[]): string[] {
  return specs.flatMap((s) => {
    const spec = vmm === 'qemu' && s.startsWith('pci-bridge,') ? `${s},shpc=off` : s;
    return [vmm === 'qemu' ? '-device' : '--device', spec];
  });
}

/** The 40-device topology: two bridges, 20 pci-testdevs behind each. */
const FORTY_BEHIND_TWO_BRIDGES = [
  'pci-bridge,id=br0,chassis_nr=1',
  'pci-bridge,id=br1,chassis_nr=2',
  ...Array.from({ length: 40 }, (_, i) => `pci-testdev,bus=br${i % 2}`),
];

const BAR_TOPOLOGY = ['pci-testdev,addr=3,membar=0x100000', 'pci-bridge,id=br0,chassis_nr=1', 'pci-testdev,bus=br0,addr=4'];

/** virtio-rng-pci functions on the root bus and behind a bridge: four interrupt pins, two PIRQs. */
const INTX_TOPOLOGY = [
  'virtio-rng-pci,addr=3',
  'pci-bridge,id=br0,chassis_nr=1,addr=6',
  'virtio-rng-pci,bus=br0,addr=1',
  'virtio-rng-pci,bus=br0,addr=2',
  'virtio-rng-pci,addr=5',
];

const DUMP_TOPOLOGY = ['pci-bridge,id=br0,chassis_nr=1', 'pci-testdev,bus=br0,addr=3', 'pci-testdev', 'pci-testdev,membar=0x100000'];

function pciSuite(vmm: Vmm): void {
  const boot = (o: Omit<RunGuestOptions, 'vmm' | 'timeoutMs'>): Promise<GuestRun> => runGuest({ vmm, timeoutMs: TIMEOUT_MS, memory: 128, ...o });

  describe(vmm, function () {
    this.timeout(TIMEOUT_MS * 2);

    describeTapGuest(
      'pci_enum: 40 pci-testdevs behind two pci-bridges are enumerated, numbered, assigned and reachable',
      () => boot({ kernel: guestImage('pci_enum.elf'), append: 'testdevs=40 bridges=2', extraArgs: devices(vmm, FORTY_BEHIND_TWO_BRIDGES) }),
      (booted) => {
        it(`sees ${vmm === 'qemu' ? '46 functions: QEMU adds its PIIX3 IDE and PIIX4 ACPI functions' : '44 functions: host bridge, PIIX3, 2 bridges, 40 testdevs'}`, () => {
          expect(booted().tap.diagnostics, describeRun(booted())).to.include(vmm === 'qemu' ? '46 functions' : '44 functions');
        });
      },
    );

    describeTapGuest('pci_bar: moved BARs answer at the new address only, decode and bridge windows gate them, ioeventfds follow', () =>
      boot({ kernel: guestImage('pci_bar.elf'), extraArgs: devices(vmm, BAR_TOPOLOGY) }),
    );

    describeTapGuest(
      'pci_intx: Interrupt Line follows the PIIX PIRQ routing through bridges; INTx arrives on that line',
      () => boot({ kernel: guestImage('pci_intx.elf'), append: 'pins=4', extraArgs: devices(vmm, INTX_TOPOLOGY) }),
      (booted) => {
        it('reports the swizzled lines 11, 10, 11, 11 for root slots 3, 5 and bridge slots 1, 2 behind slot 6', () => {
          const lines = booted()
            .tap.diagnostics.filter((d) => /INTA# line/.test(d))
            .map((d) => d.replace(/ 1af4:10(05|44) /, ' '));
          expect(lines, describeRun(booted())).to.deep.equal([
            '00:03.0 INTA# line 11 (PIRQ routing: 11)',
            '00:05.0 INTA# line 10 (PIRQ routing: 10)',
            '01:01.0 INTA# line 11 (PIRQ routing: 11)',
            '01:02.0 INTA# line 11 (PIRQ routing: 11)',
          ]);
        });
      },
    );

    describeTapGuest('pci_msix: MSI-X table writes reach KVM: delivery, masking, pending bits and a rewritten message, by interrupt', () =>
      boot({ kernel: guestImage('pci_msix.elf'), extraArgs: devices(vmm, ['virtio-rng-pci']) }),
    );

    describeTapGuest(
      'pci_reset: a reset through 0xcf9 brings back the firmware layout',
      () => boot({ kernel: guestImage('pci_reset.elf'), extraArgs: devices(vmm, ['pci-bridge,id=br0,chassis_nr=1', 'pci-testdev,bus=br0']) }),
      (booted) => {
        it('booted twice', () => {
          expect(booted().serialOutput, describeRun(booted())).to.match(/# first boot: .*\n(.*\n)*# second boot/);
        });
      },
    );
  });
}

/** pci_dump output as blocks per function ('bb:dd.f vvvv:dddd ...' and its indented lines). */
function dumpBlocks(out: string): Map<string, string> {
  const blocks = new Map<string, string>();
  let key: string | undefined;
  for (const line of out.split('\n')) {
    if (/^[0-9a-f]{2}:[0-9a-f]{2}\.[0-7] /.test(line)) {
      key = line;
      blocks.set(key, '');
    } else if (key !== undefined && line.startsWith('  ')) {
      blocks.set(key, `${blocks.get(key) ?? ''}${line}\n`);
    } else {
      key = undefined;
    }
  }
  return blocks;
}

describe('PCI guest tests', () => {
  before(function () {
    this.timeout(120_000);
    buildGuests();
  });

  pciSuite('tsvmm');
  pciSuite('qemu');

  describe('differential: pci_dump config spaces after firmware, tsvmm vs QEMU + SeaBIOS', function () {
    this.timeout(TIMEOUT_MS * 2);
    const runs = new Map<Vmm, GuestRun>();
    before(async () => {
      for (const vmm of ['tsvmm', 'qemu'] as const) {
        runs.set(vmm, await runGuest({ vmm, timeoutMs: TIMEOUT_MS, memory: 128, kernel: guestImage('pci_dump.elf'), extraArgs: devices(vmm, DUMP_TOPOLOGY) }));
      }
    });
    const get = (vmm: Vmm): GuestRun => {
      const r = runs.get(vmm);
      if (r === undefined) throw new Error(`pci_dump did not run on ${vmm}`);
      return r;
    };

    it('every function tsvmm has reads the same on QEMU: IDs, command, BARs, bus numbers, windows, capabilities, registers', () => {
      const ours = dumpBlocks(get('tsvmm').serialOutput);
      const theirs = dumpBlocks(get('qemu').serialOutput);
      expect(ours.size, describeRun(get('tsvmm'))).to.equal(6);
      for (const [fn, text] of ours) {
        expect(theirs.get(fn), `${fn}\n--- tsvmm ---\n${describeRun(get('tsvmm'))}\n--- qemu ---\n${describeRun(get('qemu'))}`).to.equal(text);
      }
    });

    it('QEMU has exactly two more functions, by design: PIIX3 IDE 8086:7010 and PIIX4 ACPI 8086:7113', () => {
      const ours = new Set(dumpBlocks(get('tsvmm').serialOutput).keys());
      const extra = [...dumpBlocks(get('qemu').serialOutput).keys()].filter((k) => !ours.has(k));
      expect(extra.map((k) => k.slice(0, 17)), describeRun(get('qemu'))).to.deep.equal(['00:01.1 8086:7010', '00:01.3 8086:7113']);
    });
  });
});
