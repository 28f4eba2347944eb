/* PCI enumeration through bridges, as firmware left the machine
 * (PCI Local Bus 3.0 §6.1-6.2, PCI-to-PCI Bridge 1.2 §3.2):
 *
 *   testdevs=<n> bridges=<m>   how many pci-testdev and pci-bridge functions to expect
 *
 * Walks every bus from 0 through bridges' secondary bus numbers, checks the
 * host bridge and PIIX3, each bridge's bus numbers and Slot ID capability,
 * each pci-testdev's IDs, class and BARs (assigned, decoded, inside the
 * windows of every bridge above, overlapping nothing), and talks to every
 * pci-testdev through both BARs. */
#include "kit.h"
#include "pci_enum.h"

#define MAX_NODES 96

static struct pci_node nodes[MAX_NODES];

struct range {
	uint64_t base, size;
	int node;
};
static struct range mem[MAX_NODES], io[MAX_NODES];
static int nmem, nio;

static int overlaps(const struct range *r, int n)
{
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++)
			if (r[i].base < r[j].base + r[j].size && r[j].base < r[i].base + r[i].size) {
				tap_diag("BARs of nodes %d and %d overlap at 0x%llx", r[i].node, r[j].node,
					 (unsigned long long)r[j].base);
				return 1;
			}
	return 0;
}

/* Whether [base, base+size) is inside the window of type `kind` (0 I/O, 1 memory) of every bridge above node i. */
static int inside_windows(int i, uint64_t base, uint64_t size, int kind)
{
	for (int p = nodes[i].parent; p >= 0; p = nodes[p].parent) {
		const struct pci_fn *b = &nodes[p].f;
		uint64_t lo, hi;
		if (kind == 0) {
			lo = (uint64_t)(pci_read8(b->bus, b->dev, b->fn, PCI_IO_BASE) & 0xf0) << 8;
			hi = ((uint64_t)(pci_read8(b->bus, b->dev, b->fn, PCI_IO_LIMIT) & 0xf0) << 8) | 0xfff;
		} else {
			lo = (uint64_t)(pci_read16(b->bus, b->dev, b->fn, PCI_MEMORY_BASE) & 0xfff0) << 16;
			hi = ((uint64_t)(pci_read16(b->bus, b->dev, b->fn, PCI_MEMORY_LIMIT) & 0xfff0) << 16) | 0xfffff;
		}
		uint16_t cmd = pci_read16(b->bus, b->dev, b->fn, PCI_COMMAND);
		if (!(cmd & (kind == 0 ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY)))
			return 0;
		if (base < lo || base + size - 1 > hi)
			return 0;
	}
	return 1;
}

