#include "serial.h"
#include "io.h"

void serial_init(void)
{
	outb(COM1 + UART_IER, 0x00);
	outb(COM1 + UART_LCR, UART_LCR_DLAB);
	outb(COM1 + UART_DLL, 0x01); /* 115200 baud */
	outb(COM1 + UART_DLM, 0x00);
	outb(COM1 + UART_LCR, 0x03); /* 8N1 */
	outb(COM1 + UART_FCR, 0x07); /* enable and clear both FIFOs */
	outb(COM1 + UART_MCR, 0x03); /* DTR | RTS */
}

void serial_putc(char c)
{
	while (!(inb(COM1 + UART_LSR) & UART_LSR_THRE))
		cpu_relax();
	outb(COM1 + UART_THR, (uint8_t)c);
}

void serial_write(const char *s)
{
	while (*s)
		serial_putc(*s++);
}

int serial_getc_timeout(uint32_t polls)
{
	for (uint32_t i = 0; i < polls; i++)
		if (inb(COM1 + UART_LSR) & UART_LSR_DR)
			return inb(COM1 + UART_RBR);
	return -1;
}

int serial_read_line(char *buf, int size, uint32_t polls)
{
	int n = 0, got = 0;
	for (;;) {
		int c = serial_getc_timeout(polls);
		if (c < 0) {
			if (!got)
				return -1;
			break;
		}
		got = 1;
		if (c == '\n')
			break;
		if (c == '\r')
			continue;
		if (n < size - 1)
			buf[n++] = (char)c;
	}
	buf[n] = 0;
	return n;
}
