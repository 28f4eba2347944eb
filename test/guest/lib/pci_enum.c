#include "pci_enum.h"
#include "pci.h"
#include "io.h"

int pci_present(uint8_t bus, uint8_t dev, uint8_t fn)
{
	return pci_read16(bus, dev, fn, PCI_VENDOR_ID) != 0xffff;
}

static int walk_bus(uint8_t bus, void (*visit)(const struct pci_fn *, void *), void *arg, int depth)
{
	int count = 0;
	if (depth > 8)
		return 0;
	for (int dev = 0; dev < 32; dev++) {
		if (!pci_present(bus, dev, 0))
			continue;
		int nfn = (pci_read8(bus, dev, 0, PCI_HEADER_TYPE) & 0x80) ? 8 : 1;
		for (int fn = 0; fn < nfn; fn++) {
			if (!pci_present(bus, dev, fn))
				continue;
			struct pci_fn f;
			uint32_t id = pci_read32(bus, dev, fn, PCI_VENDOR_ID);
			f.bus = bus;
			f.dev = dev;
			f.fn = fn;
			f.vendor = id & 0xffff;
			f.device = id >> 16;
			f.class_code = pci_read16(bus, dev, fn, PCI_CLASS_DEVICE);
			f.header_type = pci_read8(bus, dev, fn, PCI_HEADER_TYPE) & 0x7f;
			count++;
			if (visit)
				visit(&f, arg);
			if (f.class_code == PCI_CLASS_BRIDGE_PCI && f.header_type == 1) {
				uint8_t sec = pci_read8(bus, dev, fn, PCI_SECONDARY_BUS);
				if (sec > bus)
					count += walk_bus(sec, visit, arg, depth + 1);
			}
		}
	}
	return count;
}

int pci_enumerate(void (*visit)(const struct pci_fn *f, void *arg), void *arg)
{
	return walk_bus(0, visit, arg, 0);
}

uint8_t pci_find_cap(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t id)
{
	if (!(pci_read16(bus, dev, fn, PCI_STATUS) & PCI_STATUS_CAP_LIST))
		return 0;
	uint8_t p = pci_read8(bus, dev, fn, PCI_CAPABILITY_LIST) & 0xfc;
	for (int n = 0; p >= 0x40 && n < 48; n++) {
		if (pci_read8(bus, dev, fn, p) == id)
			return p;
		p = pci_read8(bus, dev, fn, p + 1) & 0xfc;
	}
	return 0;
}

void pci_bar_probe(uint8_t bus, uint8_t dev, uint8_t fn, int index, struct pci_bar *out)
{
	uint8_t reg = PCI_BAR0 + 4 * index;
	uint16_t cmd = pci_read16(bus, dev, fn, PCI_COMMAND);
	uint32_t lo = pci_read32(bus, dev, fn, reg);
	out->is_io = lo & 1;
	out->is_64 = !out->is_io && (lo & 6) == 4;
	out->prefetch = !out->is_io && (lo & 8);
	uint32_t hi = out->is_64 ? pci_read32(bus, dev, fn, reg + 4) : 0;
	out->addr = ((uint64_t)hi << 32) | (lo & (out->is_io ? ~3u : ~15u));
	/* sizing with decode off, as firmware does (PCI 3.0 §6.2.5.1) */
	pci_write16(bus, dev, fn, PCI_COMMAND, cmd & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY));
	pci_write32(bus, dev, fn, reg, 0xffffffff);
	uint32_t slo = pci_read32(bus, dev, fn, reg);
	pci_write32(bus, dev, fn, reg, lo);
	uint32_t shi = 0xffffffff;
	if (out->is_64) {
		pci_write32(bus, dev, fn, reg + 4, 0xffffffff);
		shi = pci_read32(bus, dev, fn, reg + 4);
		pci_write32(bus, dev, fn, reg + 4, hi);
	}
	pci_write16(bus, dev, fn, PCI_COMMAND, cmd);
	uint64_t mask = ((uint64_t)shi << 32) | (slo & (out->is_io ? ~3u : ~15u));
	if (out->is_io)
		mask |= 0xffffffff00000000ull;
	out->size = (slo == 0 && !out->is_64) ? 0 : (~mask + 1);
	if (!out->is_io && !out->is_64 && slo == 0)
		out->size = 0;
}

struct find_arg {
	uint16_t vendor, device;
	int nth, seen, found;
	struct pci_fn *out;
};

static void find_visit(const struct pci_fn *f, void *p)
{
	struct find_arg *a = p;
	if (a->found || f->vendor != a->vendor || f->device != a->device)
		return;
	if (a->seen++ == a->nth) {
		*a->out = *f;
		a->found = 1;
	}
}

int pci_find(uint16_t vendor, uint16_t device, int nth, struct pci_fn *out)
{
	struct find_arg a = { vendor, device, nth, 0, 0, out };
	pci_enumerate(find_visit, &a);
	return a.found ? 0 : -1;
}

struct scan_arg {
	struct pci_node *nodes;
	int max, n;
};

static void scan_visit(const struct pci_fn *f, void *p)
{
	struct scan_arg *a = p;
	if (a->n >= a->max)
		return;
	int parent = -1;
	for (int i = a->n - 1; i >= 0 && f->bus != 0; i--) {
		const struct pci_fn *b = &a->nodes[i].f;
		if (b->class_code == PCI_CLASS_BRIDGE_PCI && b->header_type == 1 &&
		    pci_read8(b->bus, b->dev, b->fn, PCI_SECONDARY_BUS) == f->bus) {
			parent = i;
			break;
		}
	}
	a->nodes[a->n].f = *f;
	a->nodes[a->n].parent = parent;
	a->n++;
}

int pci_scan(struct pci_node *nodes, int max)
{
	struct scan_arg a = { nodes, max, 0 };
	pci_enumerate(scan_visit, &a);
	return a.n;
}

uint8_t pci_piix_expected_line(const struct pci_node *nodes, int i, uint8_t pin, const uint8_t pirq_irq[4])
{
	int addend = 0;
	while (nodes[i].parent >= 0) {
		addend += nodes[i].f.dev;
		i = nodes[i].parent;
	}
	addend += nodes[i].f.dev - 1;
	return pirq_irq[(pin - 1 + addend) & 3];
}

int testdev_mmio_name(uint32_t base, int n, char *buf, int size)
{
	mmio_write8(base, (uint8_t)n);
	int i = 0;
	for (; i < size - 1; i++) {
		char c = (char)mmio_read8(base + 16 + i);
		if (!c)
			break;
		buf[i] = c;
	}
	buf[i] = 0;
	return mmio_read8(base + 1);
}

int testdev_io_name(uint16_t base, int n, char *buf, int size)
{
	outb(base, (uint8_t)n);
	int i = 0;
	for (; i < size - 1; i++) {
		char c = (char)inb(base + 16 + i);
		if (!c)
			break;
		buf[i] = c;
	}
	buf[i] = 0;
	return inb(base + 1);
}
