/**
 * Interrupt lines. A device raises a GSI through an IrqLine; the machine routes
 * it to KVM's in-kernel irqchip (KVM_IRQ_LINE), which feeds both the 8259 PICs
 * and the IOAPIC for GSIs 0-15 (KVM api.rst 4.25 KVM_IRQ_LINE).
 */
export interface InterruptSink {
  setIrq(gsi: number, level: boolean): void;
}

export class IrqLine {
  private level = false;
  constructor(
    private readonly sink: InterruptSink,
    readonly gsi: number,
  ) {}

  set(level: boolean): void {
    if (level === this.level) return;
    this.level = level;
    this.sink.setIrq(this.gsi, level);
  }

  raise(): void {
    this.set(true);
  }

  lower(): void {
    this.set(false);
  }

  /** An edge: raise then lower (ISA edge-triggered sources such as the PIT). */
  pulse(): void {
    this.sink.setIrq(this.gsi, true);
    this.sink.setIrq(this.gsi, false);
    this.level = false;
  }

  get asserted(): boolean {
    return this.level;
  }
}
