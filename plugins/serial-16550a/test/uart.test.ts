/// <reference types="mocha" />
import { expect } from 'chai';
import fc from 'fast-check';
import { AddressRangeError, ConfigError, parseProperties } from '@tsvmm/core';
import { createTestDeviceContext, inb, outb, RecordingChardev, type TestDeviceContext } from '@tsvmm/core/testing';
import {
  FIFO_SIZE,
  HOST_INPUT_LIMIT,
  IIR_CHARACTER_TIMEOUT,
  IIR_FIFOS_ENABLED,
  IIR_MODEM_STATUS,
  IIR_NO_INTERRUPT,
  IIR_RECEIVED_DATA,
  IIR_RECEIVER_LINE_STATUS,
  IIR_THR_EMPTY,
  isaSerial,
  LSR_DR,
  LSR_OE,
  LSR_TEMT,
  LSR_THRE,
  Uart16550a,
} from '../src/index.js';

const COM1 = 0x3f8;
const RBR = COM1;
const THR = COM1;
const DLL = COM1;
const IER = COM1 + 1;
const DLM = COM1 + 1;
const IIR = COM1 + 2;
const FCR = COM1 + 2;
const LCR = COM1 + 3;
const MCR = COM1 + 4;
const LSR = COM1 + 5;
const MSR = COM1 + 6;
const SCR = COM1 + 7;

const MCR_LOOP = 0x10;

function createSerial(props: Record<string, unknown>): Uart16550a {
  return isaSerial.create('serial0', parseProperties(isaSerial.properties, props, 'isa-serial')) as Uart16550a;
}

interface Rig {
  m: TestDeviceContext;
  uart: Uart16550a;
  host: RecordingChardev;
}

function rig(props: Record<string, unknown> = { chardev: 'serial0' }): Rig {
  const host = new RecordingChardev('serial0');
  const m = createTestDeviceContext({ chardevs: [host] });
  const uart = createSerial(props);
  uart.realize(m.ctx);
  return { m, uart, host };
}

