/* virtio-blk requests for the polling driver (OASIS VIRTIO 1.2 §5.2 "Block
 * Device"): struct virtio_blk_req framing — a device-readable 16-byte header
 * (type, reserved, sector), the data, a device-writable status byte. */
#ifndef KIT_VIRTIO_BLK_H
#define KIT_VIRTIO_BLK_H

#include <stdint.h>
#include "virtio.h"

/* §5.2.3 feature bits */
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_MQ 12
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

/* §5.2.4 struct virtio_blk_config offsets */
#define VIRTIO_BLK_CFG_CAPACITY 0
#define VIRTIO_BLK_CFG_SEG_MAX 12
#define VIRTIO_BLK_CFG_BLK_SIZE 20
#define VIRTIO_BLK_CFG_NUM_QUEUES 34
#define VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS 36
#define VIRTIO_BLK_CFG_MAX_DISCARD_SEG 40
#define VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SECTORS 48
#define VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SEG 52

/* §5.2.6 request types and status */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP 1
#define VIRTIO_BLK_ID_BYTES 20

/* One request in flight: header and status live in the slot. */
struct blk_slot {
	uint32_t hdr;    /* 16 bytes: type, reserved, sector */
	uint32_t seg;    /* 16 bytes: a discard/write-zeroes segment */
	uint32_t status; /* 1 byte */
	uint32_t table;  /* an indirect table for up to BLK_MAX_SEGS + 2 descriptors */
	int head;
};

#define BLK_MAX_SEGS 64

/* Allocates the slot's header, status and indirect table. */
int blk_slot_init(struct blk_slot *s);
/* Queues one request; data is `nseg` equal pieces of [buf, buf+len) (direct
 * when `indirect` is 0). Returns the head, or -1. Does not notify. */
int blk_submit(struct virtq *q, struct blk_slot *s, uint32_t type, uint64_t sector, uint32_t buf, uint32_t len, int nseg,
	       int indirect);
/* DISCARD or WRITE_ZEROES with one segment. */
int blk_submit_dwz(struct virtq *q, struct blk_slot *s, uint32_t type, uint64_t sector, uint32_t nsectors, uint32_t flags);
/* Submits, notifies and waits (up to 10 s): returns the status byte, or -1 on timeout. */
int blk_do(struct virtio_dev *d, struct virtq *q, uint32_t type, uint64_t sector, uint32_t buf, uint32_t len, int nseg,
	   int indirect);
int blk_do_dwz(struct virtio_dev *d, struct virtq *q, uint32_t type, uint64_t sector, uint32_t nsectors, uint32_t flags);

/* The host writes this pattern into test images: the 32-bit word at byte offset o. */
static inline uint32_t blk_host_word(uint32_t o) { return (o >> 2) * 0x9e3779b1u + 0x12345678u; }
/* Guest-written data: the word at byte offset o of a buffer written with `seed`. */
static inline uint32_t blk_guest_word(uint32_t o, uint32_t seed) { return ((o >> 2) + seed) * 0x85ebca6bu ^ seed; }

#endif
