/* Polling virtio 1.x PCI driver; see virtio.h. Spec: OASIS VIRTIO 1.2
 * §4.1.4 (capabilities, common configuration layout), §3.1.1 (driver
 * initialization), §2.7 (split virtqueues: descriptor table, available and
 * used rings, §2.7.7/§2.7.10 notification suppression with and without
 * VIRTIO_F_EVENT_IDX, §2.7.13 notifying the device). */
#include "virtio.h"
#include "cmos.h"
#include "io.h"
#include "kstring.h"
#include "pci.h"
#include "print.h"

/* §4.1.4 virtio_pci_cap cfg_type */
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG 3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4

/* §4.1.4.3 struct virtio_pci_common_cfg */
#define COMMON_DFSELECT 0x00
#define COMMON_DF 0x04
#define COMMON_GFSELECT 0x08
#define COMMON_GF 0x0c
#define COMMON_MSIX 0x10
#define COMMON_NUMQ 0x12
#define COMMON_STATUS 0x14
#define COMMON_CFGGENERATION 0x15
#define COMMON_Q_SELECT 0x16
#define COMMON_Q_SIZE 0x18
#define COMMON_Q_MSIX 0x1a
#define COMMON_Q_ENABLE 0x1c
#define COMMON_Q_NOFF 0x1e
#define COMMON_Q_DESCLO 0x20
#define COMMON_Q_DESCHI 0x24
#define COMMON_Q_AVAILLO 0x28
#define COMMON_Q_AVAILHI 0x2c
#define COMMON_Q_USEDLO 0x30
#define COMMON_Q_USEDHI 0x34

#define VIRTIO_MSI_NO_VECTOR 0xffff

static uint32_t mem_next, mem_end;

void virtio_mem_init(uint32_t base, uint32_t size)
{
	mem_next = base;
	mem_end = base + size;
}

uint32_t virtio_alloc(uint32_t size, uint32_t align)
{
	uint32_t at = (mem_next + align - 1) & ~(align - 1);
	if (at < mem_next || at + size > mem_end || at + size < at)
		return 0;
	mem_next = at + size;
	return at;
}

static void mb(void) { __sync_synchronize(); }
static void barrier(void) { __asm__ volatile("" ::: "memory"); }

/* Address of BAR `bar` (memory BARs only; a 64-bit one must lie below 4 GiB
 * for this 32-bit guest). 0 when unusable. */
static uint32_t bar_address(struct virtio_dev *d, uint8_t bar)
{
	if (bar > 5)
		return 0;
	uint32_t lo = pci_read32(d->bus, d->dev, d->fn, PCI_BAR0 + 4 * bar);
	if (lo & 1) {
		kprintf("# virtio: BAR%u is an I/O BAR; modern capabilities need memory BARs\n", bar);
		return 0;
	}
	if (((lo >> 1) & 3) == 2) {
		uint32_t hi = pci_read32(d->bus, d->dev, d->fn, PCI_BAR0 + 4 * bar + 4);
		if (hi != 0) {
			kprintf("# virtio: BAR%u is mapped above 4 GiB (0x%x%08x)\n", bar, hi, lo & ~0xfu);
			return 0;
		}
	}
	return lo & ~0xfu;
}

static int matches(uint16_t vendor, uint16_t device, uint16_t subsys, int type, int *transitional)
{
	if (vendor != VIRTIO_PCI_VENDOR)
		return 0;
	if (device == 0x1040 + type) {
		*transitional = 0;
		return 1;
	}
	if (device >= 0x1000 && device <= 0x103f && subsys == type) {
		*transitional = 1;
		return 1;
	}
	return 0;
}

