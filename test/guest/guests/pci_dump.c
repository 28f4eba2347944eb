/* Not a test: prints every PCI function's config space header, capability
 * list and BARs as firmware left them, to diff tsvmm against QEMU+SeaBIOS. */
#include "kit.h"
#include "pci_enum.h"

static void dump(const struct pci_fn *f, void *arg)
{
	(void)arg;
	kprintf("%02x:%02x.%x %04x:%04x class %04x type %x\n", f->bus, f->dev, f->fn, f->vendor, f->device,
		f->class_code, f->header_type);
	for (int r = 0; r < 0x40; r += 16)
		kprintf("  %02x: %08x %08x %08x %08x\n", r, pci_read32(f->bus, f->dev, f->fn, r),
			pci_read32(f->bus, f->dev, f->fn, r + 4), pci_read32(f->bus, f->dev, f->fn, r + 8),
			pci_read32(f->bus, f->dev, f->fn, r + 12));
	for (int r = 0x40; r < 0x100; r += 16) {
		uint32_t a = pci_read32(f->bus, f->dev, f->fn, r), b = pci_read32(f->bus, f->dev, f->fn, r + 4),
			 c = pci_read32(f->bus, f->dev, f->fn, r + 8), d = pci_read32(f->bus, f->dev, f->fn, r + 12);
		if (a | b | c | d)
			kprintf("  %02x: %08x %08x %08x %08x\n", r, a, b, c, d);
	}
	int nbars = f->header_type == 1 ? 2 : 6;
	for (int i = 0; i < nbars; i++) {
		struct pci_bar bar;
		pci_bar_probe(f->bus, f->dev, f->fn, i, &bar);
		if (bar.size)
			kprintf("  BAR%d %s%s%s addr 0x%llx size 0x%llx\n", i, bar.is_io ? "io" : "mem",
				bar.is_64 ? "64" : "", bar.prefetch ? " pref" : "", (unsigned long long)bar.addr,
				(unsigned long long)bar.size);
		if (bar.is_64)
			i++;
	}
}

int guest_main(void)
{
	int n = pci_enumerate(dump, 0);
	kprintf("functions: %d\n", n);
	kprintf("ELCR 0x%02x 0x%02x\n", inb(0x4d0), inb(0x4d1));
	debug_exit(0);
}
