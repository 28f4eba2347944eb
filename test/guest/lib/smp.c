#include "smp.h"
#include "io.h"
#include "kstring.h"
#include "lapic.h"

extern const char smp_trampoline_start[], smp_trampoline_end[];

static uint8_t ap_stacks[SMP_MAX_APS][SMP_AP_STACK_SIZE] __attribute__((aligned(16)));
uintptr_t smp_ap_stack_next = (uintptr_t)ap_stacks;
void (*volatile smp_ap_entry)(void);

_Static_assert(SMP_AP_STACK_SIZE == 4096, "trampoline.S hardcodes the stack size");

static void delay(uint32_t n)
{
	while (n--)
		io_delay();
}

int smp_start_aps(void (*entry)(void))
{
	smp_ap_entry = entry;
	memcpy((void *)(uintptr_t)SMP_TRAMPOLINE_ADDR, smp_trampoline_start,
	       (size_t)(smp_trampoline_end - smp_trampoline_start));
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	lapic_enable();
	const uint32_t all = LAPIC_ICR_ALL_EXCLUDING_SELF | LAPIC_ICR_LEVEL_ASSERT;
	if (lapic_send_ipi(0, all | LAPIC_ICR_DELIVERY_INIT))
		return -1;
	/* The SDM asks for 10 ms here and 200 us between SIPIs; virtual CPUs do
	 * not need them, and each io_delay() is a VM exit of a few us anyway. */
	delay(1000);
	for (int i = 0; i < 2; i++) {
		if (lapic_send_ipi(0, all | LAPIC_ICR_DELIVERY_STARTUP | (SMP_TRAMPOLINE_ADDR >> 12)))
			return -1;
		delay(200);
	}
	return 0;
}