int virtio_find(int type, int nth, struct virtio_dev *d)
{
	memset(d, 0, sizeof(*d));
	int seen = 0;
	for (int dev = 0; dev < 32; dev++) {
		uint32_t id = pci_read32(0, dev, 0, PCI_VENDOR_ID);
		if ((id & 0xffff) == 0xffff)
			continue;
		uint16_t subsys = pci_read16(0, dev, 0, 0x2e);
		int transitional;
		if (!matches(id & 0xffff, id >> 16, subsys, type, &transitional))
			continue;
		if (seen++ != nth)
			continue;
		d->bus = 0;
		d->dev = dev;
		d->fn = 0;
		d->device_id = id >> 16;
		d->transitional = transitional;
		break;
	}
	if (seen <= nth) {
		kprintf("# virtio: no virtio device of type %d (#%d) on bus 0\n", type, nth);
		return -1;
	}
	if (!(pci_read16(d->bus, d->dev, d->fn, PCI_STATUS) & 0x10)) {
		kprintf("# virtio: 00:%02x.0 has no capability list\n", d->dev);
		return -1;
	}
	uint8_t p = pci_read8(d->bus, d->dev, d->fn, PCI_CAPABILITY_LIST) & 0xfc;
	for (int guard = 0; p && guard < 48; guard++) {
		if (pci_read8(d->bus, d->dev, d->fn, p) == 0x09) {
			uint8_t cfg_type = pci_read8(d->bus, d->dev, d->fn, p + 3);
			uint8_t bar = pci_read8(d->bus, d->dev, d->fn, p + 4);
			uint32_t off = pci_read32(d->bus, d->dev, d->fn, p + 8);
			uint32_t base = 0;
			if (cfg_type >= VIRTIO_PCI_CAP_COMMON_CFG && cfg_type <= VIRTIO_PCI_CAP_DEVICE_CFG)
				base = bar_address(d, bar);
			volatile uint8_t *at = (volatile uint8_t *)(base + off);
			/* The first capability of each type is the preferred one (§4.1.4.1). */
			switch (cfg_type) {
			case VIRTIO_PCI_CAP_COMMON_CFG:
				if (!d->common && base)
					d->common = at;
				break;
			case VIRTIO_PCI_CAP_NOTIFY_CFG:
				if (!d->notify && base) {
					d->notify = at;
					d->notify_mul = pci_read32(d->bus, d->dev, d->fn, p + 16);
				}
				break;
			case VIRTIO_PCI_CAP_ISR_CFG:
				if (!d->isr && base)
					d->isr = at;
				break;
			case VIRTIO_PCI_CAP_DEVICE_CFG:
				if (!d->device && base)
					d->device = at;
				break;
			}
		}
		p = pci_read8(d->bus, d->dev, d->fn, p + 1) & 0xfc;
	}
	if (!d->common || !d->notify || !d->isr) {
		kprintf("# virtio: 00:%02x.0 lacks a usable common/notify/ISR capability\n", d->dev);
		return -1;
	}
	uint16_t cmd = pci_read16(d->bus, d->dev, d->fn, PCI_COMMAND);
	pci_write16(d->bus, d->dev, d->fn, PCI_COMMAND, cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	return 0;
}

uint8_t virtio_status(struct virtio_dev *d) { return mmio_read8((uintptr_t)d->common + COMMON_STATUS); }
void virtio_set_status(struct virtio_dev *d, uint8_t s) { mmio_write8((uintptr_t)d->common + COMMON_STATUS, s); }

void virtio_reset(struct virtio_dev *d)
{
	virtio_set_status(d, 0);
	while (virtio_status(d) != 0)
		cpu_relax();
}

uint64_t virtio_device_features(struct virtio_dev *d)
{
	uintptr_t c = (uintptr_t)d->common;
	mmio_write32(c + COMMON_DFSELECT, 0);
	uint32_t lo = mmio_read32(c + COMMON_DF);
	mmio_write32(c + COMMON_DFSELECT, 1);
	uint32_t hi = mmio_read32(c + COMMON_DF);
	return (uint64_t)hi << 32 | lo;
}

int virtio_has(struct virtio_dev *d, int bit) { return (d->features >> bit) & 1; }

int virtio_init(struct virtio_dev *d, uint64_t wanted)
{
	uintptr_t c = (uintptr_t)d->common;
	virtio_reset(d);
	virtio_set_status(d, VIRTIO_S_ACKNOWLEDGE);
	virtio_set_status(d, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER);
	uint64_t offered = virtio_device_features(d);
	d->features = offered & (wanted | (1ull << VIRTIO_F_VERSION_1));
	mmio_write32(c + COMMON_GFSELECT, 0);
	mmio_write32(c + COMMON_GF, (uint32_t)d->features);
	mmio_write32(c + COMMON_GFSELECT, 1);
	mmio_write32(c + COMMON_GF, (uint32_t)(d->features >> 32));
	virtio_set_status(d, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK);
	if (!(virtio_status(d) & VIRTIO_S_FEATURES_OK)) {
		kprintf("# virtio: device refused features 0x%llx\n", (unsigned long long)d->features);
		virtio_set_status(d, VIRTIO_S_FAILED);
		return -1;
	}
	mmio_write16(c + COMMON_MSIX, VIRTIO_MSI_NO_VECTOR);
	return 0;
}

uint16_t virtio_num_queues(struct virtio_dev *d) { return mmio_read16((uintptr_t)d->common + COMMON_NUMQ); }

uint16_t virtio_queue_max_size(struct virtio_dev *d, uint16_t index)
{
	mmio_write16((uintptr_t)d->common + COMMON_Q_SELECT, index);
	return mmio_read16((uintptr_t)d->common + COMMON_Q_SIZE);
}

int virtq_setup(struct virtio_dev *d, struct virtq *q, uint16_t index, uint16_t size)
{
	uintptr_t c = (uintptr_t)d->common;
	memset(q, 0, sizeof(*q));
	mmio_write16(c + COMMON_Q_SELECT, index);
	uint16_t max = mmio_read16(c + COMMON_Q_SIZE);
	if (max == 0) {
		kprintf("# virtio: queue %u does not exist\n", index);
		return -1;
	}
	if (size == 0 || size > max)
		size = max;
	/* queue_size must stay a power of 2 */
	while (size & (size - 1))
		size &= size - 1;
	uint32_t desc = virtio_alloc(16u * size, 4096);
	uint32_t avail = virtio_alloc(6u + 2u * size, 4096);
	uint32_t used = virtio_alloc(6u + 8u * size, 4096);
	if (!desc || !avail || !used) {
		kprintf("# virtio: out of ring memory for queue %u\n", index);
		return -1;
	}
	memset((void *)desc, 0, 16u * size);
	memset((void *)avail, 0, 6u + 2u * size);
	memset((void *)used, 0, 6u + 8u * size);
	q->index = index;
	q->size = size;
	q->event_idx = virtio_has(d, VIRTIO_F_EVENT_IDX);
	q->desc = (volatile struct virtq_desc *)desc;
	q->avail = (volatile uint16_t *)avail;
	q->used = (volatile uint32_t *)used;
	for (uint16_t i = 0; i < size; i++)
		q->desc[i].next = i + 1;
	q->free_head = 0;
	q->num_free = size;
	/* A polling driver wants no interrupts (§2.7.7): without EVENT_IDX the
	 * flag; with it, used_event is kept half the index space ahead. */
	if (q->event_idx)
		q->avail[2 + size] = 0x8000;
	else
		q->avail[0] = VIRTQ_AVAIL_F_NO_INTERRUPT;
	mmio_write16(c + COMMON_Q_SIZE, size);
	mmio_write16(c + COMMON_Q_MSIX, VIRTIO_MSI_NO_VECTOR);
	mmio_write32(c + COMMON_Q_DESCLO, desc);
	mmio_write32(c + COMMON_Q_DESCHI, 0);
	mmio_write32(c + COMMON_Q_AVAILLO, avail);
	mmio_write32(c + COMMON_Q_AVAILHI, 0);
	mmio_write32(c + COMMON_Q_USEDLO, used);
	mmio_write32(c + COMMON_Q_USEDHI, 0);
	q->notify_off = mmio_read16(c + COMMON_Q_NOFF);
	mmio_write16(c + COMMON_Q_ENABLE, 1);
	return 0;
}

void virtio_driver_ok(struct virtio_dev *d)
{
	virtio_set_status(d, virtio_status(d) | VIRTIO_S_DRIVER_OK);
}

uint8_t virtio_cfg8(struct virtio_dev *d, uint32_t off) { return mmio_read8((uintptr_t)d->device + off); }
uint16_t virtio_cfg16(struct virtio_dev *d, uint32_t off) { return mmio_read16((uintptr_t)d->device + off); }
uint32_t virtio_cfg32(struct virtio_dev *d, uint32_t off) { return mmio_read32((uintptr_t)d->device + off); }
uint64_t virtio_cfg64(struct virtio_dev *d, uint32_t off)
{
	/* §4.1.3.1: 64-bit fields are read as two 32-bit halves, retried while config_generation changes */
	uint8_t gen;
	uint32_t lo, hi;
	do {
		gen = virtio_config_generation(d);
		lo = virtio_cfg32(d, off);
		hi = virtio_cfg32(d, off + 4);
	} while (gen != virtio_config_generation(d));
	return (uint64_t)hi << 32 | lo;
}
uint8_t virtio_config_generation(struct virtio_dev *d) { return mmio_read8((uintptr_t)d->common + COMMON_CFGGENERATION); }

int virtq_submit(struct virtq *q, const struct vbuf *bufs, int n, uint32_t indirect)
{
	int need = indirect ? 1 : n;
	if (n <= 0 || q->num_free < need)
		return -1;
	uint16_t head = q->free_head;
	if (indirect) {
		volatile struct virtq_desc *t = (volatile struct virtq_desc *)indirect;
		for (int i = 0; i < n; i++) {
			t[i].addr = bufs[i].addr;
			t[i].len = bufs[i].len;
			t[i].flags = (bufs[i].writable ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0);
			t[i].next = i + 1;
		}
		volatile struct virtq_desc *h = &q->desc[head];
		q->free_head = h->next;
		h->addr = indirect;
		h->len = 16u * n;
		h->flags = VIRTQ_DESC_F_INDIRECT;
		q->num_free--;
	} else {
		uint16_t i = head, last = head;
		for (int k = 0; k < n; k++) {
			volatile struct virtq_desc *dsc = &q->desc[i];
			dsc->addr = bufs[k].addr;
			dsc->len = bufs[k].len;
			dsc->flags = (bufs[k].writable ? VIRTQ_DESC_F_WRITE : 0) | (k + 1 < n ? VIRTQ_DESC_F_NEXT : 0);
			last = i;
			i = dsc->next;
		}
		(void)last;
		q->free_head = i;
		q->num_free -= n;
	}
	q->avail[2 + (q->avail_idx & (q->size - 1))] = head;
	barrier(); /* ring entry before the index (x86 keeps stores in order) */
	q->avail_idx++;
	q->avail[1] = q->avail_idx;
	return head;
}

void virtq_notify(struct virtio_dev *d, struct virtq *q)
{
	mmio_write16((uintptr_t)d->notify + (uint32_t)q->notify_off * d->notify_mul, q->index);
	q->kicked_idx = q->avail_idx;
}

int virtq_kick(struct virtio_dev *d, struct virtq *q)
{
	mb(); /* publish avail->idx before reading the device's suppression state (§2.7.10) */
	int need;
	if (q->event_idx) {
		uint16_t event = (uint16_t)(q->used[1 + 2 * q->size] & 0xffff);
		uint16_t new_idx = q->avail_idx, old = q->kicked_idx;
		need = (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
	} else {
		need = !((q->used[0] & 0xffff) & VIRTQ_USED_F_NO_NOTIFY);
	}
	if (need)
		virtq_notify(d, q);
	else
		q->kicked_idx = q->avail_idx;
	return need;
}

uint16_t virtq_used_idx(struct virtq *q) { return (uint16_t)(q->used[0] >> 16); }

int virtq_get_used(struct virtq *q, uint32_t *len)
{
	if (virtq_used_idx(q) == q->last_used)
		return -1;
	barrier(); /* the element after the index that published it */
	uint16_t slot = q->last_used & (q->size - 1);
	uint32_t id = q->used[1 + 2 * slot];
	if (len)
		*len = q->used[2 + 2 * slot];
	q->last_used++;
	if (q->event_idx)
		q->avail[2 + q->size] = (uint16_t)(q->last_used + 0x8000);
	/* return the chain's descriptors to the free list */
	if (id < q->size) {
		uint16_t i = id;
		int n = 1;
		while ((q->desc[i].flags & VIRTQ_DESC_F_NEXT) && n < q->size) {
			i = q->desc[i].next;
			n++;
		}
		q->desc[i].next = q->free_head;
		q->free_head = id;
		q->num_free += n;
	}
	return id;
}

/* 64/32 division with divl (no libgcc in this guest); the quotient must fit 32 bits. */
static uint32_t div64_32(uint64_t n, uint32_t d)
{
	uint32_t q, r;
	__asm__("divl %4" : "=a"(q), "=d"(r) : "a"((uint32_t)n), "d"((uint32_t)(n >> 32)), "rm"(d));
	return q;
}

static uint64_t tsc_khz;

uint64_t tsc_per_ms(void)
{
	if (tsc_khz)
		return tsc_khz;
	uint8_t s0 = cmos_read(RTC_SECONDS), s;
	while ((s = cmos_read(RTC_SECONDS)) == s0)
		cpu_relax();
	uint64_t t0 = rdtsc();
	while (cmos_read(RTC_SECONDS) == s)
		cpu_relax();
	uint64_t t1 = rdtsc();
	tsc_khz = div64_32(t1 - t0, 1000);
	if (tsc_khz == 0)
		tsc_khz = 1;
	return tsc_khz;
}

uint32_t tsc_ms_since(uint64_t start)
{
	uint64_t per = tsc_per_ms();
	uint64_t d = rdtsc() - start;
	if ((d >> 32) >= per)
		return 0xffffffffu;
	return div64_32(d, (uint32_t)per);
}

int virtq_wait_used(struct virtq *q, uint32_t *len, uint32_t ms)
{
	uint64_t start = rdtsc();
	for (;;) {
		int id = virtq_get_used(q, len);
		if (id >= 0)
			return id;
		if (tsc_ms_since(start) >= ms)
			return -1;
		cpu_relax();
	}
}
