/**
 * The PIIX3 PIRQ router: four PCI interrupt lines PIRQA#-PIRQD# steered to
 * ISA IRQs by the PIRQ Route Control registers (Intel 82371SB datasheet
 * §2.2.8, PIRQRC[A:D] at 0x60-0x63: bit 7 IRQROUTEEN = 1 disables the route,
 * bits 3:0 the IRQ; IRQ 0-2, 8 and 13 are reserved and route nowhere).
 *
 * Root-bus slot S pin P (0 = INTA#) drives PIRQ (S - 1 + P) mod 4, the wiring
 * QEMU's i440FX board has (pci_slot_get_pirq) and SeaBIOS assumes. Lines are
 * level triggered and shared: an IRQ is high while any source on any PIRQ
 * routed to it is asserted. The IRQ goes to KVM's PIC and IOAPIC pin of the
 * same number (KVM's default routing of GSIs 0-15).
 */
import type { IrqLine } from '@tsvmm/core';
import type { PciInterruptRouter } from '@tsvmm/pci';

export const PIIX_PIRQ_COUNT = 4;
/** PIRQRC reset value: routing disabled (82371SB §2.2.8) */
export const PIIX_PIRQRC_DISABLED = 0x80;
const RESERVED_IRQS = new Set([0, 1, 2, 8, 13]);

/** The PIRQ a root-bus slot's pin drives. */
export function piixPirqOf(slot: number, pin: number): number {
  return (slot - 1 + pin) & 3;
}

export class PiixPirqRouter implements PciInterruptRouter {
  private readonly routes: number[] = new Array<number>(PIIX_PIRQ_COUNT).fill(PIIX_PIRQRC_DISABLED);
  /** asserted sources and the PIRQ each drives */
  private readonly asserted = new Map<object, number>();
  /** IRQs this router drives high now */
  private readonly high = new Set<number>();

  constructor(private readonly irqLine: (irq: number) => Pick<IrqLine, 'raise' | 'lower'>) {}

  setIntx(source: object, slot: number, pin: number, level: boolean): void {
    if (level) this.asserted.set(source, piixPirqOf(slot, pin));
    else this.asserted.delete(source);
    this.refresh();
  }

  /** A PIRQRC register changed. */
  setRoute(pirq: number, value: number): void {
    if (pirq < 0 || pirq >= PIIX_PIRQ_COUNT) return;
    this.routes[pirq] = value & 0xff;
    this.refresh();
  }

  /** The ISA IRQ a PIRQ is routed to, or undefined (disabled or reserved). */
  irqOf(pirq: number): number | undefined {
    const v = this.routes[pirq] ?? PIIX_PIRQRC_DISABLED;
    if (v & 0x80) return undefined;
    const irq = v & 0x0f;
    return RESERVED_IRQS.has(irq) ? undefined : irq;
  }

  /** Whether a PIRQ line is asserted by any source. */
  pirqLevel(pirq: number): boolean {
    for (const p of this.asserted.values()) if (p === pirq) return true;
    return false;
  }

  /** Drop every source (machine reset: devices deassert). */
  clear(): void {
    this.asserted.clear();
    this.refresh();
  }

  private refresh(): void {
    const want = new Set<number>();
    for (const pirq of this.asserted.values()) {
      const irq = this.irqOf(pirq);
      if (irq !== undefined) want.add(irq);
    }
    for (const irq of this.high) {
      if (!want.has(irq)) {
        this.high.delete(irq);
        this.irqLine(irq).lower();
      }
    }
    for (const irq of want) {
      if (!this.high.has(irq)) {
        this.high.add(irq);
        this.irqLine(irq).raise();
      }
    }
  }
}
