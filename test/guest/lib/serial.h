/* 16550A UART on COM1, polled. Register names follow the 16550 data sheet. */
#ifndef KIT_SERIAL_H
#define KIT_SERIAL_H

#include <stdint.h>

#define COM1 0x3f8
#define UART_RBR 0 /* receive buffer (read, DLAB=0) */
#define UART_THR 0 /* transmit holding (write, DLAB=0) */
#define UART_DLL 0 /* divisor latch low (DLAB=1) */
#define UART_IER 1 /* interrupt enable (DLAB=0) */
#define UART_DLM 1 /* divisor latch high (DLAB=1) */
#define UART_IIR 2 /* interrupt identification (read) */
#define UART_FCR 2 /* FIFO control (write) */
#define UART_LCR 3 /* line control; bit 7 = DLAB */
#define UART_MCR 4 /* modem control */
#define UART_LSR 5 /* line status */
#define UART_MSR 6 /* modem status */
#define UART_SCR 7 /* scratch */

#define UART_LSR_DR 0x01   /* data ready */
#define UART_LSR_THRE 0x20 /* transmit holding register empty */
#define UART_LSR_TEMT 0x40 /* transmitter empty */
#define UART_LCR_DLAB 0x80

/* 115200 8N1, FIFOs on; IRQs off. */
void serial_init(void);
void serial_putc(char c);
void serial_write(const char *s);
/* Next received byte, or -1 after `polls` reads of LSR without data. */
int serial_getc_timeout(uint32_t polls);
/* Reads up to a '\n' (not stored; '\r' is dropped). Returns the length, or
 * -1 if nothing arrived within `polls` idle LSR reads. */
int serial_read_line(char *buf, int size, uint32_t polls);

#endif