describe('isa-serial (16550A)', () => {
  describe('properties', () => {
    it('defaults to COM1: 0x3f8, IRQ 4', () => {
      expect(createSerial({}).describe()).to.include({ index: 0, iobase: 0x3f8, irq: 4 });
    });

    it('index 1 selects COM2: 0x2f8, IRQ 3', () => {
      expect(createSerial({ index: 1 }).describe()).to.include({ index: 1, iobase: 0x2f8, irq: 3 });
    });

    it('explicit iobase and irq override the index defaults, in command-line form too', () => {
      expect(createSerial({ index: '1', iobase: '0x3e8', irq: '5' }).describe()).to.include({ iobase: 0x3e8, irq: 5 });
    });

    it('rejects unknown properties and out-of-range values', () => {
      expect(() => createSerial({ baud: 9600 })).to.throw(ConfigError, /unknown property 'baud'/);
      expect(() => createSerial({ index: 4 })).to.throw(ConfigError, /index/);
      expect(() => createSerial({ irq: 16 })).to.throw(ConfigError, /irq/);
    });

    it('refuses to realize with a chardev id that does not exist', () => {
      const m = createTestDeviceContext({ chardevs: [new RecordingChardev('serial0')] });
      expect(() => createSerial({ chardev: 'serial7' }).realize(m.ctx)).to.throw(ConfigError, /serial7/);
    });
  });

  describe('lifecycle', () => {
    it('claims eight ports at its base and releases them on unrealize', () => {
      const { m, uart, host } = rig();
      expect(m.pio.find(COM1)?.owner).to.equal('serial0');
      expect(m.pio.find(COM1 + 7)?.owner).to.equal('serial0');
      expect(m.pio.find(COM1 + 8)).to.equal(undefined);
      expect(host.attached).to.equal(true);
      uart.unrealize();
      expect(m.pio.find(COM1)).to.equal(undefined);
      expect(host.attached).to.equal(false);
    });

    it('conflicts with another device on the same ports', () => {
      const { m } = rig();
      const second = createSerial({});
      expect(() => second.realize(m.ctx)).to.throw(AddressRangeError, /overlaps/);
    });

    it('works without a chardev: output is discarded, nothing is received', () => {
      const { m } = rig({});
      outb(m.pio, THR, 0x41);
      expect(inb(m.pio, LSR)).to.equal(LSR_THRE | LSR_TEMT);
    });
  });

  describe('reset state (Table V)', () => {
    it('reads IIR 0x01, LSR 0x60, IER/LCR/MCR 0 and MSR with the host connected', () => {
      const { m } = rig();
      expect(inb(m.pio, IIR)).to.equal(IIR_NO_INTERRUPT);
      expect(inb(m.pio, LSR)).to.equal(0x60);
      expect(inb(m.pio, IER)).to.equal(0);
      expect(inb(m.pio, LCR)).to.equal(0);
      expect(inb(m.pio, MCR)).to.equal(0);
      expect(inb(m.pio, MSR)).to.equal(0xb0); // DCD | DSR | CTS, no deltas
    });

    it('reset() returns registers to power-on state and lowers the interrupt', () => {
      const { m, uart } = rig();
      outb(m.pio, LCR, 0x03);
      outb(m.pio, FCR, 0x01);
      outb(m.pio, IER, 0x02);
      expect(m.irqLevel(4)).to.equal(true);
      uart.reset();
      expect(m.irqLevel(4)).to.equal(false);
      expect(inb(m.pio, LCR)).to.equal(0);
      expect(inb(m.pio, IIR)).to.equal(IIR_NO_INTERRUPT);
    });

    it('reset() empties the receiver but keeps host input still waiting in the device', () => {
      const { m, uart, host } = rig();
      host.input('ab'); // 'a' in the holding register, 'b' waiting
      uart.reset();
      expect(inb(m.pio, RBR)).to.equal(0x62);
      expect(inb(m.pio, LSR) & LSR_DR).to.equal(0);
    });
  });

  describe('transmitter', () => {
    it('sends a THR write to the chardev at once, THRE and TEMT stay set', () => {
      const { m, host } = rig();
      for (const c of 'hi\n') outb(m.pio, THR, c.charCodeAt(0));
      expect(host.text).to.equal('hi\n');
      expect(inb(m.pio, LSR) & (LSR_THRE | LSR_TEMT)).to.equal(LSR_THRE | LSR_TEMT);
    });

    it('enabling ETBEI while THR is empty raises a THRE interrupt', () => {
      const { m } = rig();
      outb(m.pio, IER, 0x02);
      expect(m.irqLevel(4)).to.equal(true);
      expect(inb(m.pio, IIR)).to.equal(IIR_THR_EMPTY);
    });

    it('reading IIR that reports THRE clears the interrupt and lowers the IRQ', () => {
      const { m } = rig();
      outb(m.pio, IER, 0x02);
      inb(m.pio, IIR);
      expect(m.irqLevel(4)).to.equal(false);
      expect(inb(m.pio, IIR)).to.equal(IIR_NO_INTERRUPT);
    });

    it('each THR write re-raises the THRE interrupt with a fresh edge', () => {
      const { m } = rig();
      outb(m.pio, IER, 0x02);
      const before = m.irqRaises(4);
      outb(m.pio, THR, 0x41);
      outb(m.pio, THR, 0x42);
      expect(m.irqRaises(4)).to.equal(before + 2);
      expect(m.irqLevel(4)).to.equal(true);
    });

    it('a chardev that fails to write does not stop the guest; later output still goes out', () => {
      const { m, host } = rig();
      const write = host.write.bind(host);
      host.write = () => {
        throw new Error('EPIPE');
      };
      expect(() => outb(m.pio, THR, 0x41)).not.to.throw();
      host.write = write;
      outb(m.pio, THR, 0x42);
      expect(host.output).to.deep.equal([0x42]);
      expect(inb(m.pio, LSR) & LSR_THRE).to.equal(LSR_THRE);
    });

    it('a THRE interrupt does not show while ETBEI is clear', () => {
      const { m } = rig();
      outb(m.pio, THR, 0x41);
      expect(inb(m.pio, IIR)).to.equal(IIR_NO_INTERRUPT);
      expect(m.irqLevel(4)).to.equal(false);
    });
  });

  describe('registers', () => {
    it('DLAB maps offsets 0 and 1 to the divisor latch', () => {
      const { m, host } = rig();
      outb(m.pio, IER, 0x05);
      outb(m.pio, LCR, 0x80);
      outb(m.pio, DLL, 0x01);
      outb(m.pio, DLM, 0x02);
      expect(inb(m.pio, DLL)).to.equal(0x01);
      expect(inb(m.pio, DLM)).to.equal(0x02);
      outb(m.pio, LCR, 0x03);
      expect(inb(m.pio, IER)).to.equal(0x05);
      expect(host.output).to.deep.equal([]);
      expect(inb(m.pio, LCR)).to.equal(0x03);
    });

    it('the scratch register keeps what was written', () => {
      const { m } = rig();
      outb(m.pio, SCR, 0x5a);
      expect(inb(m.pio, SCR)).to.equal(0x5a);
    });

    it('IER bits 4-7 and MCR bits 5-7 read as zero', () => {
      const { m } = rig();
      outb(m.pio, IER, 0xf0);
      outb(m.pio, MCR, 0xe3);
      expect(inb(m.pio, IER)).to.equal(0);
      expect(inb(m.pio, MCR)).to.equal(0x03);
    });

    it('a word access touches two consecutive registers', () => {
      const { m } = rig();
      m.pio.write(LCR, Uint8Array.of(0x03, 0x0b)); // LCR, MCR
      const got = new Uint8Array(2);
      m.pio.read(LCR, got);
      expect([...got]).to.deep.equal([0x03, 0x0b]);
    });
  });

  describe('receiver', () => {
    it('host input sets DR; RBR returns the bytes in order and DR clears when empty', () => {
      const { m, host } = rig();
      outb(m.pio, FCR, 0x01);
      host.input('ok');
      expect(inb(m.pio, LSR) & LSR_DR).to.equal(LSR_DR);
      expect(inb(m.pio, RBR)).to.equal(0x6f);
      expect(inb(m.pio, RBR)).to.equal(0x6b);
      expect(inb(m.pio, LSR) & LSR_DR).to.equal(0);
    });

    it('with FIFOs disabled the holding register takes one byte; the rest waits in the device', () => {
      const { m, uart, host } = rig();
      host.input('abc');
      expect(uart.receiveFifoLevel).to.equal(1);
      expect(uart.pendingHostInput).to.equal(2);
      expect(inb(m.pio, RBR)).to.equal(0x61);
      expect(uart.receiveFifoLevel).to.equal(1);
      expect(inb(m.pio, RBR)).to.equal(0x62);
      expect(inb(m.pio, RBR)).to.equal(0x63);
      expect(inb(m.pio, LSR) & (LSR_DR | LSR_OE)).to.equal(0);
    });

    it('with FIFOs enabled the FIFO takes 16 bytes; input stops while it is full and resumes as the guest reads', () => {
      const { m, uart, host } = rig();
      outb(m.pio, FCR, 0x01);
      const sent = Array.from({ length: 40 }, (_, i) => i);
      host.input(Uint8Array.from(sent));
      expect(uart.receiveFifoLevel).to.equal(FIFO_SIZE);
      expect(uart.pendingHostInput).to.equal(40 - FIFO_SIZE);
      const got: number[] = [];
      while (inb(m.pio, LSR) & LSR_DR) {
        got.push(inb(m.pio, RBR));
        expect(uart.receiveFifoLevel).to.be.at.most(FIFO_SIZE);
      }
      expect(got).to.deep.equal(sent);
      expect(inb(m.pio, LSR) & LSR_OE).to.equal(0);
    });

    it('asks the backend to stop sending while host input waits, and to go on once the guest has taken it', () => {
      const { m, host } = rig();
      host.input(new Uint8Array(5000).fill(0x41));
      expect(host.paused, 'paused with input waiting').to.equal(true);
      let n = 0;
      while (inb(m.pio, LSR) & LSR_DR) {
        inb(m.pio, RBR);
        n++;
        // still paused until the last waiting byte has moved into the receiver
        if (n < 5000 - 1) expect(host.paused).to.equal(true);
      }
      expect(n).to.equal(5000);
      expect(host.paused, 'resumed once everything was read').to.equal(false);
      host.input('x'); // fits the receiver at once: no pause at all
      expect(host.paused).to.equal(false);
    });

    it(`drops host input beyond ${HOST_INPUT_LIMIT} waiting bytes (from a backend that cannot wait)`, () => {
      const { uart, host } = rig();
      host.input(new Uint8Array(HOST_INPUT_LIMIT + 100));
      expect(uart.pendingHostInput).to.equal(HOST_INPUT_LIMIT - 1); // one byte went on into the holding register
      expect(uart.receiveFifoLevel + uart.pendingHostInput).to.equal(HOST_INPUT_LIMIT);
    });

    it('an empty FIFO reads 0; the 16450 holding register repeats its last byte', () => {
      const { m, host } = rig();
      host.input('z');
      inb(m.pio, RBR);
      expect(inb(m.pio, RBR)).to.equal(0x7a);
      outb(m.pio, FCR, 0x01);
      expect(inb(m.pio, RBR)).to.equal(0);
    });
  });

  describe('FIFO control', () => {
    it('IIR bits 6-7 reflect FCR0', () => {
      const { m } = rig();
      outb(m.pio, FCR, 0x01);
      expect(inb(m.pio, IIR) & 0xc0).to.equal(IIR_FIFOS_ENABLED);
      outb(m.pio, FCR, 0x00);
      expect(inb(m.pio, IIR) & 0xc0).to.equal(0);
    });

    it('the receiver FIFO reset empties the FIFO', () => {
      const { m, uart } = rig();
      outb(m.pio, FCR, 0x01);
      outb(m.pio, MCR, MCR_LOOP);
      for (let i = 0; i < 5; i++) outb(m.pio, THR, i);
      expect(uart.receiveFifoLevel).to.equal(5);
      outb(m.pio, FCR, 0x03);
      expect(uart.receiveFifoLevel).to.equal(0);
      expect(inb(m.pio, LSR) & LSR_DR).to.equal(0);
    });

    it('switching between FIFO and 16450 mode empties the receiver', () => {
      const { m, uart } = rig();
      outb(m.pio, MCR, MCR_LOOP);
      outb(m.pio, THR, 0x31);
      expect(uart.receiveFifoLevel).to.equal(1);
      outb(m.pio, FCR, 0x01);
      expect(uart.receiveFifoLevel).to.equal(0);
    });

    it('reports received data at the trigger level and a character timeout below it', () => {
      const { m, host } = rig();
      outb(m.pio, FCR, 0x41); // FIFO on, trigger level 4
      outb(m.pio, IER, 0x01);
      host.input('abc');
      expect(inb(m.pio, IIR)).to.equal(IIR_FIFOS_ENABLED | IIR_CHARACTER_TIMEOUT);
      host.input('d');
      expect(inb(m.pio, IIR)).to.equal(IIR_FIFOS_ENABLED | IIR_RECEIVED_DATA);
      expect(m.irqLevel(4)).to.equal(true);
      for (let i = 0; i < 4; i++) inb(m.pio, RBR);
      expect(inb(m.pio, IIR)).to.equal(IIR_FIFOS_ENABLED | IIR_NO_INTERRUPT);
      expect(m.irqLevel(4)).to.equal(false);
    });

    it('reports received data for a single byte in 16450 mode', () => {
      const { m, host } = rig();
      outb(m.pio, IER, 0x01);
      host.input('x');
      expect(inb(m.pio, IIR)).to.equal(IIR_RECEIVED_DATA);
    });
  });

  describe('loopback (MCR4)', () => {
    it('THR bytes come back through RBR and do not reach the chardev', () => {
      const { m, host } = rig();
      outb(m.pio, MCR, MCR_LOOP);
      outb(m.pio, THR, 0x55);
      expect(inb(m.pio, LSR) & LSR_DR).to.equal(LSR_DR);
      expect(inb(m.pio, RBR)).to.equal(0x55);
      expect(host.output).to.deep.equal([]);
    });

    it('a byte arriving at a full receiver is an overrun; reading LSR clears OE', () => {
      const { m } = rig();
      outb(m.pio, MCR, MCR_LOOP);
      outb(m.pio, THR, 0x01);
      outb(m.pio, THR, 0x02);
      expect(inb(m.pio, LSR) & LSR_OE).to.equal(LSR_OE);
      expect(inb(m.pio, LSR) & LSR_OE).to.equal(0);
      expect(inb(m.pio, RBR)).to.equal(0x02); // 16450 mode: the newer byte overwrote the older
    });

    it('in FIFO mode an overrun keeps the FIFO and loses the new byte', () => {
      const { m } = rig();
      outb(m.pio, FCR, 0x01);
      outb(m.pio, MCR, MCR_LOOP);
      for (let i = 0; i <= FIFO_SIZE; i++) outb(m.pio, THR, i);
      expect(inb(m.pio, LSR) & LSR_OE).to.equal(LSR_OE);
      const got: number[] = [];
      while (inb(m.pio, LSR) & LSR_DR) got.push(inb(m.pio, RBR));
      expect(got).to.deep.equal(Array.from({ length: FIFO_SIZE }, (_, i) => i));
    });

    it('MSR follows MCR: RTS→CTS, DTR→DSR, OUT1→RI, OUT2→DCD (the Linux probe reads 0x90)', () => {
      const { m } = rig();
      outb(m.pio, MCR, MCR_LOOP | 0x0a); // OUT2 | RTS
      expect(inb(m.pio, MSR) & 0xf0).to.equal(0x90);
      outb(m.pio, MCR, MCR_LOOP | 0x05); // OUT1 | DTR
      expect(inb(m.pio, MSR) & 0xf0).to.equal(0x60);
    });

    it('modem input changes set delta bits; TERI marks only the trailing edge of RI', () => {
      const { m } = rig();
      outb(m.pio, MCR, MCR_LOOP | 0x04); // RI on; CTS, DSR, DCD drop
      expect(inb(m.pio, MSR)).to.equal(0x40 | 0x08 | 0x02 | 0x01);
      expect(inb(m.pio, MSR) & 0x0f).to.equal(0); // reading MSR clears the deltas
      outb(m.pio, MCR, MCR_LOOP);
      expect(inb(m.pio, MSR)).to.equal(0x04);
    });

    it('host input waits while loopback is on and arrives when it ends', () => {
      const { m, host } = rig();
      outb(m.pio, MCR, MCR_LOOP);
      host.input('h');
      expect(inb(m.pio, LSR) & LSR_DR).to.equal(0);
      outb(m.pio, MCR, 0);
      expect(inb(m.pio, RBR)).to.equal(0x68);
    });
  });

  describe('interrupt priorities (Table IV)', () => {
    it('line status > received data > THRE > modem status', () => {
      const { m } = rig();
      outb(m.pio, MCR, MCR_LOOP | 0x02); // loopback, RTS: CTS comes up, the rest drop → deltas
      outb(m.pio, THR, 0x01);
      outb(m.pio, THR, 0x02); // overrun
      outb(m.pio, IER, 0x0f);
      expect(inb(m.pio, IIR)).to.equal(IIR_RECEIVER_LINE_STATUS);
      inb(m.pio, LSR);
      expect(inb(m.pio, IIR)).to.equal(IIR_RECEIVED_DATA);
      inb(m.pio, RBR);
      expect(inb(m.pio, IIR)).to.equal(IIR_THR_EMPTY); // and this read clears it
      expect(inb(m.pio, IIR)).to.equal(IIR_MODEM_STATUS);
      expect(m.irqLevel(4)).to.equal(true);
      inb(m.pio, MSR);
      expect(inb(m.pio, IIR)).to.equal(IIR_NO_INTERRUPT);
      expect(m.irqLevel(4)).to.equal(false);
    });

    it('a pending interrupt shows in IIR but raises no IRQ until enabled', () => {
      const { m, host } = rig();
      host.input('q');
      expect(inb(m.pio, IIR)).to.equal(IIR_NO_INTERRUPT);
      expect(m.irqLevel(4)).to.equal(false);
      outb(m.pio, IER, 0x01);
      expect(m.irqLevel(4)).to.equal(true);
    });

    it('uses the irq property for its line', () => {
      const { m } = rig({ chardev: 'serial0', irq: 3 });
      outb(m.pio, IER, 0x02);
      expect(m.irqLevel(3)).to.equal(true);
      expect(m.irqLevel(4)).to.equal(false);
    });
  });

  describe('random register access (property)', () => {
    type Op =
      | { kind: 'read'; reg: number }
      | { kind: 'write'; reg: number; value: number }
      | { kind: 'input'; bytes: Uint8Array };
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.record({ kind: fc.constant('read' as const), reg: fc.integer({ min: 0, max: 7 }) }),
      fc.record({ kind: fc.constant('write' as const), reg: fc.integer({ min: 0, max: 7 }), value: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant('input' as const), bytes: fc.uint8Array({ maxLength: 40 }) }),
    );
    const validIds = new Set([IIR_NO_INTERRUPT, IIR_RECEIVER_LINE_STATUS, IIR_RECEIVED_DATA, IIR_CHARACTER_TIMEOUT, IIR_THR_EMPTY, IIR_MODEM_STATUS]);

    it('never throws, keeps IIR encodings valid, the FIFO within 16 bytes and the IRQ equal to IIR bit 0', () => {
      fc.assert(
        fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
          const { m, uart, host } = rig();
          let lcr = 0;
          let mcr = 0;
          let expectedOutput = 0;
          for (const o of ops) {
            if (o.kind === 'input') host.input(o.bytes);
            else if (o.kind === 'read') inb(m.pio, COM1 + o.reg);
            else {
              if (o.reg === 0 && (lcr & 0x80) === 0 && (mcr & MCR_LOOP) === 0) expectedOutput++;
              if (o.reg === 3) lcr = o.value;
              if (o.reg === 4) mcr = o.value;
              outb(m.pio, COM1 + o.reg, o.value);
            }
            expect(uart.receiveFifoLevel).to.be.within(0, FIFO_SIZE);
            const irq = m.irqLevel(4);
            const iir = inb(m.pio, IIR);
            expect(validIds.has(iir & 0x0f), `IIR 0x${iir.toString(16)}`).to.equal(true);
            expect(iir & 0x30).to.equal(0);
            expect([0, 0xc0]).to.include(iir & 0xc0);
            expect(irq).to.equal((iir & 0x01) === 0);
            const lsr = inb(m.pio, LSR);
            expect(lsr & (LSR_THRE | LSR_TEMT)).to.equal(LSR_THRE | LSR_TEMT);
            expect((lsr & LSR_DR) !== 0).to.equal(uart.receiveFifoLevel > 0);
          }
          expect(host.output.length).to.equal(expectedOutput);
        }),
        { numRuns: 300 },
      );
    });
  });
});
