/* virtio-blk I/O while the VMM's main thread is blocked (ARCHITECTURE.md
 * "Runtime model": the data plane needs no main-thread work per request).
 *
 * With -smp 2: the AP writes the busy count to the test-only busy port
 * (tsvmm's `tsvmm-test-busy` device, whose handler blocks the main JS thread
 * for count x 10 ms); that `out` does not return until the main thread is
 * free again, so the AP's flag says whether the main thread is still blocked.
 * Meanwhile the BSP writes 64 KiB, flushes and reads them back through the
 * polling driver — kicks are ioeventfds and completions are polled, so no
 * request needs a VM exit handled in JS — and notes for each request whether
 * it completed while the AP's write was still pending. Time comes from the
 * TSC (no exits) calibrated against the RTC before the busy period.
 *
 * Command line:
 *   busy=N            write N to the busy port (0: no busy device, e.g. on QEMU)
 *   expect_during=1   the I/O must complete while the main thread is blocked
 *                     (a data plane on an iothread); 0: it must not (the main
 *                     thread serves the queue — the negative control)
 */
#include "kit.h"
#include "virtio.h"
#include "virtio_blk.h"

#define BUSY_PORT 0x5f0
#define IO_BYTES 0x10000
#define IO_SECTOR 4096

static struct virtio_dev dev;
static struct virtq vq;
/* 1: started, 2: about to write the busy port, 3: the write returned */
static volatile uint32_t ap_state;
static volatile uint32_t ap_go;
static uint16_t busy_units;

static void ap_main(void)
{
	ap_state = 1;
	/* wait until the BSP is done with port I/O of its own: its exits would wait for the blocked main thread too */
	while (!ap_go)
		cpu_relax();
	ap_state = 2;
	outw(BUSY_PORT, busy_units);
	ap_state = 3;
}

/* Submits one request and polls for it; *during tells whether it completed while the AP was still blocked. */
static int request(uint32_t type, uint64_t sector, uint32_t buf, uint32_t len, int *during)
{
	static struct blk_slot s;
	static int ready;
	if (!ready) {
		blk_slot_init(&s);
		ready = 1;
	}
	if (blk_submit(&vq, &s, type, sector, buf, len, len ? 4 : 0, 0) < 0)
		return -3;
	virtq_kick(&dev, &vq);
	uint32_t l;
	int id = virtq_wait_used(&vq, &l, 60000);
	*during = ap_state == 2;
	if (id != s.head)
		return -1;
	return *(volatile uint8_t *)s.status;
}

int guest_main(void)
{
	const char *cl = multiboot_cmdline();
	busy_units = (uint16_t)cmdline_get_u32(cl, "busy", 0);
	uint32_t expect_during = cmdline_get_u32(cl, "expect_during", 1);

	tap_plan(busy_units ? 10 : 6);
	virtio_mem_init(0x01000000, 0x00800000);
	uint32_t wbuf = virtio_alloc(IO_BYTES, 4096), rbuf = virtio_alloc(IO_BYTES, 4096);
	int found = virtio_find(VIRTIO_ID_BLOCK, 0, &dev);
	tap_ok(found == 0 && virtio_init(&dev, 1ull << VIRTIO_BLK_F_FLUSH) == 0 && virtq_setup(&dev, &vq, 0, 64) == 0,
	       "virtio-blk device found and set up");
	if (found)
		tap_done();
	virtio_driver_ok(&dev);
	volatile uint32_t *w = (volatile uint32_t *)wbuf;
	for (uint32_t i = 0; i < IO_BYTES / 4; i++)
		w[i] = blk_guest_word(4 * i, 77);
	memset((void *)rbuf, 0, IO_BYTES);
	tap_diag("TSC: %u kHz", (uint32_t)tsc_per_ms());

	/* From here until the AP's write returns, no port I/O and no printing on
	 * the BSP: every such exit would wait for the blocked main thread. */
	uint32_t in_write = 0, started = 0;
	if (busy_units) {
		started = smp_start_aps(ap_main) == 0;
		uint64_t t0 = rdtsc();
		while (ap_state == 0 && tsc_ms_since(t0) < 5000)
			cpu_relax();
		ap_go = 1;
		/* let the AP's port write reach the main thread and block it */
		t0 = rdtsc();
		while (tsc_ms_since(t0) < 300)
			cpu_relax();
		in_write = ap_state;
	}

	int d1 = 0, d2 = 0, d3 = 0;
	uint64_t t0 = rdtsc();
	int s1 = request(VIRTIO_BLK_T_OUT, IO_SECTOR, wbuf, IO_BYTES, &d1);
	int s2 = request(VIRTIO_BLK_T_FLUSH, 0, 0, 0, &d2);
	int s3 = request(VIRTIO_BLK_T_IN, IO_SECTOR, rbuf, IO_BYTES, &d3);
	uint32_t ms = tsc_ms_since(t0);
	uint32_t after_io = ap_state;
	if (busy_units) {
		tap_ok(started, "AP started");
		tap_okf(in_write == 2, "the AP is inside its busy-port write when the I/O starts (state %u)", in_write);
	}
	tap_diag("AP state when the I/O finished: %u", after_io);
	tap_diag("write, flush, read took %u ms; completed during the busy period: %d %d %d", ms, d1, d2, d3);
	tap_is(s1, VIRTIO_BLK_S_OK, "64 KiB write completes");
	tap_is(s2, VIRTIO_BLK_S_OK, "flush completes");
	tap_is(s3, VIRTIO_BLK_S_OK, "64 KiB read completes");
	tap_ok(memcmp((const void *)wbuf, (const void *)rbuf, IO_BYTES) == 0, "the read returns what was written");

	if (busy_units) {
		int all = d1 && d2 && d3;
		if (expect_during)
			tap_ok(all, "all three requests completed while the main thread was blocked");
		else
			tap_ok(!d1, "the first request waited until the main thread was free again (queue on the main thread)");
		uint64_t t1 = rdtsc();
		while (ap_state != 3 && tsc_ms_since(t1) < 60000)
			cpu_relax();
		tap_okf(ap_state == 3, "the AP's busy-port write returned afterwards (state %u)", ap_state);
	}
	tap_okf(!(virtio_status(&dev) & VIRTIO_S_NEEDS_RESET), "device status 0x%02x has no DEVICE_NEEDS_RESET", virtio_status(&dev));
	tap_done();
}
