#include "pci.h"
#include "io.h"

static void select_reg(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t reg)
{
	outl(PCI_CONFIG_ADDRESS, 0x80000000u | (uint32_t)bus << 16 | (uint32_t)(dev & 0x1f) << 11 |
					 (uint32_t)(fn & 7) << 8 | (reg & 0xfc));
}

uint32_t pci_read32(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t reg)
{
	select_reg(bus, dev, fn, reg);
	return inl(PCI_CONFIG_DATA);
}

uint16_t pci_read16(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t reg)
{
	select_reg(bus, dev, fn, reg);
	return inw(PCI_CONFIG_DATA + (reg & 2));
}

uint8_t pci_read8(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t reg)
{
	select_reg(bus, dev, fn, reg);
	return inb(PCI_CONFIG_DATA + (reg & 3));
}

void pci_write32(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t reg, uint32_t v)
{
	select_reg(bus, dev, fn, reg);
	outl(PCI_CONFIG_DATA, v);
}

void pci_write16(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t reg, uint16_t v)
{
	select_reg(bus, dev, fn, reg);
	outw(PCI_CONFIG_DATA + (reg & 2), v);
}

void pci_write8(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t reg, uint8_t v)
{
	select_reg(bus, dev, fn, reg);
	outb(PCI_CONFIG_DATA + (reg & 3), v);
}
