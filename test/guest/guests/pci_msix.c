/* MSI-X through KVM (PCI Local Bus 3.0 §6.8.2; KVM api.rst KVM_SET_GSI_ROUTING,
 * KVM_IRQFD): a virtio-rng-pci function's MSI-X table is programmed by the
 * guest, and each change must reach the interrupt the CPU takes:
 *
 *   - an unmasked vector's message arrives at its vector;
 *   - a masked vector (its Mask Bit, or Function Mask) sends nothing but sets
 *     its Pending Bit, and unmasking delivers it;
 *   - rewriting the entry's Message Data while masked moves the interrupt to
 *     the new vector (the KVM route follows the table).
 *
 * The device raises its queue vector when it has used a buffer (OASIS VIRTIO
 * 1.2 §4.1.5.4), so the guest sets up one request queue, points it at MSI-X
 * vector 0 and asks for interrupts. Boot with: virtio-rng-pci (on bus 0). */
#include "kit.h"
#include "intr.h"
#include "pci_enum.h"
#include "virtio.h"

#define VEC_A 0x41
#define VEC_B 0x43
#define MSIX_CTRL_ENABLE 0x8000
#define MSIX_CTRL_MASKALL 0x4000
#define COMMON_Q_SELECT 0x16
#define COMMON_Q_MSIX 0x1a
#define COMMON_MSIX 0x10

static struct virtio_dev dev;
static struct virtq q;
static uint32_t table, pba;
static uint8_t cap;
static uint32_t bufaddr;

static void entry(int v, uint32_t addr, uint32_t data, uint32_t ctrl)
{
	mmio_write32(table + 16 * v, addr);
	mmio_write32(table + 16 * v + 4, 0);
	mmio_write32(table + 16 * v + 8, data);
	mmio_write32(table + 16 * v + 12, ctrl);
}

static void control(uint16_t bits)
{
	pci_write16(dev.bus, dev.dev, dev.fn, cap + 2, bits);
}

/* Makes a 16-byte entropy request available and kicks; returns once the device used it. */
static int request(void)
{
	struct vbuf b = { bufaddr, 16, 1 };
	if (virtq_submit(&q, &b, 1, 0) < 0)
		return 0;
	virtq_notify(&dev, &q);
	uint32_t len;
	return virtq_wait_used(&q, &len, 2000) >= 0;
}

static uint32_t bar_base(uint32_t bir_off)
{
	uint8_t bir = bir_off & 7;
	return (pci_read32(dev.bus, dev.dev, dev.fn, PCI_BAR0 + 4 * bir) & ~0xfu) + (bir_off & ~7u);
}

int guest_main(void)
{
	tap_plan(16);
	virtio_mem_init(0x400000, 0x100000);
	bufaddr = virtio_alloc(64, 64);
	if (virtio_find(VIRTIO_ID_RNG, 0, &dev) < 0) {
		tap_diag("needs a virtio-rng-pci device on bus 0");
		tap_done();
	}
	cap = pci_find_cap(dev.bus, dev.dev, dev.fn, PCI_CAP_ID_MSIX);
	tap_ok(cap != 0, "the function has an MSI-X capability");
	uint16_t ctrl = pci_read16(dev.bus, dev.dev, dev.fn, cap + 2);
	tap_okf((ctrl & 0x7ff) + 1 >= 2, "its table has %u vectors", (ctrl & 0x7ff) + 1);
	table = bar_base(pci_read32(dev.bus, dev.dev, dev.fn, cap + 4));
	pba = bar_base(pci_read32(dev.bus, dev.dev, dev.fn, cap + 8));
	tap_ok((mmio_read32(table + 12) & 1) && (mmio_read32(table + 16 + 12) & 1), "every table entry starts masked");

	intr_init();
	tsc_per_ms(); /* calibrate before timing anything */
	control(MSIX_CTRL_ENABLE);
	entry(0, 0xfee00000, VEC_A, 0);
	entry(1, 0xfee00000, VEC_B, 1);
	tap_ok(virtio_init(&dev, 0) == 0 && virtq_setup(&dev, &q, 0, 8) == 0, "virtio-rng initialised with one request queue");
	q.avail[0] = 0; /* interrupts wanted */
	uintptr_t c = (uintptr_t)dev.common;
	mmio_write16(c + COMMON_MSIX, 0xffff);
	mmio_write16(c + COMMON_Q_SELECT, 0);
	mmio_write16(c + COMMON_Q_MSIX, 0);
	tap_is(mmio_read16(c + COMMON_Q_MSIX), 0, "the queue takes MSI-X vector 0");
	virtio_driver_ok(&dev);

	/* 1: unmasked vector */
	tap_ok(request(), "a request completes");
	tap_is(intr_wait(VEC_A, 1, 2000), 1, "MSI-X vector 0 interrupts the CPU at its Message Data vector");

	/* 2: masked by its Mask Bit */
	mmio_write32(table + 12, 1);
	request();
	tap_is(intr_wait(VEC_A, 2, 300), 1, "with its Mask Bit set, vector 0 sends nothing");
	tap_is(mmio_read32(pba) & 1, 1, "and its Pending Bit is set");
	/* 3: the guest rewrites the masked entry: the new message must reach KVM */
	mmio_write32(table + 8, VEC_B);
	mmio_write32(table + 12, 0);
	tap_is(intr_wait(VEC_B, 1, 2000), 1, "unmasking delivers the pending message, at the rewritten vector");
	tap_is(mmio_read32(pba) & 1, 0, "the Pending Bit clears on delivery");
	tap_is(intr_count[VEC_A - INTR_FIRST_VECTOR], 1, "nothing arrived at the old vector");

	/* 4: Function Mask */
	control(MSIX_CTRL_ENABLE | MSIX_CTRL_MASKALL);
	request();
	tap_is(intr_wait(VEC_B, 2, 300), 1, "with Function Mask set, nothing is sent");
	tap_is(mmio_read32(pba) & 1, 1, "the Pending Bit is set under Function Mask");
	control(MSIX_CTRL_ENABLE);
	tap_is(intr_wait(VEC_B, 2, 2000), 2, "clearing Function Mask delivers it");

	/* 5: back to normal delivery after all the changes */
	request();
	tap_is(intr_wait(VEC_B, 3, 2000), 3, "the next request interrupts again");
	tap_done();
}
