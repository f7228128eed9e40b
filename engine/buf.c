/* buf.c — reference-counted immutable byte buffers (see buf.h). */
#include "engine/buf.h"

#include <stdlib.h>
#include <string.h>

pylon_buf *pylon_buf_new(size_t len)
{
    if (len > SIZE_MAX - sizeof(pylon_buf)) return NULL;
    pylon_buf *b = malloc(sizeof *b + len);
    if (!b) return NULL;
    atomic_init(&b->refs, 1);
    b->flags = 0;
    b->len = len;
    b->data = b->inline_;
    b->free_fn = NULL;
    b->free_ctx = NULL;
    return b;
}

pylon_buf *pylon_buf_copy(const void *data, size_t len)
{
    pylon_buf *b = pylon_buf_new(len);
    if (b && len) memcpy(b->data, data, len);
    return b;
}

pylon_buf *pylon_buf_wrap(void *data, size_t len, pylon_buf_free_fn free_fn, void *ctx)
{
    pylon_buf *b = malloc(sizeof *b);
    if (!b) return NULL;
    atomic_init(&b->refs, 1);
    b->flags = 0;
    b->len = len;
    b->data = data;
    b->free_fn = free_fn;
    b->free_ctx = ctx;
    return b;
}

void pylon_buf_release(pylon_buf *b)
{
    /* acq_rel: the freeing thread must see every other holder's reads as finished. */
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1) return;
    if (b->free_fn) b->free_fn(b->free_ctx, b->data, b->len);
    free(b);
}

static void free_taken(void *ctx, void *data, size_t len)
{
    (void)ctx;
    (void)len;
    free(data);
}

pylon_buf *pylon_buf_take(void *data, size_t len)
{
    pylon_buf *b = pylon_buf_wrap(data, len, free_taken, NULL);
    if (!b) free(data);
    return b;
}
