/* PCI enumeration helpers for the PCI guests (PCI Local Bus 3.0 §6, PCI-to-
 * PCI Bridge 1.2 §3.2): walk buses from 0 through bridges as firmware left
 * them, size and decode BARs, find capabilities. Built on pci.h. */
#ifndef KIT_PCI_ENUM_H
#define KIT_PCI_ENUM_H

#include <stdint.h>

#define PCI_REVISION_ID 0x08
#define PCI_CLASS_DEVICE 0x0a
#define PCI_INTERRUPT_PIN 0x3d
#define PCI_PRIMARY_BUS 0x18
#define PCI_SECONDARY_BUS 0x19
#define PCI_SUBORDINATE_BUS 0x1a
#define PCI_IO_BASE 0x1c
#define PCI_IO_LIMIT 0x1d
#define PCI_MEMORY_BASE 0x20
#define PCI_MEMORY_LIMIT 0x22
#define PCI_PREF_MEMORY_BASE 0x24
#define PCI_PREF_MEMORY_LIMIT 0x26
#define PCI_PREF_BASE_UPPER32 0x28
#define PCI_PREF_LIMIT_UPPER32 0x2c
#define PCI_BRIDGE_CONTROL 0x3e
#define PCI_STATUS_CAP_LIST 0x10
#define PCI_COMMAND_INTX_DISABLE 0x400
#define PCI_CLASS_BRIDGE_PCI 0x0604
#define PCI_CAP_ID_SLOTID 0x04
#define PCI_CAP_ID_MSI 0x05
#define PCI_CAP_ID_MSIX 0x11

struct pci_fn {
	uint8_t bus, dev, fn;
	uint16_t vendor, device;
	uint16_t class_code; /* base class << 8 | sub-class */
	uint8_t header_type; /* bit 7 masked off */
};

/* Visits every present function on every bus reachable from bus 0 through
 * bridges' secondary bus numbers, depth first; returns how many. */
int pci_enumerate(void (*visit)(const struct pci_fn *f, void *arg), void *arg);
/* Whether (bus, dev, fn) answers. */
int pci_present(uint8_t bus, uint8_t dev, uint8_t fn);
/* Capability offset, or 0. */
uint8_t pci_find_cap(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t id);

struct pci_bar {
	int is_io, is_64, prefetch;
	uint64_t addr; /* as programmed */
	uint64_t size; /* 0: not implemented */
};
/* Reads and sizes BAR `index` (restores it and the command register). */
void pci_bar_probe(uint8_t bus, uint8_t dev, uint8_t fn, int index, struct pci_bar *out);
/* First function with this vendor/device from `start` (index in enumeration order), or -1. */
int pci_find(uint16_t vendor, uint16_t device, int nth, struct pci_fn *out);

/* Every reachable function with the bridge above it: parent is the index of
 * the bridge in the same array, -1 on bus 0. Returns how many were stored. */
struct pci_node {
	struct pci_fn f;
	int parent;
};
int pci_scan(struct pci_node *nodes, int max);

/* The ISA IRQ SeaBIOS's PIIX routing gives pin (1-4) of nodes[i]: the
 * device's slot and every bridge's slot on the way up, plus the root slot
 * minus one, select PIRQ A-D, which 0x60-0x63 of the PIIX3 map to an IRQ. */
uint8_t pci_piix_expected_line(const struct pci_node *nodes, int i, uint8_t pin, const uint8_t pirq_irq[4]);

/* pci-testdev (QEMU docs/specs/pci-testdev.rst) through one of its BARs */
#define PCI_TESTDEV_VENDOR 0x1b36
#define PCI_TESTDEV_DEVICE 0x0005
#define PCI_BRIDGE_DEVICE 0x0001
/* Starts test `n` and copies its name (up to size-1 bytes); returns the width byte. */
int testdev_mmio_name(uint32_t base, int n, char *buf, int size);
int testdev_io_name(uint16_t base, int n, char *buf, int size);

#endif
