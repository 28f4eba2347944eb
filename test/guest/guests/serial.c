/* 16550A UART on COM1: registers, then a line echoed from the host.
 * Command line: line=<text the harness sends after "# ready for input">. */
#include "kit.h"

#define PORT(r) (COM1 + UART_##r)

int guest_main(void)
{
	tap_plan(12);

	outb(PORT(SCR), 0x5a);
	uint8_t scr1 = inb(PORT(SCR));
	outb(PORT(SCR), 0xa5);
	uint8_t scr2 = inb(PORT(SCR));
	tap_ok(scr1 == 0x5a && scr2 == 0xa5, "scratch register keeps what was written");

	/* Wait for our own earlier output to drain before looking at LSR. */
	for (int i = 0; i < 10000 && !(inb(PORT(LSR)) & UART_LSR_TEMT); i++)
		;
	uint8_t lsr = inb(PORT(LSR));
	tap_ok((lsr & (UART_LSR_THRE | UART_LSR_TEMT)) == (UART_LSR_THRE | UART_LSR_TEMT),
	       "LSR reports transmitter empty (THRE and TEMT)");
	tap_ok(!(lsr & UART_LSR_DR), "LSR reports no data ready before input");
	tap_ok(!(lsr & 0x1e), "LSR reports no overrun, parity, framing error or break");

	outb(PORT(LCR), UART_LCR_DLAB | 0x03);
	outb(PORT(DLL), 0x34);
	outb(PORT(DLM), 0x12);
	uint8_t dll = inb(PORT(DLL)), dlm = inb(PORT(DLM));
	outb(PORT(DLL), 0x01);
	outb(PORT(DLM), 0x00);
	outb(PORT(LCR), 0x03);
	tap_ok(dll == 0x34 && dlm == 0x12, "divisor latch reads back with DLAB set");
	tap_is(inb(PORT(LCR)), 0x03, "LCR reads back 8N1 with DLAB clear");

	outb(PORT(IER), 0x00);
	tap_is(inb(PORT(IIR)) & 0x0f, 0x01, "IIR reports no interrupt pending with IER clear");
	outb(PORT(IER), 0x0f);
	tap_is(inb(PORT(IER)), 0x0f, "IER keeps its four enable bits");
	outb(PORT(IER), 0x02); /* ETBEI: THR empty raises an interrupt */
	uint8_t iir1 = inb(PORT(IIR)), iir2 = inb(PORT(IIR));
	outb(PORT(IER), 0x00);
	tap_is(iir1 & 0x0f, 0x02, "IIR identifies THR empty once ETBEI is enabled");
	tap_is(iir2 & 0x0f, 0x01, "reading IIR clears the THR-empty identification");

	outb(PORT(FCR), 0x00);
	uint8_t iir_off = inb(PORT(IIR));
	outb(PORT(FCR), 0x07);
	uint8_t iir_on = inb(PORT(IIR));
	tap_ok((iir_off & 0xc0) == 0x00 && (iir_on & 0xc0) == 0xc0,
	       "IIR bits 6-7 follow FCR FIFO enable (00 off, 11 on)");

	char expected[64], line[64];
	if (cmdline_get(multiboot_cmdline(), "line", expected, sizeof(expected)) < 0)
		expected[0] = 0;
	kprintf("# ready for input\n");
	int n = serial_read_line(line, sizeof(line), 500000);
	if (n >= 0)
		kprintf("echo: %s\n", line);
	tap_okf(n >= 0 && strcmp(line, expected) == 0, "received the line the host sent (%s)",
		expected);
	tap_done();
}
