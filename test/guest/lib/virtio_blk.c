/* virtio-blk request helpers; see virtio_blk.h (OASIS VIRTIO 1.2 §5.2.6). */
#include "virtio_blk.h"
#include "kstring.h"

int blk_slot_init(struct blk_slot *s)
{
	s->hdr = virtio_alloc(16, 16);
	s->seg = virtio_alloc(16, 16);
	s->status = virtio_alloc(16, 16);
	s->table = virtio_alloc(16 * (BLK_MAX_SEGS + 2), 16);
	s->head = -1;
	return s->hdr && s->seg && s->status && s->table ? 0 : -1;
}

static void put_hdr(struct blk_slot *s, uint32_t type, uint64_t sector)
{
	volatile uint32_t *h = (volatile uint32_t *)s->hdr;
	h[0] = type;
	h[1] = 0;
	h[2] = (uint32_t)sector;
	h[3] = (uint32_t)(sector >> 32);
	*(volatile uint8_t *)s->status = 0xff;
}

int blk_submit(struct virtq *q, struct blk_slot *s, uint32_t type, uint64_t sector, uint32_t buf, uint32_t len, int nseg,
	       int indirect)
{
	struct vbuf b[BLK_MAX_SEGS + 2];
	if (nseg > BLK_MAX_SEGS)
		return -1;
	put_hdr(s, type, sector);
	int n = 0;
	b[n++] = (struct vbuf){s->hdr, 16, 0};
	/* IN and GET_ID fill the data; OUT reads it */
	int data_writable = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;
	if (len && nseg > 0) {
		uint32_t piece = len / (uint32_t)nseg;
		for (int i = 0; i < nseg; i++) {
			uint32_t l = i + 1 == nseg ? len - piece * (uint32_t)i : piece;
			b[n++] = (struct vbuf){buf + piece * (uint32_t)i, l, data_writable};
		}
	}
	b[n++] = (struct vbuf){s->status, 1, 1};
	s->head = virtq_submit(q, b, n, indirect ? s->table : 0);
	return s->head;
}

int blk_submit_dwz(struct virtq *q, struct blk_slot *s, uint32_t type, uint64_t sector, uint32_t nsectors, uint32_t flags)
{
	volatile uint32_t *g = (volatile uint32_t *)s->seg;
	g[0] = (uint32_t)sector;
	g[1] = (uint32_t)(sector >> 32);
	g[2] = nsectors;
	g[3] = flags;
	put_hdr(s, type, 0);
	struct vbuf b[3] = {{s->hdr, 16, 0}, {s->seg, 16, 0}, {s->status, 1, 1}};
	s->head = virtq_submit(q, b, 3, 0);
	return s->head;
}

static int wait_status(struct virtq *q, struct blk_slot *s)
{
	uint32_t len;
	int id = virtq_wait_used(q, &len, 10000);
	if (id < 0)
		return -1;
	if (id != s->head)
		return -2;
	return *(volatile uint8_t *)s->status;
}

static struct blk_slot sync_slot;
static int sync_ready;

static struct blk_slot *slot(void)
{
	if (!sync_ready) {
		blk_slot_init(&sync_slot);
		sync_ready = 1;
	}
	return &sync_slot;
}

int blk_do(struct virtio_dev *d, struct virtq *q, uint32_t type, uint64_t sector, uint32_t buf, uint32_t len, int nseg,
	   int indirect)
{
	struct blk_slot *s = slot();
	if (blk_submit(q, s, type, sector, buf, len, nseg, indirect) < 0)
		return -3;
	virtq_kick(d, q);
	return wait_status(q, s);
}

int blk_do_dwz(struct virtio_dev *d, struct virtq *q, uint32_t type, uint64_t sector, uint32_t nsectors, uint32_t flags)
{
	struct blk_slot *s = slot();
	if (blk_submit_dwz(q, s, type, sector, nsectors, flags) < 0)
		return -3;
	virtq_kick(d, q);
	return wait_status(q, s);
}
