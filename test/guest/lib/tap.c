#include "tap.h"
#include "exit.h"
#include "print.h"

static int planned, run, failed;

void tap_plan(int n)
{
	planned = n;
	run = failed = 0;
	kprintf("1..%d\n", n);
}

int tap_ok(int cond, const char *desc)
{
	run++;
	if (!cond)
		failed++;
	kprintf("%sok %d - %s\n", cond ? "" : "not ", run, desc);
	return cond;
}

int tap_okf(int cond, const char *fmt, ...)
{
	char desc[192];
	va_list ap;
	va_start(ap, fmt);
	kvsnprintf(desc, sizeof(desc), fmt, ap);
	va_end(ap);
	return tap_ok(cond, desc);
}

int tap_is(uint64_t got, uint64_t expected, const char *desc)
{
	int ok = tap_ok(got == expected, desc);
	if (!ok)
		kprintf("#   got 0x%llx (%llu), expected 0x%llx (%llu)\n", (unsigned long long)got,
			(unsigned long long)got, (unsigned long long)expected,
			(unsigned long long)expected);
	return ok;
}

void tap_diag(const char *fmt, ...)
{
	char line[256];
	va_list ap;
	va_start(ap, fmt);
	kvsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	kprintf("# %s\n", line);
}

void tap_done(void)
{
	if (run != planned)
		kprintf("# planned %d tests but ran %d\n", planned, run);
	debug_exit(failed == 0 && run == planned ? KIT_EXIT_PASS : KIT_EXIT_FAIL);
}
