/* bench/blk's guest: virtio-blk throughput with the polling driver at a
 * fixed queue depth (OASIS VIRTIO 1.2 §5.2). Not a test: it prints one
 * result line per mode and powers off through isa-debug-exit.
 *
 * Command line:
 *   mode=seqread|seqwrite|randread   (default seqread)
 *   bs=BYTES                          request size (default 1 MiB; 4096 for randread)
 *   qd=N                              requests in flight (default 32)
 *   count=N                           requests to complete (default 256)
 *   sectors=N                         the disk's size, for random offsets (default: from config)
 *
 * Time is the TSC, calibrated against the RTC before the run (no exits
 * while measuring); kicks honour VIRTQ_USED_F_NO_NOTIFY; no interrupts.
 * Output: "bench mode=... bs=... qd=... count=... errors=... ms=..." on COM1;
 * boot with enough RAM for qd x bs of buffers above 16 MiB (-m 256). */
#include "kit.h"
#include "virtio.h"
#include "virtio_blk.h"

#define MAX_QD 64

static struct virtio_dev dev;
static struct virtq vq;
static struct blk_slot slots[MAX_QD];
static int slot_of_head[512];

static uint32_t lcg = 12345;
static uint32_t rnd(void)
{
	lcg = lcg * 1664525u + 1013904223u;
	return lcg;
}

int guest_main(void)
{
	const char *cl = multiboot_cmdline();
	char mode[16] = "seqread";
	cmdline_get(cl, "mode", mode, sizeof(mode));
	int randread = strcmp(mode, "randread") == 0;
	int write = strcmp(mode, "seqwrite") == 0;
	uint32_t bs = cmdline_get_u32(cl, "bs", randread ? 4096 : 0x100000);
	uint32_t qd = cmdline_get_u32(cl, "qd", 32);
	uint32_t count = cmdline_get_u32(cl, "count", 256);
	if (qd > MAX_QD)
		qd = MAX_QD;

	virtio_mem_init(0x01000000, 0x0a000000);
	if (virtio_find(VIRTIO_ID_BLOCK, 0, &dev) || virtio_init(&dev, 1ull << VIRTIO_BLK_F_FLUSH) || virtq_setup(&dev, &vq, 0, 256)) {
		kprintf("bench error: no usable virtio-blk device\n");
		debug_exit(1);
	}
	virtio_driver_ok(&dev);
	uint64_t sectors = cmdline_get_u32(cl, "sectors", 0);
	if (!sectors)
		sectors = virtio_cfg64(&dev, VIRTIO_BLK_CFG_CAPACITY);
	uint32_t bufs[MAX_QD];
	for (uint32_t i = 0; i < qd; i++) {
		bufs[i] = virtio_alloc(bs, 4096);
		if (!bufs[i] || blk_slot_init(&slots[i])) {
			kprintf("bench error: out of guest memory for qd=%u bs=%u\n", qd, bs);
			debug_exit(1);
		}
	}
	uint32_t span = (uint32_t)sectors / (bs / 512); /* requests that fit the disk (below 2 TiB) */
	uint32_t next_seq = 0;
	tsc_per_ms(); /* calibrate before timing */

	uint32_t type = write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN;
	uint32_t submitted = 0, done = 0, errors = 0;
	uint64_t t0 = rdtsc();
	for (uint32_t i = 0; i < qd && submitted < count; i++, submitted++) {
		uint64_t sector = (uint64_t)(randread ? rnd() % span : next_seq++ % span) * (bs / 512);
		int head = blk_submit(&vq, &slots[i], type, sector, bufs[i], bs, 1, 0);
		slot_of_head[head] = i;
	}
	virtq_kick(&dev, &vq);
	int unkicked = 0;
	while (done < count) {
		uint32_t len;
		int id = virtq_get_used(&vq, &len);
		if (id < 0) {
			cpu_relax();
			continue;
		}
		int s = slot_of_head[id];
		if (*(volatile uint8_t *)slots[s].status != VIRTIO_BLK_S_OK)
			errors++;
		done++;
		if (submitted < count) {
			uint64_t sector = (uint64_t)(randread ? rnd() % span : next_seq++ % span) * (bs / 512);
			int head = blk_submit(&vq, &slots[s], type, sector, bufs[s], bs, 1, 0);
			slot_of_head[head] = s;
			submitted++;
			unkicked = 1;
		}
		/* notify once every completion seen so far has been resubmitted */
		if (unkicked && virtq_used_idx(&vq) == vq.last_used) {
			virtq_kick(&dev, &vq);
			unkicked = 0;
		}
	}
	uint32_t ms = tsc_ms_since(t0);
	uint32_t khz = (uint32_t)tsc_per_ms();
	kprintf("bench mode=%s bs=%u qd=%u count=%u errors=%u ms=%u tsc_khz=%u\n", mode, bs, qd, count, errors, ms, khz);
	debug_exit(errors ? 1 : 0);
}
