/* BAR reprogramming (PCI Local Bus 3.0 §6.2.5, PCI-to-PCI Bridge 1.2
 * §3.2.5.8): the guest moves pci-testdev BARs and switches decode, and
 * accesses must follow — hit at the new address, not at the old one, and
 * nowhere while decode is off; a device behind a bridge is reachable only
 * inside the bridge's memory window while the bridge decodes; ioeventfds
 * (the testdev's "eventfd" tests) move with the BAR.
 *
 * Boot with: pci-testdev,addr=3,membar=0x100000  pci-bridge,id=br0,chassis_nr=1
 *            pci-testdev,bus=br0,addr=4 */
#include "kit.h"
#include "pci_enum.h"

/* Addresses no firmware gives out on either VMM (SeaBIOS allocates top-down from 0xfec00000). */
#define NEW_MEM 0xfd000000u
#define NEW_IO 0x7000u
#define NEW_IO2 0x7100u
#define OUTSIDE_WINDOW 0xfd100000u

static int mmio_test0(uint32_t base)
{
	char name[32];
	return testdev_mmio_name(base, 0, name, sizeof(name)) == 1 && !strcmp(name, "mmio-no-eventfd");
}

static int io_test0(uint16_t base)
{
	char name[32];
	return testdev_io_name(base, 0, name, sizeof(name)) == 1 && !strcmp(name, "portio-no-eventfd");
}

/* Runs test `t` through BAR `base`, writes its data 16 times at its offset and returns `count`. */
static uint32_t notify_count_mmio(uint32_t base, int t)
{
	mmio_write8(base, (uint8_t)t);
	uint32_t off = mmio_read32(base + 4);
	uint8_t data = mmio_read8(base + 8);
	for (int i = 0; i < 16; i++)
		mmio_write8(base + off, data);
	return mmio_read32(base + 12);
}

static uint32_t notify_count_io(uint16_t base, int t)
{
	outb(base, (uint8_t)t);
	uint32_t off = inl(base + 4);
	uint8_t data = inb(base + 8);
	for (int i = 0; i < 16; i++)
		outb((uint16_t)(base + off), data);
	return inl(base + 12);
}

