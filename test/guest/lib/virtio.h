/* A polling virtio 1.x driver over PCI (OASIS VIRTIO 1.2 §4.1 "Virtio Over
 * PCI Bus", §2.7 split virtqueues, §3.1 device initialization).
 *
 * Finds a device by PCI ID — modern 0x1040 + type, or a transitional ID
 * 0x1000-0x103f whose subsystem ID is the type (QEMU's default) — and always
 * drives it through the modern capabilities (common, notify, ISR, device).
 * No interrupts: the driver suppresses them (VIRTQ_AVAIL_F_NO_INTERRUPT, or
 * used_event kept out of reach with EVENT_IDX) and polls the used ring.
 * Guest physical = virtual (no paging), so ring and buffer pointers are
 * guest physical addresses. Memory for rings and buffers comes from a bump
 * allocator over a region the caller names (virtio_mem_init). */
#ifndef KIT_VIRTIO_H
#define KIT_VIRTIO_H

#include <stdint.h>

#define VIRTIO_PCI_VENDOR 0x1af4

#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_RNG 4

/* §2.1 device status */
#define VIRTIO_S_ACKNOWLEDGE 0x01
#define VIRTIO_S_DRIVER 0x02
#define VIRTIO_S_DRIVER_OK 0x04
#define VIRTIO_S_FEATURES_OK 0x08
#define VIRTIO_S_NEEDS_RESET 0x40
#define VIRTIO_S_FAILED 0x80

/* §6 reserved feature bits */
#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
} __attribute__((packed));

struct virtq {
	uint16_t index;
	uint16_t size;
	uint16_t notify_off;
	int event_idx;
	volatile struct virtq_desc *desc;
	volatile uint16_t *avail; /* flags, idx, ring[size], used_event */
	volatile uint32_t *used;  /* flags|idx<<16, {id, len}[size], avail_event (u16) */
	uint16_t free_head;
	uint16_t num_free;
	uint16_t avail_idx;
	uint16_t last_used;
	uint16_t kicked_idx; /* avail idx at the last notification, for EVENT_IDX */
};

struct virtio_dev {
	uint8_t bus, dev, fn;
	uint16_t device_id;
	int transitional;
	volatile uint8_t *common;
	volatile uint8_t *isr;
	volatile uint8_t *device;
	volatile uint8_t *notify;
	uint32_t notify_mul;
	uint64_t features; /* negotiated */
};

/* Buffers for virtq_submit: guest physical address, length, direction. */
struct vbuf {
	uint32_t addr;
	uint32_t len;
	int writable;
};

/* Rings and buffers are carved from [base, base+size). */
void virtio_mem_init(uint32_t base, uint32_t size);
/* Aligned bytes from that region (not zeroed); 0 when it is exhausted. */
uint32_t virtio_alloc(uint32_t size, uint32_t align);

/* Finds the `nth` (0-based) device of virtio type `type` on bus 0 and maps
 * its modern capabilities; enables memory decode and bus mastering.
 * Returns 0, or -1 with a diagnostic printed. */
int virtio_find(int type, int nth, struct virtio_dev *d);

/* §3.1.1 steps 1-6: reset (waiting for status 0), ACKNOWLEDGE, DRIVER,
 * features (offered & wanted, VERSION_1 always), FEATURES_OK and its check.
 * Returns 0, or -1 when the device refused the features. */
int virtio_init(struct virtio_dev *d, uint64_t wanted);
uint64_t virtio_device_features(struct virtio_dev *d);
int virtio_has(struct virtio_dev *d, int bit);
uint8_t virtio_status(struct virtio_dev *d);
void virtio_set_status(struct virtio_dev *d, uint8_t s);
/* Writes 0 and waits until the device reads back 0 (§4.1.4.3.1). */
void virtio_reset(struct virtio_dev *d);
uint16_t virtio_num_queues(struct virtio_dev *d);
uint16_t virtio_queue_max_size(struct virtio_dev *d, uint16_t index);

/* Sets up queue `index` with at most `size` entries (0: the device's size). */
int virtq_setup(struct virtio_dev *d, struct virtq *q, uint16_t index, uint16_t size);
void virtio_driver_ok(struct virtio_dev *d);

/* Device config space accessors (§4.1.4.6). */
uint8_t virtio_cfg8(struct virtio_dev *d, uint32_t off);
uint16_t virtio_cfg16(struct virtio_dev *d, uint32_t off);
uint32_t virtio_cfg32(struct virtio_dev *d, uint32_t off);
uint64_t virtio_cfg64(struct virtio_dev *d, uint32_t off);
uint8_t virtio_config_generation(struct virtio_dev *d);

/* Makes a chain of n buffers available (readable ones first); with
 * `indirect` (needs VIRTIO_F_INDIRECT_DESC) the chain goes into an indirect
 * table at that guest address instead. Returns the head, or -1 when the
 * queue has no free descriptors. Does not notify. */
int virtq_submit(struct virtq *q, const struct vbuf *bufs, int n, uint32_t indirect);
/* Notifies the device about new buffers (honours VIRTQ_USED_F_NO_NOTIFY /
 * avail_event); returns 1 if it wrote the notify register. */
int virtq_kick(struct virtio_dev *d, struct virtq *q);
/* Notifies unconditionally. */
void virtq_notify(struct virtio_dev *d, struct virtq *q);
/* The next used element: returns its id and stores its length, or -1. */
int virtq_get_used(struct virtq *q, uint32_t *len);
/* Polls for a used element for at most `ms` milliseconds (TSC-timed). */
int virtq_wait_used(struct virtq *q, uint32_t *len, uint32_t ms);
uint16_t virtq_used_idx(struct virtq *q);

/* TSC ticks per millisecond, calibrated once against RTC seconds (about
 * 1-2 s the first time); guests use it to time without VM exits. */
uint64_t tsc_per_ms(void);
/* Milliseconds since `start` (a rdtsc value). */
uint32_t tsc_ms_since(uint64_t start);

#endif
