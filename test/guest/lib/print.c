#include "print.h"
#include "serial.h"
#include "io.h"
#include <stdint.h>

struct sink {
	char *buf; /* NULL: serial */
	size_t size, len;
};

static void emit(struct sink *s, char c)
{
	if (!s->buf)
		serial_putc(c);
	else if (s->len + 1 < s->size)
		s->buf[s->len] = c;
	s->len++;
}

/* Divides *n by `base` in place and returns the remainder, without the
 * libgcc helpers (__udivdi3) that a 32-bit freestanding link lacks. */
static unsigned divmod64(uint64_t *n, unsigned base)
{
#ifdef __x86_64__
	unsigned r = (unsigned)(*n % base);
	*n /= base;
	return r;
#else
	uint32_t hi = (uint32_t)(*n >> 32), lo = (uint32_t)*n;
	uint32_t qhi = hi / base, r = hi % base, qlo;
	/* r < base, so the 64/32 divide cannot overflow. */
	__asm__("divl %4" : "=a"(qlo), "=d"(r) : "a"(lo), "d"(r), "rm"(base));
	*n = ((uint64_t)qhi << 32) | qlo;
	return r;
#endif
}

static void emit_number(struct sink *s, uint64_t v, unsigned base, int negative, int upper,
			int width, char pad, int left)
{
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	char tmp[24];
	int n = 0;
	do
		tmp[n++] = digits[divmod64(&v, base)];
	while (v);
	int len = n + negative;
	if (negative && pad == '0')
		emit(s, '-');
	if (!left)
		for (; width > len; width--)
			emit(s, pad);
	if (negative && pad != '0')
		emit(s, '-');
	while (n)
		emit(s, tmp[--n]);
	if (left)
		for (; width > len; width--)
			emit(s, ' ');
}

static void format(struct sink *s, const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			emit(s, *fmt);
			continue;
		}
		fmt++;
		int left = 0, width = 0, lng = 0;
		char pad = ' ';
		for (;; fmt++) {
			if (*fmt == '-')
				left = 1;
			else if (*fmt == '0')
				pad = '0';
			else
				break;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l')
			lng++, fmt++;
		if (left)
			pad = ' ';
		switch (*fmt) {
		case 'd':
		case 'i': {
			int64_t v = lng >= 2 ? va_arg(ap, long long) : lng ? va_arg(ap, long) : va_arg(ap, int);
			emit_number(s, v < 0 ? -(uint64_t)v : (uint64_t)v, 10, v < 0, 0, width, pad, left);
			break;
		}
		case 'u':
		case 'x':
		case 'X': {
			uint64_t v = lng >= 2 ? va_arg(ap, unsigned long long)
				     : lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
			emit_number(s, v, *fmt == 'u' ? 10 : 16, 0, *fmt == 'X', width, pad, left);
			break;
		}
		case 'p':
			emit(s, '0');
			emit(s, 'x');
			emit_number(s, (uintptr_t)va_arg(ap, void *), 16, 0, 0, width, pad, left);
			break;
		case 's': {
			const char *str = va_arg(ap, const char *);
			if (!str)
				str = "(null)";
			int len = 0;
			while (str[len])
				len++;
			if (!left)
				for (; width > len; width--)
					emit(s, ' ');
			while (*str)
				emit(s, *str++);
			if (left)
				for (; width > len; width--)
					emit(s, ' ');
			break;
		}
		case 'c':
			emit(s, (char)va_arg(ap, int));
			break;
		case '%':
			emit(s, '%');
			break;
		case 0:
			return;
		default:
			emit(s, '%');
			emit(s, *fmt);
		}
	}
}

static volatile uint32_t lock_word;

void print_lock(void)
{
	while (__atomic_exchange_n(&lock_word, 1, __ATOMIC_ACQUIRE))
		cpu_relax();
}

void print_unlock(void)
{
	__atomic_store_n(&lock_word, 0, __ATOMIC_RELEASE);
}

int kvprintf(const char *fmt, va_list ap)
{
	struct sink s = { 0, 0, 0 };
	print_lock();
	format(&s, fmt, ap);
	print_unlock();
	return (int)s.len;
}

int kprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = kvprintf(fmt, ap);
	va_end(ap);
	return n;
}

int kvsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
	struct sink s = { buf, size, 0 };
	format(&s, fmt, ap);
	if (size)
		buf[s.len < size ? s.len : size - 1] = 0;
	return (int)s.len;
}

int ksnprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = kvsnprintf(buf, size, fmt, ap);
	va_end(ap);
	return n;
}
