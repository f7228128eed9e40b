/*
 * buf.h — reference-counted immutable byte buffers.
 *
 * One encode, many senders: a snapshot or change event is encoded once into a buffer and the
 * same buffer is handed to every socket that sends it, each holding a reference. The creator
 * fills `data` before the first retain; from then on the bytes never change. The last release
 * frees the buffer (or calls the wrapper's free function) exactly once.
 */
#ifndef PYLON_ENGINE_BUF_H
#define PYLON_ENGINE_BUF_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pylon_buf pylon_buf;

/* A frame that means something only to a receiver that got the previous frame of its stream
 * (a pylon.delta snapshot: a diff against the one before). A stream that drops a frame drops
 * every dependent frame after it too, up to the next independent one (http/stream.h). */
#define PYLON_BUF_DEPENDENT 1u
typedef void (*pylon_buf_free_fn)(void *ctx, void *data, size_t len);

struct pylon_buf {
    _Atomic uint32_t refs;
    uint32_t flags; /* PYLON_BUF_*: set by the creator before sharing, like the bytes */
    size_t len;
    uint8_t *data;             /* points at inline_[] for pylon_buf_new/copy */
    pylon_buf_free_fn free_fn; /* wrapped buffers only */
    void *free_ctx;
    uint8_t inline_[];
};

/* A buffer of `len` bytes to fill before sharing. NULL on memory exhaustion. */
pylon_buf *pylon_buf_new(size_t len);
pylon_buf *pylon_buf_copy(const void *data, size_t len);
/* Takes ownership of malloc'd `data`: free(data) on the last release. NULL on exhaustion
 * (then `data` is freed too, so the caller never leaks it). */
pylon_buf *pylon_buf_take(void *data, size_t len);
/* Takes ownership of `data`; free_fn(ctx, data, len) runs on the last release. */
pylon_buf *pylon_buf_wrap(void *data, size_t len, pylon_buf_free_fn free_fn, void *ctx);

static inline pylon_buf *pylon_buf_retain(pylon_buf *b)
{
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
    return b;
}

/* n references at once: a frame going to n sockets costs one atomic add on the sending thread
 * instead of n (each of which would pull the counter's cache line back from the I/O loops
 * releasing it). */
static inline pylon_buf *pylon_buf_retain_n(pylon_buf *b, uint32_t n)
{
    atomic_fetch_add_explicit(&b->refs, n, memory_order_relaxed);
    return b;
}

void pylon_buf_release(pylon_buf *b);

#endif
