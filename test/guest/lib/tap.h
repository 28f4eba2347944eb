/* TAP (Test Anything Protocol, version 12 subset) on the serial port:
 *   1..N
 *   ok 1 - description
 *   not ok 2 - description
 *   # diagnostic
 * tap_done() ends the guest: debug-exit KIT_EXIT_PASS when N tests ran and
 * all passed, KIT_EXIT_FAIL otherwise. */
#ifndef KIT_TAP_H
#define KIT_TAP_H

#include <stdint.h>

void tap_plan(int n);
int tap_ok(int cond, const char *desc);
int tap_okf(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* ok when got == expected; a failure prints both as a diagnostic. */
int tap_is(uint64_t got, uint64_t expected, const char *desc);
void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
__attribute__((noreturn)) void tap_done(void);

#endif
