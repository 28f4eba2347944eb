/* A machine reset through the PIIX3 Reset Control Register (0xCF9: SRST,
 * then RCPU — 82371SB §4.1.2) puts PCI back to what firmware sets up: the
 * first boot moves a pci-testdev BAR, closes the bridge, disables a PIRQ
 * route and resets; the second boot finds the firmware layout again.
 *
 * Boot with: pci-bridge,id=br0,chassis_nr=1  pci-testdev,bus=br0 */
#include "kit.h"
#include "pci_enum.h"

#define MARKER 0xc9
#define MARKER_INDEX 0x60 /* CMOS byte neither QEMU nor SeaBIOS uses (lib/reboot_test.h) */
#define MOVED 0xfd000000u

static int answers(uint32_t base)
{
	char name[32];
	return testdev_mmio_name(base, 0, name, sizeof(name)) == 1 && !strcmp(name, "mmio-no-eventfd");
}

int guest_main(void)
{
	struct pci_fn t, br;
	if (pci_find(PCI_TESTDEV_VENDOR, PCI_TESTDEV_DEVICE, 0, &t) < 0 || pci_find(PCI_TESTDEV_VENDOR, PCI_BRIDGE_DEVICE, 0, &br) < 0) {
		kprintf("# needs a pci-bridge with a pci-testdev behind it\n");
		return KIT_EXIT_FAIL;
	}
	if (cmos_read(MARKER_INDEX) != MARKER) {
		kprintf("# first boot: moving BAR0, closing the bridge, disabling PIRQA; resetting via 0xcf9\n");
		cmos_write(MARKER_INDEX, MARKER);
		pci_write32(t.bus, t.dev, t.fn, PCI_BAR0, MOVED);
		pci_write16(br.bus, br.dev, br.fn, PCI_COMMAND, 0);
		pci_write8(br.bus, br.dev, br.fn, PCI_SECONDARY_BUS, 9);
		pci_write8(0, 1, 0, 0x60, 0x80);
		outb(0xcf9, 0x02);
		outb(0xcf9, 0x06);
		for (int i = 0; i < 1000000; i++)
			cpu_relax();
		kprintf("# still running after the reset request\n");
		return KIT_EXIT_FAIL;
	}
	kprintf("# second boot\n");
	cmos_write(MARKER_INDEX, 0);
	tap_plan(5);
	tap_ok(1, "the machine restarted after 0xcf9 <- 0x06");
	tap_is(pci_read8(br.bus, br.dev, br.fn, PCI_SECONDARY_BUS), 1, "the bridge's secondary bus is 1 again");
	tap_is(pci_read16(br.bus, br.dev, br.fn, PCI_COMMAND) & 3, 3, "the bridge decodes again");
	uint32_t bar0 = pci_read32(t.bus, t.dev, t.fn, PCI_BAR0) & ~0xfu;
	tap_ok(bar0 != MOVED && answers(bar0), "the pci-testdev is back at its firmware address and answers");
	tap_is(pci_read8(0, 1, 0, 0x60), 0x0a, "PIRQA routes to IRQ 10 again");
	tap_done();
}
