/* virtio-blk (OASIS VIRTIO 1.2 §5.2) through the polling driver: reads of
 * the pattern the host wrote, writes read back (the host checks the file
 * afterwards), indirect chains, flush, GET_ID, range and type errors,
 * discard and write-zeroes, read-only drives and multiqueue.
 *
 * Command line:
 *   sectors=N     expected capacity (512-byte sectors)
 *   serial=S      expected GET_ID string
 *   ro=1          the drive is read-only
 *   discard=1     the drive punches holes (discard=unmap): discard and write-zeroes tests
 *   mq=N          the device has N queues; requests go to each of them
 *   event_idx=1   negotiate VIRTIO_F_EVENT_IDX
 *   devs=N        N virtio-blk devices: devices 1..N-1 each write 4 KiB at
 *                 sector 256 (seed 20+k) and read it back (the host checks)
 *   ro_discard=S  the status a discard on a read-only drive gets (default IOERR, as the
 *                 spec asks for write requests; QEMU answers OK: ro_discard=0)
 *
 * Layout the host checks: sector 64 (8 KiB, seed 1) and sector 2048 (64
 * KiB, seed 2) hold blk_guest_word data; with discard, 4 MiB at sector 8192
 * are discarded, 2 MiB at sector 16384 and 4 KiB at sector 24576 are zeroed;
 * with mq, 4 KiB at sector 128 + 8*q (seed 10+q) were written on queue q.
 */
#include "kit.h"
#include "virtio.h"
#include "virtio_blk.h"

static struct virtio_dev dev;
static struct virtq vqs[4];
static uint32_t buf, buf2;

static int check_host(uint32_t b, uint64_t sector, uint32_t len)
{
	const volatile uint32_t *w = (const volatile uint32_t *)b;
	uint32_t base = (uint32_t)(sector * 512);
	for (uint32_t i = 0; i < len / 4; i++)
		if (w[i] != blk_host_word(base + 4 * i)) {
			tap_diag("word %u at byte %u: 0x%08x, expected 0x%08x", i, base + 4 * i, w[i], blk_host_word(base + 4 * i));
			return 0;
		}
	return 1;
}

static void fill_guest(uint32_t b, uint32_t len, uint32_t seed)
{
	volatile uint32_t *w = (volatile uint32_t *)b;
	for (uint32_t i = 0; i < len / 4; i++)
		w[i] = blk_guest_word(4 * i, seed);
}

static int check_guest(uint32_t b, uint32_t len, uint32_t seed)
{
	const volatile uint32_t *w = (const volatile uint32_t *)b;
	for (uint32_t i = 0; i < len / 4; i++)
		if (w[i] != blk_guest_word(4 * i, seed)) {
			tap_diag("word %u: 0x%08x, expected 0x%08x", i, w[i], blk_guest_word(4 * i, seed));
			return 0;
		}
	return 1;
}

static int all_zero(uint32_t b, uint32_t len)
{
	const volatile uint32_t *w = (const volatile uint32_t *)b;
	for (uint32_t i = 0; i < len / 4; i++)
		if (w[i])
			return 0;
	return 1;
}

static void scribble(uint32_t b, uint32_t len) { memset((void *)b, 0xcc, len); }

