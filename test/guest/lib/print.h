/* printf over COM1. Conversions: %d %i %u %x %X %p %s %c %%, the length
 * modifiers l and ll, flags '-' and '0', and a field width. */
#ifndef KIT_PRINT_H
#define KIT_PRINT_H

#include <stdarg.h>
#include <stddef.h>

int kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int kvprintf(const char *fmt, va_list ap);
int kvsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int ksnprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* kprintf takes this lock, so CPUs can print whole lines concurrently. */
void print_lock(void);
void print_unlock(void);

#endif
