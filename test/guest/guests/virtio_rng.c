/* virtio-rng (OASIS VIRTIO 1.2 §5.4 "Entropy Device") through the polling
 * driver: one requestq, device-writable buffers filled with entropy.
 *
 * Command line:
 *   event_idx=1   negotiate VIRTIO_F_EVENT_IDX (default off)
 *   limit=N       the device is rate limited to N bytes per (long) period:
 *                 offer more than N bytes, wait at least one second of RTC
 *                 time, and check exactly N arrived and a buffer is left.
 *   bufs=K        buffers offered in the rate-limit test (default 6, 32 bytes each)
 */
#include "kit.h"
#include "virtio.h"

#define RNG_BUF 64

static struct virtio_dev dev;
static struct virtq vq;

static int all_zero(const uint8_t *p, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

/* Waits until the RTC seconds register has changed twice: at least one second. */
static void wait_rtc_second(void)
{
	for (int k = 0; k < 2; k++) {
		uint8_t s = cmos_read(RTC_SECONDS);
		while (cmos_read(RTC_SECONDS) == s)
			cpu_relax();
	}
}

static void plain_reads(void)
{
	uint32_t buf[4];
	for (int i = 0; i < 4; i++)
		buf[i] = virtio_alloc(RNG_BUF, 64);
	for (int i = 0; i < 4; i++)
		memset((void *)buf[i], 0, RNG_BUF);
	int heads[4];
	for (int i = 0; i < 4; i++) {
		struct vbuf b = {buf[i], RNG_BUF, 1};
		heads[i] = virtq_submit(&vq, &b, 1, 0);
	}
	virtq_kick(&dev, &vq);
	int got = 0, in_order = 1;
	uint32_t total = 0, len = 0;
	for (int i = 0; i < 4; i++) {
		int id = virtq_wait_used(&vq, &len, 5000);
		if (id < 0)
			break;
		if (id != heads[i])
			in_order = 0;
		got++;
		total += len;
		if (len == 0 || len > RNG_BUF)
			tap_diag("used length %u for a %u-byte buffer", len, RNG_BUF);
	}
	tap_is(got, 4, "four entropy requests complete");
	tap_ok(in_order, "entropy buffers are used in the order they were made available");
	tap_okf(total > 0 && total <= 4 * RNG_BUF, "used lengths add up to at most the buffer space (%u)", total);
	int nonzero = 0;
	for (int i = 0; i < 4; i++)
		nonzero += !all_zero((const uint8_t *)buf[i], RNG_BUF);
	tap_is(nonzero, 4, "every buffer holds non-zero bytes");
	tap_ok(memcmp((const void *)buf[0], (const void *)buf[1], RNG_BUF) != 0, "two buffers differ");

	if (virtio_has(&dev, VIRTIO_F_INDIRECT_DESC)) {
		uint32_t table = virtio_alloc(32, 16);
		uint32_t a = virtio_alloc(16, 16), b = virtio_alloc(16, 16);
		memset((void *)a, 0, 16);
		memset((void *)b, 0, 16);
		struct vbuf bufs[2] = {{a, 16, 1}, {b, 16, 1}};
		int head = virtq_submit(&vq, bufs, 2, table);
		virtq_kick(&dev, &vq);
		int id = virtq_wait_used(&vq, &len, 5000);
		tap_okf(id == head && len > 0 && len <= 32, "a chain through an indirect table is filled (id %d len %u)", id, len);
		tap_ok(!all_zero((const uint8_t *)a, 16), "the first buffer of the indirect chain holds entropy");
	} else {
		tap_ok(0, "VIRTIO_F_INDIRECT_DESC is offered");
		tap_ok(0, "(indirect chain skipped)");
	}
}

static void rate_limited(uint32_t limit, uint32_t nbufs)
{
	const uint32_t sz = 32;
	if (nbufs > vq.size)
		nbufs = vq.size;
	tap_okf(nbufs * sz > limit, "offering %u bytes, more than the limit of %u", nbufs * sz, limit);
	for (uint32_t i = 0; i < nbufs; i++) {
		struct vbuf b = {virtio_alloc(sz, 32), sz, 1};
		virtq_submit(&vq, &b, 1, 0);
	}
	virtq_kick(&dev, &vq);
	wait_rtc_second();
	uint32_t used = 0, total = 0, len;
	while (virtq_get_used(&vq, &len) >= 0) {
		used++;
		total += len;
	}
	tap_diag("%u of %u buffers used, %u bytes", used, nbufs, total);
	tap_okf(total <= limit, "no more than max-bytes (%u) arrived in the window (got %u)", limit, total);
	tap_is(total, limit, "the whole quota was served");
	tap_okf(used < nbufs, "buffers beyond the quota wait for the next period (%u of %u used)", used, nbufs);
}

int guest_main(void)
{
	const char *cl = multiboot_cmdline();
	uint32_t limit = cmdline_get_u32(cl, "limit", 0);
	uint32_t nbufs = cmdline_get_u32(cl, "bufs", 6);
	uint64_t wanted = 1ull << VIRTIO_F_INDIRECT_DESC;
	if (cmdline_get_u32(cl, "event_idx", 0))
		wanted |= 1ull << VIRTIO_F_EVENT_IDX;

	tap_plan(limit ? 9 : 12);
	virtio_mem_init(0x01000000, 0x00400000);
	int found = virtio_find(VIRTIO_ID_RNG, 0, &dev);
	tap_ok(found == 0, "found a virtio entropy device");
	if (found)
		tap_done();
	tap_diag("00:%02x.0 device id 0x%04x (%s)", dev.dev, dev.device_id, dev.transitional ? "transitional" : "modern");
	tap_ok(virtio_init(&dev, wanted) == 0, "feature negotiation with VIRTIO_F_VERSION_1 (FEATURES_OK stays set)");
	tap_ok(virtio_num_queues(&dev) >= 1, "the device has a requestq");
	tap_ok(virtq_setup(&dev, &vq, 0, 8) == 0, "requestq set up");
	virtio_driver_ok(&dev);

	if (limit)
		rate_limited(limit, nbufs);
	else
		plain_reads();
	tap_okf(!(virtio_status(&dev) & VIRTIO_S_NEEDS_RESET), "device status 0x%02x has no DEVICE_NEEDS_RESET", virtio_status(&dev));
	tap_done();
}
