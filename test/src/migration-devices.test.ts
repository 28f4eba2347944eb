/**
 * Device state round trips (Firecracker keeps one per device): each ISA
 * device plugin is driven into a non-trivial state through its ports, saved,
 * loaded into a fresh device on another context, and must then save the same
 * state and answer the same sequence of port accesses the same way. A state
 * of the wrong shape or version is refused with an error naming the field
 * (loadState's input comes from a stream).
 */
import { expect } from 'chai';
import { ConfigError, parseProperties, type Device, type DeviceTypeDefinition } from '@tsvmm/core';
import { createTestDeviceContext, inb, outb, RecordingChardev, type TestDeviceContext } from '@tsvmm/core/testing';
import { pluginRegistry } from './migration-harness.js';

interface Case {
  driver: string;
  props: Record<string, unknown>;
  /** drive the device into some state */
  scribble(t: TestDeviceContext, host: RecordingChardev): void;
  /** port reads (in order) whose answers must agree after the round trip */
  probe: { port: number; size?: 1 | 2 | 4 }[];
  /** a field and a bad value for it */
  bad: [string, unknown];
}

const CASES: Case[] = [
  {
    driver: 'isa-serial',
    props: { chardev: 'serial0' },
    scribble: (t, host) => {
      outb(t.pio, 0x3fb, 0x83); // DLAB, 8N1
      outb(t.pio, 0x3f8, 0x01); // divisor 115200
      outb(t.pio, 0x3fb, 0x03);
      outb(t.pio, 0x3fa, 0xc7); // FIFOs on, trigger 14
      outb(t.pio, 0x3f9, 0x05); // ERBFI | ELSI
      outb(t.pio, 0x3ff, 0x5a); // scratch
      host.input(new TextEncoder().encode('hello, migration'));
    },
    probe: [{ port: 0x3fa }, { port: 0x3fd }, { port: 0x3f8 }, { port: 0x3f8 }, { port: 0x3ff }, { port: 0x3fb }, { port: 0x3fc }, { port: 0x3fe }, { port: 0x3fd }],
    bad: ['rx', new Uint8Array(40)],
  },
  {
    driver: 'mc146818rtc',
    props: {},
    scribble: (t) => {
      outb(t.pio, 0x70, 0x0b);
      outb(t.pio, 0x71, 0x06); // binary, 24 h
      outb(t.pio, 0x70, 0x40);
      outb(t.pio, 0x71, 0x99); // CMOS RAM byte
      outb(t.pio, 0x70, 0x00);
      t.clock.advanceMs(1234);
    },
    probe: [{ port: 0x71 }, { port: 0x70 }],
    bad: ['cmos', new Uint8Array(3)],
  },
  {
    driver: 'i8042',
    props: {},
    scribble: (t) => {
      outb(t.pio, 0x64, 0x60); // write command byte...
      outb(t.pio, 0x60, 0x47);
      outb(t.pio, 0x64, 0x20); // ...and read it into the output buffer
      outb(t.pio, 0x92, 0x02);
    },
    probe: [{ port: 0x64 }, { port: 0x60 }, { port: 0x64 }, { port: 0x92 }],
    bad: ['status', 300],
  },
  {
    driver: 'acpi-pm',
    props: {},
    scribble: (t) => {
      outb(t.pio, 0x602, 0x01); // PM1_EN TMR_EN
      outb(t.pio, 0x604, 0x01); // SCI_EN
      t.clock.advanceMs(5000);
    },
    probe: [{ port: 0x600, size: 2 }, { port: 0x602, size: 2 }, { port: 0x604, size: 2 }, { port: 0x608, size: 4 }],
    bad: ['pm1Control', -1],
  },
  {
    driver: 'fw_cfg',
    props: {},
    scribble: (t) => {
      t.pio.write(0x510, Uint8Array.of(0x00, 0x00)); // select SIGNATURE
      inb(t.pio, 0x511); // 'Q'
      inb(t.pio, 0x511); // 'E'
    },
    probe: [{ port: 0x511 }, { port: 0x511 }, { port: 0x511 }],
    bad: ['selector', 'zero'],
  },
  {
    driver: 'isa-debug-exit',
    props: { iobase: 0xf4, iosize: 4 },
    scribble: () => undefined,
    probe: [{ port: 0xf4 }],
    bad: ['', ''],
  },
];

async function deviceType(driver: string): Promise<DeviceTypeDefinition> {
  const reg = pluginRegistry();
  await reg.ensure('device', driver);
  const def = reg.definitions<DeviceTypeDefinition>('device').find((d) => d.name === driver);
  if (def === undefined) throw new Error(`no device type ${driver}`);
  return def;
}

function read(t: TestDeviceContext, port: number, size: 1 | 2 | 4): number {
  const b = new Uint8Array(size);
  t.pio.read(port, b);
  return b.reduceRight((v, x) => v * 256 + x, 0);
}

describe('device state round trips (ISA device plugins)', () => {
  for (const c of CASES) {
    describe(c.driver, () => {
      async function make(): Promise<{ t: TestDeviceContext; dev: Device; host: RecordingChardev }> {
        const def = await deviceType(c.driver);
        const host = new RecordingChardev('serial0');
        const t = createTestDeviceContext({ chardevs: [host] });
        const dev = def.create(c.driver === 'isa-serial' ? 'serial0' : c.driver, parseProperties(def.properties, c.props, c.driver));
        await dev.realize(t.ctx);
        return { t, dev, host };
      }

      it('saves a state that a fresh device loads into the same registers and behaviour', async () => {
        const a = await make();
        c.scribble(a.t, a.host);
        const version = a.dev.stateVersion;
        expect(version, 'stateVersion').to.be.a('number');
        const saved = a.dev.saveState?.();
        const b = await make();
        // The destination's clock continues where the source's stopped (the machine restores it).
        b.t.clock.ns = a.t.clock.ns;
        b.dev.loadState?.(version as number, structuredClone(saved));
        expect(b.dev.saveState?.()).to.deep.equal(saved);
        for (const p of c.probe) {
          expect(read(b.t, p.port, p.size ?? 1), `port 0x${p.port.toString(16)}`).to.equal(read(a.t, p.port, p.size ?? 1));
        }
        expect(b.t.irqLevels).to.deep.equal(a.t.irqLevels);
      });

      it('refuses a state of another version or shape, naming what is wrong', async () => {
        const a = await make();
        const saved = a.dev.saveState?.() as Record<string, unknown>;
        const b = await make();
        expect(() => b.dev.loadState?.(99, saved)).to.throw(ConfigError, /state version 99 is not one this plugin loads \(1\)/);
        const [field, value] = c.bad;
        if (field === '') {
          expect(() => b.dev.loadState?.(1, { extra: 1 })).to.not.throw();
          return;
        }
        expect(() => b.dev.loadState?.(1, { ...saved, [field]: value })).to.throw(ConfigError, new RegExp(`saved ${field}`));
        expect(() => b.dev.loadState?.(1, 'not an object')).to.throw(ConfigError);
      });
    });
  }
});