int guest_main(void)
{
	const char *cmd = multiboot_cmdline();
	uint32_t want_testdevs = cmdline_get_u32(cmd, "testdevs", 0);
	uint32_t want_bridges = cmdline_get_u32(cmd, "bridges", 0);
	tap_plan(14);

	int n = pci_scan(nodes, MAX_NODES);
	tap_diag("%d functions", n);

	tap_ok(pci_read32(0, 0, 0, PCI_VENDOR_ID) == 0x12378086 && pci_read16(0, 0, 0, PCI_CLASS_DEVICE) == 0x0600,
	       "00:00.0 is the i440FX host bridge 8086:1237, class 0600");
	tap_ok(pci_read32(0, 1, 0, PCI_VENDOR_ID) == 0x70008086 && pci_read16(0, 1, 0, PCI_CLASS_DEVICE) == 0x0601 &&
		       (pci_read8(0, 1, 0, PCI_HEADER_TYPE) & 0x80),
	       "00:01.0 is PIIX3 8086:7000, class 0601, multi-function");

	uint32_t bridges = 0, bridges_ok = 0, chassis_ok = 0, testdevs = 0, ids_ok = 0, behind = 0;
	uint32_t bars_ok = 0, decode_ok = 0, windows_ok = 0, mmio_ok = 0, io_ok = 0;
	uint32_t chassis_seen = 0;
	uint8_t max_bus = 0;
	for (int i = 0; i < n; i++) {
		const struct pci_fn *f = &nodes[i].f;
		if (f->bus > max_bus)
			max_bus = f->bus;
		if (f->vendor == PCI_TESTDEV_VENDOR && f->device == PCI_BRIDGE_DEVICE) {
			bridges++;
			uint8_t pri = pci_read8(f->bus, f->dev, f->fn, PCI_PRIMARY_BUS);
			uint8_t sec = pci_read8(f->bus, f->dev, f->fn, PCI_SECONDARY_BUS);
			uint8_t sub = pci_read8(f->bus, f->dev, f->fn, PCI_SUBORDINATE_BUS);
			if (f->class_code == PCI_CLASS_BRIDGE_PCI && f->header_type == 1 && pri == f->bus && sec > pri && sub >= sec)
				bridges_ok++;
			else
				tap_diag("bridge %02x:%02x.%x: class %04x type %u buses %u/%u/%u", f->bus, f->dev, f->fn,
					 f->class_code, f->header_type, pri, sec, sub);
			uint8_t cap = pci_find_cap(f->bus, f->dev, f->fn, PCI_CAP_ID_SLOTID);
			uint8_t chassis = cap ? pci_read8(f->bus, f->dev, f->fn, cap + 3) : 0;
			if (cap && chassis && chassis < 32 && !(chassis_seen & (1u << chassis)) &&
			    (pci_read8(f->bus, f->dev, f->fn, cap + 2) & 0x20))
				chassis_ok++;
			chassis_seen |= 1u << (chassis & 31);
			continue;
		}
		if (f->vendor != PCI_TESTDEV_VENDOR || f->device != PCI_TESTDEV_DEVICE)
			continue;
		testdevs++;
		if (f->bus != 0)
			behind++;
		if (f->class_code == 0x00ff && f->header_type == 0 && pci_read8(f->bus, f->dev, f->fn, PCI_REVISION_ID) == 0)
			ids_ok++;
		struct pci_bar b0, b1;
		pci_bar_probe(f->bus, f->dev, f->fn, 0, &b0);
		pci_bar_probe(f->bus, f->dev, f->fn, 1, &b1);
		if (!b0.is_io && b0.size == 0x1000 && b0.addr && !(b0.addr & 0xfff) && b1.is_io && b1.size == 0x100 && b1.addr &&
		    !(b1.addr & 0xff))
			bars_ok++;
		else
			tap_diag("testdev %02x:%02x.%x BAR0 0x%llx/0x%llx BAR1 0x%llx/0x%llx", f->bus, f->dev, f->fn,
				 (unsigned long long)b0.addr, (unsigned long long)b0.size, (unsigned long long)b1.addr,
				 (unsigned long long)b1.size);
		if ((pci_read16(f->bus, f->dev, f->fn, PCI_COMMAND) & 3) == 3)
			decode_ok++;
		if (inside_windows(i, b0.addr, b0.size, 1) && inside_windows(i, b1.addr, b1.size, 0))
			windows_ok++;
		mem[nmem++] = (struct range){ b0.addr, b0.size, i };
		io[nio++] = (struct range){ b1.addr, b1.size, i };
		char name[32];
		if (testdev_mmio_name((uint32_t)b0.addr, 0, name, sizeof(name)) == 1 && !strcmp(name, "mmio-no-eventfd"))
			mmio_ok++;
		if (testdev_io_name((uint16_t)b1.addr, 0, name, sizeof(name)) == 1 && !strcmp(name, "portio-no-eventfd"))
			io_ok++;
	}
	tap_is(bridges, want_bridges, "pci-bridge functions found");
	tap_is(bridges_ok, bridges, "bridges: class 0604, type 1 header, primary = own bus < secondary <= subordinate");
	tap_is(chassis_ok, bridges, "bridges: Slot ID capability, First In Chassis, distinct chassis numbers");
	tap_is(max_bus, want_bridges, "buses numbered 0..bridges");
	tap_is(testdevs, want_testdevs, "pci-testdev functions found");
	tap_is(behind, want_bridges ? want_testdevs : 0, "pci-testdevs sit behind the bridges");
	tap_is(ids_ok, testdevs, "pci-testdev: 1b36:0005 rev 0, class 00ff, type 0 header");
	tap_is(bars_ok, testdevs, "pci-testdev: BAR0 4 KiB memory and BAR1 256-byte I/O, assigned and aligned");
	tap_is(decode_ok, testdevs, "pci-testdev: I/O and memory decode enabled");
	tap_is(windows_ok, testdevs, "pci-testdev: BARs inside the windows of every bridge above, which decode");
	tap_ok(!overlaps(mem, nmem) && !overlaps(io, nio), "no two BARs overlap");
	tap_is(mmio_ok + io_ok, 2 * testdevs, "every pci-testdev answers through BAR0 (mmio-no-eventfd) and BAR1 (portio-no-eventfd)");
	tap_done();
}