int guest_main(void)
{
	const char *cl = multiboot_cmdline();
	uint32_t sectors = cmdline_get_u32(cl, "sectors", 0);
	int ro = cmdline_get_u32(cl, "ro", 0) != 0;
	int discard = cmdline_get_u32(cl, "discard", 0) != 0;
	uint32_t mq = cmdline_get_u32(cl, "mq", 0);
	uint32_t devs = cmdline_get_u32(cl, "devs", 1);
	/* QEMU drops discards on a drive without discard=unmap before checking read-only, so it answers OK */
	uint32_t ro_discard = cmdline_get_u32(cl, "ro_discard", VIRTIO_BLK_S_IOERR);
	char serial[32] = {0};
	int have_serial = cmdline_get(cl, "serial", serial, sizeof(serial)) >= 0;
	uint64_t wanted = 1ull << VIRTIO_F_INDIRECT_DESC | 1ull << VIRTIO_BLK_F_FLUSH | 1ull << VIRTIO_BLK_F_BLK_SIZE |
			  1ull << VIRTIO_BLK_F_SEG_MAX | 1ull << VIRTIO_BLK_F_RO | 1ull << VIRTIO_BLK_F_DISCARD |
			  1ull << VIRTIO_BLK_F_WRITE_ZEROES | 1ull << VIRTIO_BLK_F_MQ;
	if (cmdline_get_u32(cl, "event_idx", 0))
		wanted |= 1ull << VIRTIO_F_EVENT_IDX;
	if (mq > 4)
		mq = 4;

	int plan = 11;
	plan += ro ? 5 : 11;
	if (discard && !ro)
		plan += 7;
	if (mq)
		plan += 2 + 2 * mq;
	if (devs > 1)
		plan += devs - 1;
	tap_plan(plan);

	virtio_mem_init(0x01000000, 0x02000000);
	buf = virtio_alloc(0x10000, 4096);
	buf2 = virtio_alloc(0x10000, 4096);
	int found = virtio_find(VIRTIO_ID_BLOCK, 0, &dev);
	tap_ok(found == 0, "found a virtio block device");
	if (found)
		tap_done();
	tap_diag("00:%02x.0 device id 0x%04x (%s)", dev.dev, dev.device_id, dev.transitional ? "transitional" : "modern");
	tap_ok(virtio_init(&dev, wanted) == 0, "feature negotiation (FEATURES_OK stays set)");
	tap_ok(virtio_has(&dev, VIRTIO_BLK_F_FLUSH), "VIRTIO_BLK_F_FLUSH is offered");
	tap_is(virtio_has(&dev, VIRTIO_BLK_F_RO), ro, "VIRTIO_BLK_F_RO matches the drive");
	uint64_t cap = virtio_cfg64(&dev, VIRTIO_BLK_CFG_CAPACITY);
	tap_is(cap, sectors, "capacity in 512-byte sectors");
	tap_okf(!virtio_has(&dev, VIRTIO_BLK_F_SEG_MAX) || virtio_cfg32(&dev, VIRTIO_BLK_CFG_SEG_MAX) >= 16, "seg_max %u allows 16-segment requests",
		virtio_cfg32(&dev, VIRTIO_BLK_CFG_SEG_MAX));

	uint32_t nq = mq ? mq : 1;
	if (mq) {
		tap_ok(virtio_has(&dev, VIRTIO_BLK_F_MQ), "VIRTIO_BLK_F_MQ is offered");
		tap_is(virtio_cfg16(&dev, VIRTIO_BLK_CFG_NUM_QUEUES), mq, "num_queues in the device configuration");
	}
	int setup_ok = 1;
	for (uint32_t i = 0; i < nq; i++)
		setup_ok &= virtq_setup(&dev, &vqs[i], i, 64) == 0;
	tap_ok(setup_ok, "request queues set up");
	virtio_driver_ok(&dev);
	struct virtq *q = &vqs[0];

	scribble(buf, 4096);
	tap_ok(blk_do(&dev, q, VIRTIO_BLK_T_IN, 0, buf, 4096, 1, 0) == VIRTIO_BLK_S_OK && check_host(buf, 0, 4096),
	       "reading sector 0-7 returns the image's data");
	scribble(buf, 4096);
	tap_ok(blk_do(&dev, q, VIRTIO_BLK_T_IN, sectors - 8, buf, 4096, 2, 0) == VIRTIO_BLK_S_OK && check_host(buf, sectors - 8, 4096),
	       "reading the last 4 KiB in two segments returns the image's data");

	if (ro) {
		fill_guest(buf, 4096, 1);
		tap_is(blk_do(&dev, q, VIRTIO_BLK_T_OUT, 64, buf, 4096, 1, 0), VIRTIO_BLK_S_IOERR, "a write to a read-only drive fails with VIRTIO_BLK_S_IOERR");
		scribble(buf, 4096);
		tap_ok(blk_do(&dev, q, VIRTIO_BLK_T_IN, 64, buf, 4096, 1, 0) == VIRTIO_BLK_S_OK && check_host(buf, 64, 4096),
		       "the refused write left the data as it was");
		tap_is(blk_do_dwz(&dev, q, VIRTIO_BLK_T_WRITE_ZEROES, 64, 8, 0), VIRTIO_BLK_S_IOERR, "write-zeroes on a read-only drive fails with IOERR");
		tap_is(blk_do_dwz(&dev, q, VIRTIO_BLK_T_DISCARD, 64, 8, 0), ro_discard, "discard on a read-only drive gets the expected status (IOERR; QEMU: OK)");
		tap_is(blk_do(&dev, q, VIRTIO_BLK_T_FLUSH, 0, 0, 0, 0, 0), VIRTIO_BLK_S_OK, "flush on a read-only drive succeeds");
	} else {
		fill_guest(buf, 8192, 1);
		tap_is(blk_do(&dev, q, VIRTIO_BLK_T_OUT, 64, buf, 8192, 1, 0), VIRTIO_BLK_S_OK, "writing 8 KiB at sector 64");
		scribble(buf2, 8192);
		tap_ok(blk_do(&dev, q, VIRTIO_BLK_T_IN, 64, buf2, 8192, 1, 0) == VIRTIO_BLK_S_OK && check_guest(buf2, 8192, 1), "reading it back");
		int indirect = virtio_has(&dev, VIRTIO_F_INDIRECT_DESC);
		fill_guest(buf, 0x10000, 2);
		tap_is(blk_do(&dev, q, VIRTIO_BLK_T_OUT, 2048, buf, 0x10000, 16, indirect), VIRTIO_BLK_S_OK,
		       "writing 64 KiB at sector 2048 in 16 segments through an indirect table");
		scribble(buf2, 0x10000);
		tap_ok(blk_do(&dev, q, VIRTIO_BLK_T_IN, 2048, buf2, 0x10000, 1, 0) == VIRTIO_BLK_S_OK && check_guest(buf2, 0x10000, 2),
		       "reading the 64 KiB back in one segment");
		tap_is(blk_do(&dev, q, VIRTIO_BLK_T_FLUSH, 0, 0, 0, 0, 0), VIRTIO_BLK_S_OK, "flush");
		memset((void *)buf, 0, 32);
		tap_is(blk_do(&dev, q, VIRTIO_BLK_T_GET_ID, 0, buf, VIRTIO_BLK_ID_BYTES, 1, 0), VIRTIO_BLK_S_OK, "GET_ID");
		tap_okf(!have_serial || strncmp((const char *)buf, serial, VIRTIO_BLK_ID_BYTES) == 0, "GET_ID returns the serial ('%s')",
			(const char *)buf);
		tap_is(blk_do(&dev, q, VIRTIO_BLK_T_IN, sectors, buf, 512, 1, 0), VIRTIO_BLK_S_IOERR, "a read past the end fails with IOERR");
		tap_is(blk_do(&dev, q, VIRTIO_BLK_T_OUT, sectors - 1, buf, 1024, 1, 0), VIRTIO_BLK_S_IOERR, "a write across the end fails with IOERR");
		tap_is(blk_do(&dev, q, 0x7f, 0, buf, 512, 1, 0), VIRTIO_BLK_S_UNSUPP, "an unknown request type gets VIRTIO_BLK_S_UNSUPP");
		tap_is(blk_do(&dev, q, VIRTIO_BLK_T_IN, 1, buf, 100, 1, 0), VIRTIO_BLK_S_IOERR, "a read that is not a multiple of 512 bytes fails with IOERR");
	}

	if (discard && !ro) {
		tap_ok(virtio_has(&dev, VIRTIO_BLK_F_DISCARD) && virtio_has(&dev, VIRTIO_BLK_F_WRITE_ZEROES), "discard and write-zeroes are offered");
		tap_okf(virtio_cfg32(&dev, VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS) >= 8192 && virtio_cfg32(&dev, VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SECTORS) >= 4096,
			"limits allow the requests (max_discard_sectors %u, max_write_zeroes_sectors %u)",
			virtio_cfg32(&dev, VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS), virtio_cfg32(&dev, VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SECTORS));
		tap_is(blk_do_dwz(&dev, q, VIRTIO_BLK_T_DISCARD, 8192, 8192, 0), VIRTIO_BLK_S_OK, "discarding 4 MiB at sector 8192");
		tap_is(blk_do_dwz(&dev, q, VIRTIO_BLK_T_WRITE_ZEROES, 16384, 4096, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP), VIRTIO_BLK_S_OK,
		       "write-zeroes with UNMAP over 2 MiB at sector 16384");
		tap_is(blk_do_dwz(&dev, q, VIRTIO_BLK_T_WRITE_ZEROES, 24576, 8, 0), VIRTIO_BLK_S_OK, "write-zeroes without UNMAP over 4 KiB at sector 24576");
		scribble(buf, 8192);
		int z1 = blk_do(&dev, q, VIRTIO_BLK_T_IN, 16384, buf, 4096, 1, 0) == VIRTIO_BLK_S_OK && all_zero(buf, 4096);
		int z2 = blk_do(&dev, q, VIRTIO_BLK_T_IN, 24576, buf + 4096, 4096, 1, 0) == VIRTIO_BLK_S_OK && all_zero(buf + 4096, 4096);
		tap_ok(z1 && z2, "zeroed ranges read back as zeroes");
		tap_is(blk_do_dwz(&dev, q, VIRTIO_BLK_T_DISCARD, 8192, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP), VIRTIO_BLK_S_UNSUPP,
		       "a discard with the UNMAP flag gets VIRTIO_BLK_S_UNSUPP");
	}

	if (mq) {
		/* Each queue writes its own 4 KiB, then every queue reads all of them back. */
		int ok = 1;
		for (uint32_t i = 0; i < nq; i++) {
			fill_guest(buf + 4096 * i, 4096, 10 + i);
			ok &= blk_do(&dev, &vqs[i], VIRTIO_BLK_T_OUT, 128 + 8 * i, buf + 4096 * i, 4096, 1, 0) == VIRTIO_BLK_S_OK;
			tap_okf(ok, "a write on queue %u completes on queue %u", i, i);
		}
		for (uint32_t i = 0; i < nq; i++) {
			scribble(buf2, 4096 * nq);
			int rd = blk_do(&dev, &vqs[i], VIRTIO_BLK_T_IN, 128, buf2, 4096 * nq, 1, 0) == VIRTIO_BLK_S_OK;
			for (uint32_t k = 0; k < nq; k++)
				rd &= check_guest(buf2 + 4096 * k, 4096, 10 + k);
			tap_okf(rd, "queue %u reads what every queue wrote", i);
		}
	}

	for (uint32_t k = 1; k < devs; k++) {
		static struct virtio_dev other;
		static struct virtq oq;
		int ok = virtio_find(VIRTIO_ID_BLOCK, k, &other) == 0 && virtio_init(&other, 1ull << VIRTIO_BLK_F_FLUSH) == 0 &&
			 virtq_setup(&other, &oq, 0, 16) == 0;
		if (ok) {
			virtio_driver_ok(&other);
			fill_guest(buf, 4096, 20 + k);
			scribble(buf2, 4096);
			ok = blk_do(&other, &oq, VIRTIO_BLK_T_OUT, 256, buf, 4096, 1, 0) == VIRTIO_BLK_S_OK &&
			     blk_do(&other, &oq, VIRTIO_BLK_T_IN, 256, buf2, 4096, 1, 0) == VIRTIO_BLK_S_OK && check_guest(buf2, 4096, 20 + k);
		}
		tap_okf(ok, "virtio-blk device %u (00:%02x.0) writes and reads back 4 KiB", k, other.dev);
	}
	tap_okf(!(virtio_status(&dev) & VIRTIO_S_NEEDS_RESET), "device status 0x%02x has no DEVICE_NEEDS_RESET", virtio_status(&dev));
	virtio_reset(&dev);
	tap_is(virtio_status(&dev), 0, "a reset completes: status reads 0");
	tap_done();
}
