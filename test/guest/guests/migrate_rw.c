/* The live-migration test guest: keeps rewriting a memory region with a
 * known pattern (and, with blk=1, moves pages through a virtio-blk disk), so
 * that a migration taken at any moment must carry every page write — by the
 * vCPU and by the device — for the final checksum to come out right.
 *
 * Each pass rewrites `words` words of every page of the region at 0x02000000
 * (which words moves with the pass), each new value computed from the old
 * one: a page the destination got stale changes every value derived from it
 * afterwards. A few words per page per pass is the sparse update pattern
 * XBZRLE is made for (QEMU docs/xbzrle.txt's load generator does the same).
 * With blk=1 each pass also writes one region page to a 4 KiB disk slot and
 * reads an older slot back into another region page: virtio-blk DMA into
 * guest RAM, which only device dirty tracking sees.
 *
 * Command line: pages=N (default 512) passes=N (default 30; 0 = forever)
 * words=N (default 16) blk=1 seed=S; expect=0xSUM makes the last test compare.
 * idle=1 prints "# idle" and halts for good (the idle guest of bench/migration).
 * Prints "# pass N" after each pass and "# checksum 0x........" at the end,
 * over every word of the region. Needs RAM up to 0x02000000 + pages * 4 KiB.
 */
#include "kit.h"
#include "virtio.h"
#include "virtio_blk.h"

#define REGION 0x02000000u
#define PAGE_WORDS 1024u
#define BLK_SLOTS 16u

static struct virtio_dev dev;
static struct virtq vq;

static uint32_t next_value(uint32_t old, uint32_t pass, uint32_t page, uint32_t k)
{
	return old * 1664525u + ((pass << 16) ^ (page << 4) ^ k) + 1013904223u;
}

static int blk_setup(void)
{
	virtio_mem_init(0x01000000, 0x00100000);
	if (virtio_find(VIRTIO_ID_BLOCK, 0, &dev) != 0)
		return -1;
	if (virtio_init(&dev, 0) != 0)
		return -1;
	if (virtq_setup(&dev, &vq, 0, 16) != 0)
		return -1;
	virtio_driver_ok(&dev);
	return 0;
}

int guest_main(void)
{
	const char *cl = multiboot_cmdline();
	uint32_t pages = cmdline_get_u32(cl, "pages", 512);
	uint32_t passes = cmdline_get_u32(cl, "passes", 30);
	uint32_t words = cmdline_get_u32(cl, "words", 16);
	uint32_t blk = cmdline_get_u32(cl, "blk", 0);
	uint32_t seed = cmdline_get_u32(cl, "seed", 1);
	char expect_text[16];
	uint32_t expect = 0;
	int have_expect = cmdline_get(cl, "expect", expect_text, sizeof(expect_text)) >= 0 && cmdline_parse_u32(expect_text, &expect);
	if (words > PAGE_WORDS)
		words = PAGE_WORDS;
	if (cmdline_get_u32(cl, "idle", 0)) {
		kprintf("# idle\n");
		for (;;)
			__asm__ volatile("cli; hlt");
	}

	tap_plan(2 + (blk ? 3 : 0) + (have_expect ? 1 : 0));
	tap_diag("region 0x%x, %u pages, %u words per page per pass, %u passes%s", REGION, pages, words, passes, blk ? ", virtio-blk" : "");
	int blk_ok = 1;
	if (blk) {
		tap_ok(blk_setup() == 0, "virtio-blk device set up");
	}

	volatile uint32_t *mem = (volatile uint32_t *)REGION;
	uint32_t pass;
	for (pass = 0; passes == 0 || pass < passes; pass++) {
		for (uint32_t page = 0; page < pages; page++) {
			volatile uint32_t *p = mem + page * PAGE_WORDS;
			for (uint32_t k = 0; k < words; k++) {
				uint32_t w = (k * 61u + pass * 7u + page) & (PAGE_WORDS - 1);
				p[w] = next_value(p[w] ^ seed, pass, page, k);
			}
		}
		if (blk) {
			uint32_t src = REGION + ((pass * 13u) % pages) * 4096u;
			uint32_t dst = REGION + ((pass * 29u + 5u) % pages) * 4096u;
			uint64_t wslot = (uint64_t)(pass % BLK_SLOTS) * 8u;
			uint64_t rslot = (uint64_t)((pass + BLK_SLOTS / 2) % BLK_SLOTS) * 8u;
			blk_ok &= blk_do(&dev, &vq, VIRTIO_BLK_T_OUT, wslot, src, 4096, 1, 0) == VIRTIO_BLK_S_OK;
			/* The device writes this page of the region: only device dirty tracking sees it. */
			blk_ok &= blk_do(&dev, &vq, VIRTIO_BLK_T_IN, rslot, dst, 4096, 1, 0) == VIRTIO_BLK_S_OK;
		}
		kprintf("# pass %u\n", pass);
	}

	uint32_t sum = seed;
	for (uint32_t i = 0; i < pages * PAGE_WORDS; i++)
		sum = ((sum << 5) | (sum >> 27)) ^ mem[i];
	kprintf("# checksum 0x%08x\n", sum);
	tap_okf(1, "rewrote %u pages %u times", pages, pass);
	if (blk) {
		tap_ok(blk_ok, "every virtio-blk request completed");
		tap_okf(!(virtio_status(&dev) & VIRTIO_S_NEEDS_RESET), "device status 0x%02x has no DEVICE_NEEDS_RESET", virtio_status(&dev));
	}
	tap_okf(sum != 0, "checksum 0x%08x", sum);
	if (have_expect)
		tap_is(sum, expect, "checksum is the one an unmigrated run gives");
	tap_done();
}