int guest_main(void)
{
	tap_plan(22);
	struct pci_fn root = { 0 }, behind = { 0 }, br, t;
	int have_root = 0, have_behind = 0;
	for (int i = 0; i < 2 && pci_find(PCI_TESTDEV_VENDOR, PCI_TESTDEV_DEVICE, i, &t) == 0; i++) {
		if (t.bus == 0) {
			root = t;
			have_root = 1;
		} else {
			behind = t;
			have_behind = 1;
		}
	}
	if (!have_root || !have_behind || pci_find(PCI_TESTDEV_VENDOR, PCI_BRIDGE_DEVICE, 0, &br) < 0) {
		tap_diag("expected a pci-testdev on bus 0, a pci-bridge and a pci-testdev behind it");
		tap_done();
	}
	uint8_t b = root.bus, d = root.dev, f = root.fn;
	struct pci_bar bar0, bar1, bar2;
	pci_bar_probe(b, d, f, 0, &bar0);
	pci_bar_probe(b, d, f, 1, &bar1);
	pci_bar_probe(b, d, f, 2, &bar2);
	tap_ok(!bar0.is_io && !bar0.is_64 && !bar0.prefetch && bar0.size == 0x1000, "BAR0 sizes as 4 KiB 32-bit memory");
	tap_ok(bar1.is_io && bar1.size == 0x100, "BAR1 sizes as 256 bytes of I/O");
	tap_ok(!bar2.is_io && bar2.is_64 && bar2.prefetch && bar2.size == 0x100000, "BAR2 sizes as 1 MiB 64-bit prefetchable memory");
	uint32_t old_mem = (uint32_t)bar0.addr;
	uint16_t old_io = (uint16_t)bar1.addr;
	tap_ok(mmio_test0(old_mem) && io_test0(old_io), "the firmware-assigned BARs answer");

	/* memory BAR */
	pci_write32(b, d, f, PCI_BAR0, NEW_MEM);
	tap_is(pci_read32(b, d, f, PCI_BAR0), NEW_MEM, "BAR0 reads back the new address");
	tap_ok(mmio_test0(NEW_MEM), "accesses hit BAR0 at its new address");
	tap_ok(!mmio_test0(old_mem), "the old BAR0 address no longer answers");
	mmio_write8(NEW_MEM, 1);
	mmio_write8(old_mem, 2); /* must not reach the device */
	tap_is(mmio_read8(NEW_MEM), 1, "a write to the old BAR0 address does not reach the device");

	/* I/O BAR */
	pci_write32(b, d, f, PCI_BAR0 + 4, NEW_IO);
	tap_ok(io_test0(NEW_IO), "accesses hit BAR1 at its new I/O address");
	tap_ok(!io_test0(old_io), "the old BAR1 ports no longer answer");

	/* decode */
	uint16_t cmd = pci_read16(b, d, f, PCI_COMMAND);
	pci_write16(b, d, f, PCI_COMMAND, cmd & ~PCI_COMMAND_MEMORY);
	tap_ok(!mmio_test0(NEW_MEM) && io_test0(NEW_IO), "Memory Space off: BAR0 is gone, BAR1 still answers");
	pci_write16(b, d, f, PCI_COMMAND, cmd & ~PCI_COMMAND_IO);
	tap_ok(mmio_test0(NEW_MEM) && !io_test0(NEW_IO), "I/O Space off: BAR1 is gone, BAR0 is back");
	pci_write16(b, d, f, PCI_COMMAND, cmd);
	tap_ok(mmio_test0(NEW_MEM) && io_test0(NEW_IO), "both decodes on: both BARs answer");

	/* 64-bit BAR: both halves written and read back */
	pci_write32(b, d, f, PCI_BAR0 + 8, 0xfc00000c);
	pci_write32(b, d, f, PCI_BAR0 + 12, 0);
	tap_is(pci_read32(b, d, f, PCI_BAR0 + 8), 0xfc00000c, "BAR2 (64-bit) takes a new low half");

	/* ioeventfds (pci-testdev tests 1, 2): KVM takes the writes, so the device counts none */
	tap_is(notify_count_mmio(NEW_MEM, 0), 16, "mmio-no-eventfd: the device counts 16 writes");
	tap_is(notify_count_mmio(NEW_MEM, 2), 0, "mmio-datamatch-eventfd: the ioeventfd takes all 16 writes");
	tap_is(notify_count_io(NEW_IO, 1), 0, "portio-wildcard-eventfd: the ioeventfd takes all 16 writes");
	/* start the datamatch test, then move the BAR: the ioeventfd must follow */
	outb(NEW_IO, 2);
	pci_write32(b, d, f, PCI_BAR0 + 4, NEW_IO2);
	uint32_t off = inl(NEW_IO2 + 4);
	for (int i = 0; i < 16; i++)
		outb((uint16_t)(NEW_IO2 + off), inb(NEW_IO2 + 8));
	tap_is(inl(NEW_IO2 + 12), 0, "an ioeventfd assigned before the BAR moved takes writes at the new address");

	/* behind the bridge: only inside the bridge's memory window, only while it decodes */
	struct pci_bar bb;
	pci_bar_probe(behind.bus, behind.dev, behind.fn, 0, &bb);
	uint32_t win_lo = (uint32_t)(pci_read16(br.bus, br.dev, br.fn, PCI_MEMORY_BASE) & 0xfff0) << 16;
	uint32_t win_hi = ((uint32_t)(pci_read16(br.bus, br.dev, br.fn, PCI_MEMORY_LIMIT) & 0xfff0) << 16) | 0xfffff;
	tap_ok(bb.addr >= win_lo && bb.addr + bb.size - 1 <= win_hi && mmio_test0((uint32_t)bb.addr),
	       "the device behind the bridge answers inside the bridge's memory window");
	pci_write32(behind.bus, behind.dev, behind.fn, PCI_BAR0, OUTSIDE_WINDOW);
	tap_ok(!mmio_test0(OUTSIDE_WINDOW), "moved outside the bridge's window, it is unreachable");
	uint32_t inside = win_hi - 0xfff;
	pci_write32(behind.bus, behind.dev, behind.fn, PCI_BAR0, inside);
	tap_ok(mmio_test0(inside), "moved elsewhere inside the window, it answers there");
	uint16_t bcmd = pci_read16(br.bus, br.dev, br.fn, PCI_COMMAND);
	pci_write16(br.bus, br.dev, br.fn, PCI_COMMAND, bcmd & ~PCI_COMMAND_MEMORY);
	int gone = !mmio_test0(inside);
	pci_write16(br.bus, br.dev, br.fn, PCI_COMMAND, bcmd);
	tap_ok(gone && mmio_test0(inside), "the bridge's Memory Space off hides it; on again, it is back");
	tap_done();
}
