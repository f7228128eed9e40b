/*
 * ws.c — WebSocket and SSE streams on a connection: the handshake, frames in (wslay), frames
 * out (pre-framed shared buffers), liveness, backlog policy and closing.
 *
 * Memory: an idle WebSocket costs its connection, a small ws_state and the stream handle. The
 * wslay context (about 9 KB) exists only while a client is talking: it is created when a
 * complete frame arrives and freed by the sweep once the client has been quiet for a while at
 * a message boundary. Incoming bytes are split into whole frames here (only the header is
 * read), so wslay always gets whole frames and can be dropped between them safely; the same
 * header read enforces PYLON_WS_MAX_FRAME before a byte of an oversized payload is buffered.
 *
 * Out: the server's frames are built once (pylon_ws_frame) and written as shared buffers;
 * wslay writes only its control frames (pong, close replies) through send_cb. Frames sent from
 * other threads collect in the stream's outbox and go out with one writev per loop turn.
 */
#include "http/server_internal.h"

#include "engine/clock.h"
#include "engine/log.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

#define WSLAY_IDLE_FREE_S 10
#define WS_GUID           "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" /* RFC 6455 §1.3 */

struct pylon_stream {
    _Atomic uint32_t refs;
    atomic_bool open;
    pylon_stream_kind kind;
    io_loop *io;
    pylon_conn *conn; /* loop thread only; NULL once the connection is gone */
    const pylon_stream_handlers *h;
    void *user;
    _Atomic uint64_t skipped;
    /* The outbox: what other threads send waits here until the loop runs out_task, which
     * writes everything that accumulated with one writev. A task is posted only when the
     * outbox goes from empty to non-empty, so under load the batches grow by themselves.
     * Bound: none of its own, like the loop's task queue it replaces: it holds only what was
     * sent since the loop's last turn on this stream (references to shared frames, no
     * copies); the client's backlog bound applies when the loop writes (stream_write_batch). */
    pthread_mutex_t out_lock;
    pylon_buf **out; /* out_lock */
    size_t out_n, out_cap;
    bool out_posted;   /* out_lock: out_task is queued on the loop */
    bool close_wanted; /* out_lock: pylon_stream_close asked, from another thread */
    bool close_asked;  /* out_lock: sticky; what is sent after a close request is dropped */
    bool out_cut;      /* out_lock: the outbox dropped a frame (run_outbox passes it on) */
    uint16_t close_code;
    char close_reason[64];
    pylon_loop_task out_task;
    pylon_buf **spare; /* loop thread: the previous batch's array, reused by the next one */
    size_t spare_cap;
    /* Loop thread: a frame was dropped and no independent frame has gone out since, so
     * dependent frames (PYLON_BUF_DEPENDENT) are dropped too: the client lacks their base. */
    bool chain_cut;
};

struct ws_state {
    pylon_stream *stream;
    wslay_event_context_ptr ctx; /* only while the client is talking */
    uint8_t *in;                 /* a partial frame */
    size_t in_len;
    const uint8_t *feed; /* what recv_cb hands to wslay */
    size_t feed_len;
    uint64_t last_ping_s, last_frame_s;
    bool sse, in_fragment, close_sent, close_received;
    bool in_recv; /* inside wslay_event_recv: wslay must not be re-entered */
};

/* ---- handles ----------------------------------------------------------------------------- */

void pylon_stream_retain(pylon_stream *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void pylon_stream_release(pylon_stream *s)
{
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
    /* A posted outbox holds a reference, so the outbox is empty here; be safe anyway. */
    for (size_t i = 0; i < s->out_n; i++)
        pylon_buf_release(s->out[i]);
    free(s->out);
    free(s->spare);
    pthread_mutex_destroy(&s->out_lock);
    free(s);
}

pylon_stream_kind pylon_stream_kind_of(const pylon_stream *s)
{
    return s->kind;
}

uint64_t pylon_stream_skipped(const pylon_stream *s)
{
    return atomic_load_explicit(&((pylon_stream *)s)->skipped, memory_order_relaxed);
}

bool pylon_stream_is_open(const pylon_stream *s)
{
    return atomic_load_explicit(&((pylon_stream *)s)->open, memory_order_acquire);
}

/* ---- framing ----------------------------------------------------------------------------- */

pylon_buf *pylon_ws_frame(int opcode, const void *payload, size_t len)
{
    size_t hl = len < 126 ? 2 : len < 65536 ? 4 : 10;
    pylon_buf *b = pylon_buf_new(hl + len);
    if (!b) return NULL;
    uint8_t *p = b->data;
    p[0] = (uint8_t)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        p[1] = (uint8_t)len;
    } else if (len < 65536) {
        p[1] = 126;
        p[2] = (uint8_t)(len >> 8);
        p[3] = (uint8_t)len;
    } else {
        p[1] = 127;
        for (int i = 0; i < 8; i++)
            p[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    if (len && payload) memcpy(p + hl, payload, len);
    return b;
}

pylon_buf *pylon_sse_event(const char *json, size_t len)
{
    pylon_buf *b = pylon_buf_new(len + 8);
    if (!b) return NULL;
    memcpy(b->data, "data: ", 6);
    memcpy(b->data + 6, json, len);
    memcpy(b->data + 6 + len, "\n\n", 2);
    return b;
}

static pylon_buf *close_frame(uint16_t code, const char *reason)
{
    uint8_t payload[125];
    size_t rl = reason ? strlen(reason) : 0;
    if (rl > sizeof payload - 2) rl = sizeof payload - 2;
    payload[0] = (uint8_t)(code >> 8);
    payload[1] = (uint8_t)code;
    if (rl) memcpy(payload + 2, reason, rl);
    return pylon_ws_frame(0x8, payload, 2 + rl);
}

/* ---- closing ----------------------------------------------------------------------------- */

/* Loop thread. WebSocket: close frame then close; SSE: end of the response. */
static void stream_close_now(pylon_conn *c, uint16_t code, const char *reason)
{
    ws_state *ws = c->ws;
    if (!ws || c->closing || c->close_after_write || c->lingering) return;
    if (code == 0) { /* drop without a close frame (e.g. an unknown shard, protocol.md §4.1) */
        pylon_conn_close(c);
        return;
    }
    if (!ws->sse && !ws->close_sent) {
        ws->close_sent = true;
        if (ws->ctx) {
            wslay_event_queue_close(ws->ctx, code, (const uint8_t *)reason,
                                    reason ? strlen(reason) : 0);
            if (!ws->in_recv) wslay_event_send(ws->ctx); /* else feed_frames sends it */
        } else {
            pylon_buf *f = close_frame(code, reason);
            if (f) pylon_conn_write(c, &f, 1);
        }
    }
    atomic_store(&ws->stream->open, false);
    pylon_conn_close_when_flushed(c);
}

void pylon_stream_shutdown(pylon_conn *c)
{
    stream_close_now(c, 1001, "server shutting down");
}

void pylon_stream_on_conn_closed(pylon_conn *c)
{
    ws_state *ws = c->ws;
    pylon_stream *s = ws->stream;
    atomic_store(&s->open, false);
    s->conn = NULL;
    STAT_ADD(c->io->stats.open[PYLON_LISTEN_COUNT + (ws->sse ? 1 : 0)], -1);
    if (s->h && s->h->on_close) s->h->on_close(s->user, s);
}

void pylon_ws_state_free(ws_state *ws)
{
    if (!ws) return;
    if (ws->ctx) wslay_event_context_free(ws->ctx);
    free(ws->in);
    pylon_stream_release(ws->stream); /* the connection's reference */
    free(ws);
}

/* ---- sending from any thread ------------------------------------------------------------- */

/* Loop thread: while the chain is cut, the dependent frames from bufs[from] on are dropped and
 * counted as skipped, up to the first independent frame, which mends it. Returns the index of
 * the first frame kept (n when none is). */
static size_t drop_cut_chain(pylon_stream *s, pylon_buf **bufs, size_t from, size_t n)
{
    if (!s->chain_cut) return from;
    size_t k = from;
    while (k < n && (bufs[k]->flags & PYLON_BUF_DEPENDENT))
        pylon_buf_release(bufs[k++]);
    if (k < n) s->chain_cut = false;
    if (k > from) atomic_fetch_add_explicit(&s->skipped, k - from, memory_order_relaxed);
    return k;
}

/* Loop thread: writes frames [0, n) in order with one writev, then applies the backlog
 * policy to what the socket did not take. Takes the references. Returns false when a frame
 * was dropped or the stream is gone.
 *
 * The bound is judged frame by frame as if each had been written on its own: a frame is
 * refused when something already waits (queued on the socket, or earlier frames of this
 * batch the socket did not take) and it would bring the wait past the bound. So one large
 * frame to a client that keeps up is not a backlog, and a big batch to a client that reads is
 * not either, as long as its socket takes it. */
static bool stream_write_batch(pylon_stream *s, pylon_buf **bufs, size_t n)
{
    pylon_conn *c = s->conn;
    if (!c || c->closing || c->close_after_write || c->lingering) {
        for (size_t i = 0; i < n; i++)
            pylon_buf_release(bufs[i]);
        return false;
    }
    size_t lead = drop_cut_chain(s, bufs, 0, n); /* deltas whose base the client never got */
    bufs += lead;
    n -= lead;
    if (n == 0) return lead == 0;
    ssize_t r = pylon_conn_try_write(c, bufs, n);
    if (r < 0) { /* the connection failed and is closing */
        for (size_t i = 0; i < n; i++)
            pylon_buf_release(bufs[i]);
        return false;
    }
    size_t written = (size_t)r, i = 0;
    while (i < n && written >= bufs[i]->len) { /* out whole */
        written -= bufs[i]->len;
        pylon_buf_release(bufs[i++]);
    }
    if (i == n) return lead == 0;
    /* bufs[i] may be partly out (`written` bytes): its rest must follow, whatever the bound. */
    size_t max = c->io->srv->opt.stream_max_backlog;
    size_t must = written ? 1 : 0, bytes = written ? bufs[i]->len - written : 0;
    if (s->h && s->h->backlog_policy == PYLON_BACKLOG_SKIP) {
        /* Frames supersede each other (shard snapshots): keep the newest ones that fit and
         * skip the older rest, so a lagging client jumps to the newest state. */
        size_t first = n;
        while (first > i + must) {
            size_t ahead = c->queued + bytes, len = bufs[first - 1]->len;
            if (ahead > 0 && ahead + len > max) break;
            bytes += len;
            first--;
        }
        size_t skipped = first - (i + must);
        for (size_t k = i + must; k < first; k++)
            pylon_buf_release(bufs[k]);
        if (skipped) {
            atomic_fetch_add_explicit(&s->skipped, skipped, memory_order_relaxed);
            s->chain_cut = true; /* the kept frames must not start with a delta on a skipped one */
            size_t kept = drop_cut_chain(s, bufs, first, n);
            skipped += kept - first;
            first = kept;
        }
        if (must) {
            /* the partial frame, then the kept newest ones: contiguous again for one write */
            memmove(bufs + i + 1, bufs + first, (n - first) * sizeof *bufs);
            n = i + 1 + (n - first);
        } else {
            i = first;
        }
        if (i < n && !pylon_conn_write_rest(c, bufs + i, n - i, written)) return false;
        return skipped == 0 && lead == 0;
    }
    /* CLOSE: the frames that fit go out in order, then the 1013 close frame behind them. */
    size_t fit = i + must;
    while (fit < n) {
        size_t ahead = c->queued + bytes, len = bufs[fit]->len;
        if (ahead > 0 && ahead + len > max) break;
        bytes += len;
        fit++;
    }
    for (size_t k = fit; k < n; k++)
        pylon_buf_release(bufs[k]);
    if (fit > i && !pylon_conn_write_rest(c, bufs + i, fit - i, written)) return false;
    if (fit == n) return lead == 0;
    stream_close_now(c, 1013, "send backlog full: reconnect and pull");
    return false;
}

static bool stream_write(pylon_stream *s, pylon_buf *buf)
{
    return stream_write_batch(s, &buf, 1);
}

/* Loop thread: the outbox's task. Takes the whole outbox at once (and a close request that
 * came after it), so frames and close keep the order they were sent in. */
static void run_outbox(pylon_loop_task *t, pylon_loop *loop)
{
    (void)loop;
    pylon_stream *s = (pylon_stream *)((char *)t - offsetof(pylon_stream, out_task));
    pthread_mutex_lock(&s->out_lock);
    pylon_buf **batch = s->out;
    size_t n = s->out_n, cap = s->out_cap;
    s->out = s->spare;
    s->out_cap = s->spare_cap;
    s->out_n = 0;
    s->out_posted = false; /* from here a send posts out_task again (it may run right now) */
    bool close = s->close_wanted;
    uint16_t code = s->close_code;
    char reason[sizeof s->close_reason];
    memcpy(reason, s->close_reason, sizeof reason);
    s->close_wanted = false;
    if (s->out_cut) s->chain_cut = true; /* before this batch, which follows the dropped frames */
    s->out_cut = false;
    pthread_mutex_unlock(&s->out_lock);
    if (n) stream_write_batch(s, batch, n);
    s->spare = batch;
    s->spare_cap = cap;
    if (close && s->conn) stream_close_now(s->conn, code, reason);
    pylon_stream_release(s); /* the reference taken when out_task was posted */
}

/* With out_lock held: queue out_task unless it already is. */
static void outbox_post_locked(pylon_stream *s, bool *post)
{
    *post = !s->out_posted;
    s->out_posted = true;
}

static void outbox_post(pylon_stream *s)
{
    pylon_stream_retain(s);
    pylon_loop_post(s->io->loop, &s->out_task);
}

bool pylon_stream_send_many(pylon_stream *s, pylon_buf *const *frames, size_t n)
{
    if (n == 0) return true;
    if (!pylon_stream_is_open(s)) return false;
    for (size_t i = 0; i < n; i++)
        pylon_buf_retain(frames[i]);
    return pylon_stream_send_many_owned(s, frames, n);
}

bool pylon_stream_send_many_owned(pylon_stream *s, pylon_buf *const *frames, size_t n)
{
    if (n == 0) return true;
    if (!pylon_stream_is_open(s)) goto drop;
    pthread_mutex_lock(&s->out_lock);
    if (s->close_asked) {
        pthread_mutex_unlock(&s->out_lock);
        goto drop;
    }
    if (s->out_n == 0 && pylon_loop_on_thread(s->io->loop)) {
        /* On the loop with nothing waiting: write at once (nothing to keep order with). */
        pthread_mutex_unlock(&s->out_lock);
        return stream_write_batch(s, (pylon_buf **)frames, n);
    }
    if (s->out_n + n > s->out_cap) {
        size_t cap = s->out_cap ? s->out_cap : 4;
        while (cap < s->out_n + n)
            cap *= 2;
        pylon_buf **grown = realloc(s->out, cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&s->out_lock);
            goto drop;
        }
        s->out = grown;
        s->out_cap = cap;
    }
    size_t max = s->h && s->h->backlog_policy == PYLON_BACKLOG_SKIP ? s->h->max_pending : 0;
    bool all = true; /* none of these frames skipped */
    if (max && s->out_n + n > max) {
        /* Frames that supersede each other (shard snapshots) keep a few slots: the oldest of
         * what still waits for the loop makes room for the newer frames and is counted as
         * skipped. A loop that falls behind then sends each subscriber its newest frames
         * instead of a growing queue of stale ones, and holds at most `max` per subscriber. */
        size_t excess = s->out_n + n - max, old = excess < s->out_n ? excess : s->out_n;
        for (size_t i = 0; i < old; i++)
            pylon_buf_release(s->out[i]);
        memmove(s->out, s->out + old, (s->out_n - old) * sizeof *s->out);
        s->out_n -= old;
        for (size_t i = 0; i < excess - old; i++) /* more new frames than slots */
            pylon_buf_release(frames[i]);
        frames += excess - old;
        n -= excess - old;
        all = excess == old;
        s->out_cut = true;
        atomic_fetch_add_explicit(&s->skipped, excess, memory_order_relaxed);
    }
    memcpy(s->out + s->out_n, frames, n * sizeof *frames);
    s->out_n += n;
    bool post;
    outbox_post_locked(s, &post);
    pthread_mutex_unlock(&s->out_lock);
    if (post) outbox_post(s);
    return all;
drop:
    for (size_t i = 0; i < n; i++)
        pylon_buf_release(frames[i]);
    return false;
}

bool pylon_stream_would_skip(pylon_stream *s)
{
    size_t max = s->h && s->h->backlog_policy == PYLON_BACKLOG_SKIP ? s->h->max_pending : 0;
    if (!max) return false;
    pthread_mutex_lock(&s->out_lock);
    bool full = s->out_n >= max;
    pthread_mutex_unlock(&s->out_lock);
    return full;
}

bool pylon_stream_send(pylon_stream *s, pylon_buf *framed)
{
    return pylon_stream_send_many(s, &framed, 1);
}

void pylon_stream_close(pylon_stream *s, uint16_t code, const char *reason)
{
    if (pylon_loop_on_thread(s->io->loop)) {
        if (s->conn) stream_close_now(s->conn, code, reason);
        return;
    }
    /* Through the outbox: the close goes out after everything sent before it, and what is
     * sent after it is dropped. */
    pthread_mutex_lock(&s->out_lock);
    bool post = false;
    if (!s->close_asked) {
        s->close_asked = true;
        s->close_wanted = true;
        s->close_code = code;
        snprintf(s->close_reason, sizeof s->close_reason, "%s", reason ? reason : "");
        outbox_post_locked(s, &post);
    }
    pthread_mutex_unlock(&s->out_lock);
    if (post) outbox_post(s);
}

/* ---- wslay glue -------------------------------------------------------------------------- */

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    (void)flags;
    ws_state *ws = ((pylon_conn *)user)->ws;
    if (ws->feed_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < ws->feed_len ? len : ws->feed_len;
    memcpy(buf, ws->feed, n);
    ws->feed += n;
    ws->feed_len -= n;
    return (ssize_t)n;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    (void)ctx;
    (void)flags;
    pylon_conn *c = user;
    pylon_buf *b = pylon_buf_copy(data, len);
    if (!b) {
        wslay_event_set_error(ctx, WSLAY_ERR_NOMEM);
        return -1;
    }
    pylon_conn_write(c, &b, 1);
    return (ssize_t)len;
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user)
{
    (void)ctx;
    pylon_conn *c = user;
    ws_state *ws = c->ws;
    pylon_stream *s = ws->stream;
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
    case WSLAY_BINARY_FRAME:
        if (s->h && s->h->on_message && !ws->close_sent)
            s->h->on_message(s->user, s, arg->opcode == WSLAY_BINARY_FRAME, arg->msg,
                             arg->msg_length);
        break;
    case WSLAY_CONNECTION_CLOSE:
        ws->close_received = true; /* wslay queues the echoing close frame itself */
        break;
    default:
        break; /* ping (wslay answers with a pong) and pong */
    }
}

static wslay_event_context_ptr wslay_for(pylon_conn *c)
{
    ws_state *ws = c->ws;
    if (ws->ctx) return ws->ctx;
    static const struct wslay_event_callbacks cbs = {
        .recv_callback = recv_cb, .send_callback = send_cb, .on_msg_recv_callback = on_msg};
    if (wslay_event_context_server_init(&ws->ctx, &cbs, c) != 0) return NULL;
    wslay_event_config_set_max_recv_msg_length(ws->ctx, c->io->srv->opt.ws_max_frame);
    if (ws->close_sent) wslay_event_shutdown_write(ws->ctx);
    return ws->ctx;
}

/* Length of the complete frame at p (header + payload), 0 if incomplete, -1 if refused. */
static ssize_t frame_length(pylon_conn *c, const uint8_t *p, size_t avail, bool *fin, int *opcode)
{
    if (avail < 2) return 0;
    *fin = p[0] & 0x80;
    *opcode = p[0] & 0x0f;
    if (!(p[1] & 0x80)) {
        stream_close_now(c, 1002, "client frames must be masked");
        return -1;
    }
    uint64_t len = p[1] & 0x7f;
    size_t hl = 2;
    if (len == 126) {
        if (avail < 4) return 0;
        len = ((uint64_t)p[2] << 8) | p[3];
        hl = 4;
    } else if (len == 127) {
        if (avail < 10) return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | p[2 + i];
        hl = 10;
    }
    hl += 4; /* mask key */
    if (len > c->io->srv->opt.ws_max_frame) {
        stream_close_now(c, 1009, "frame too large (PYLON_WS_MAX_FRAME)");
        return -1;
    }
    if (avail < hl + len) return 0;
    return (ssize_t)(hl + len);
}

/* Hands the whole frames at data[0..len) to wslay. */
static void feed_frames(pylon_conn *c, const uint8_t *data, size_t len)
{
    ws_state *ws = c->ws;
    wslay_event_context_ptr ctx = wslay_for(c);
    if (!ctx) {
        pylon_conn_close(c);
        return;
    }
    ws->feed = data;
    ws->feed_len = len;
    ws->in_recv = true;
    int rc = wslay_event_recv(ctx);
    ws->in_recv = false;
    ws->feed_len = 0;
    if (rc == 0) rc = wslay_event_send(ctx);
    if (rc != 0 && rc != WSLAY_ERR_WOULDBLOCK) {
        pylon_conn_close(c);
        return;
    }
    if (ws->close_received || !wslay_event_get_read_enabled(ctx)) {
        /* The close handshake is done (or wslay refused the stream with its own close). */
        ws->close_sent = true;
        atomic_store(&ws->stream->open, false);
        pylon_conn_close_when_flushed(c);
    }
}

void pylon_ws_on_data(pylon_conn *c, const uint8_t *data, size_t len)
{
    ws_state *ws = c->ws;
    if (ws->sse || c->close_after_write || c->lingering) return; /* nothing to read there */
    ws->last_frame_s = c->last_recv_s;
    uint8_t *joined = NULL;
    if (ws->in_len) { /* complete the partial frame kept from last time */
        joined = realloc(ws->in, ws->in_len + len);
        if (!joined) {
            pylon_conn_close(c);
            return;
        }
        memcpy(joined + ws->in_len, data, len);
        data = joined;
        len += ws->in_len;
        ws->in = NULL;
        ws->in_len = 0;
    }
    /* Frame by frame, so a control frame's answer (pong) goes out before what follows it. */
    size_t whole = 0;
    for (;;) {
        bool fin;
        int opcode;
        ssize_t fl = frame_length(c, data + whole, len - whole, &fin, &opcode);
        if (fl < 0) {
            free(joined);
            return;
        }
        if (fl == 0) break;
        if (opcode < 8) ws->in_fragment = !fin; /* data frames: inside a fragmented message? */
        feed_frames(c, data + whole, (size_t)fl);
        whole += (size_t)fl;
        if (c->closing || c->close_after_write || c->lingering) break;
    }
    if (!c->closing && !c->close_after_write && !c->lingering && whole < len) {
        ws->in = malloc(len - whole);
        if (!ws->in) {
            free(joined);
            pylon_conn_close(c);
            return;
        }
        memcpy(ws->in, data + whole, len - whole);
        ws->in_len = len - whole;
    }
    free(joined);
}

/* ---- liveness (once a second) ------------------------------------------------------------ */

void pylon_stream_sweep(pylon_conn *c)
{
    ws_state *ws = c->ws;
    const pylon_http_server_options *o = &c->io->srv->opt;
    uint64_t now = c->io->now_s;
    if (ws->sse) {
        if (now - ws->last_ping_s >= o->sse_keepalive_s) {
            ws->last_ping_s = now;
            static const char ka[] = ": keepalive\n\n";
            pylon_buf *b = pylon_buf_copy(ka, sizeof ka - 1);
            if (b) stream_write(ws->stream, b);
        }
        return;
    }
    if (now - c->last_recv_s >= o->ws_dead_s) { /* silent for too long: the peer is gone */
        pylon_conn_close(c);
        return;
    }
    if (now - c->last_recv_s >= o->ws_ping_s && now - ws->last_ping_s >= o->ws_ping_s &&
        !ws->close_sent) {
        ws->last_ping_s = now;
        pylon_buf *ping = pylon_ws_frame(0x9, NULL, 0);
        if (ping) pylon_conn_write(c, &ping, 1);
    }
    if (ws->ctx && !ws->in_fragment && ws->in_len == 0 && !wslay_event_want_write(ws->ctx) &&
        now - ws->last_frame_s >= WSLAY_IDLE_FREE_S && !ws->close_sent) {
        wslay_event_context_free(ws->ctx); /* quiet client: give the 9 KB back */
        ws->ctx = NULL;
    }
}

/* ---- the handshake ----------------------------------------------------------------------- */

static bool header_has_token(const char *v, const char *token)
{
    size_t tl = strlen(token);
    while (v && *v) {
        while (*v == ' ' || *v == ',')
            v++;
        const char *e = v;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > v && t[-1] == ' ')
            t--;
        if ((size_t)(t - v) == tl && strncasecmp(v, token, tl) == 0) return true;
        v = e;
    }
    return false;
}

bool pylon_ws_wants_upgrade(const pylon_http_request *req)
{
    return req->method == HTTP_GET &&
           header_has_token(pylon_http_header_get(req, "upgrade"), "websocket") &&
           header_has_token(pylon_http_header_get(req, "connection"), "upgrade");
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Strict percent-decoding (%XX, '+' is a space) into out; false on any malformed escape or
 * invalid UTF-8. */
static bool pct_decode(const char *s, size_t len, char *out, size_t cap, bool plus_is_space)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (n + 1 >= cap) return false;
        char ch = s[i];
        if (ch == '%') {
            if (i + 2 >= len) return false;
            int h = hexval((unsigned char)s[i + 1]), l = hexval((unsigned char)s[i + 2]);
            if (h < 0 || l < 0) return false;
            out[n++] = (char)(h * 16 + l);
            i += 2;
        } else if (ch == '+' && plus_is_space) {
            out[n++] = ' ';
        } else {
            out[n++] = ch;
        }
    }
    out[n] = '\0';
    /* UTF-8 check */
    const unsigned char *u = (const unsigned char *)out;
    for (size_t i = 0; i < n;) {
        unsigned char ch = u[i];
        size_t k = ch < 0x80         ? 1
                   : (ch >> 5) == 6  ? 2
                   : (ch >> 4) == 14 ? 3
                   : (ch >> 3) == 30 ? 4
                                     : 0;
        if (!k || i + k > n) return false;
        for (size_t j = 1; j < k; j++)
            if ((u[i + j] & 0xc0) != 0x80) return false;
        i += k;
    }
    return true;
}

/* The value of query parameter `name`, form-decoded into out. */
static bool query_param(const char *query, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = query;
    while (p && *p) {
        const char *e = strchr(p, '&');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=')
            return pct_decode(p + nl + 1, len - nl - 1, out, cap, true);
        p = e ? e + 1 : NULL;
    }
    return false;
}

static void cookie_value(const char *cookies, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = cookies;
    out[0] = '\0';
    while (p && *p) {
        while (*p == ' ' || *p == ';')
            p++;
        const char *e = strchr(p, ';');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            snprintf(out, cap, "%.*s", (int)(len - nl - 1), p + nl + 1);
            return;
        }
        p = e;
    }
}

static void finish_upgrade_exchange(pylon_conn *c, pylon_http_exchange *ex, int status)
{
    /* The exchange ends here without an HTTP answer through the usual path. */
    io_loop *io = c->io;
    STAT_ADD(io->stats.requests, 1);
    STAT_ADD(io->stats.ok, 1);
    STAT_ADD(io->stats.by_method[0], 1);
    STAT_ADD(io->stats.by_class[status / 100], 1);
    if (ex->log && pylon_log_enabled(PYLON_LOG_INFO)) {
        pylon_log_field f[] = {PYLON_LF_STR("method", ex->req.method_name),
                               PYLON_LF_STR("path", ex->req.url), PYLON_LF_INT("status", status),
                               PYLON_LF_STR("ip", ex->req.client_ip)};
        pylon_log_write(PYLON_LOG_INFO, "http", "stream opened", f, sizeof f / sizeof f[0]);
    }
    free(ex);
}

void pylon_stream_begin(pylon_conn *c, pylon_http_exchange *ex, pylon_stream_kind kind,
                        const uint8_t *rest, size_t rest_len)
{
    io_loop *io = c->io;
    pylon_http_server *srv = io->srv;
    const pylon_http_request *req = &ex->req;
    bool sse = kind == PYLON_STREAM_SSE || kind == PYLON_STREAM_SHARD_SSE;
    char token[512] = "", shard[256] = "", proto_echo[600] = "";
    const char *auth = pylon_http_header_get(req, "authorization");
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) snprintf(token, sizeof token, "%s", auth + 7);

    if (kind == PYLON_STREAM_SHARD_SSE) { /* /api/shards/<id>/connect */
        const char *start = req->path + 12;
        size_t len = strlen(start) - 8;
        pylon_http_pct_decode(start, len, shard, sizeof shard);
    }
    const pylon_stream_handlers *h = srv->opt.streams[kind];
    if (h && h->precheck) {
        pylon_stream_open pre = {.kind = kind,
                                 .req = req,
                                 .bearer = token[0] ? token : NULL,
                                 .shard_id = shard[0] ? shard : NULL,
                                 .ctx = h->ctx};
        pylon_stream_refusal no = {0};
        h->precheck(&pre, &no);
        if (no.status) {
            pylon_http_respond_error(ex, no.status, no.code, no.message, NULL);
            return;
        }
    }
    char head[2048];
    size_t hn;
    if (sse) {
        if (req->method != HTTP_GET) {
            pylon_http_respond_error(ex, 405, "METHOD_NOT_ALLOWED",
                                     "SSE streams are opened with GET",
                                     "GET /events with Accept: text/event-stream");
            return;
        }
        if (!token[0]) {
            cookie_value(pylon_http_header_get(req, "cookie"), "pylon_session", token,
                         sizeof token);
            if (!token[0]) query_param(req->query, "token", token, sizeof token);
        }
        char common[1024];
        pylon_server_common_headers(srv, pylon_http_header_get(req, "origin"), common,
                                    sizeof common);
        hn = (size_t)snprintf(head, sizeof head,
                              "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                              "Cache-Control: no-cache\r\nConnection: keep-alive\r\n%s\r\n"
                              ": connected\n\n",
                              common);
    } else {
        if (!pylon_ws_wants_upgrade(req)) {
            pylon_http_response res = {
                .status = 426,
                .headers = "Upgrade: websocket\r\n",
                .body = pylon_http_error_body("UPGRADE_REQUIRED",
                                              "This endpoint takes WebSocket connections",
                                              "connect with a WebSocket client (Upgrade: "
                                              "websocket)")};
            pylon_http_respond(ex, &res);
            return;
        }
        const char *version = pylon_http_header_get(req, "sec-websocket-version");
        const char *key = pylon_http_header_get(req, "sec-websocket-key");
        if (!version || strcmp(version, "13") != 0) {
            pylon_http_response res = {
                .status = 426,
                .headers = "Sec-WebSocket-Version: 13\r\n",
                .body = pylon_http_error_body("UPGRADE_REQUIRED", "Unsupported WebSocket version",
                                              "use Sec-WebSocket-Version: 13")};
            pylon_http_respond(ex, &res);
            return;
        }
        if (!key || strlen(key) != 24) {
            pylon_http_respond_error(ex, 400, "BAD_REQUEST",
                                     "Missing or malformed Sec-WebSocket-Key", NULL);
            return;
        }
        /* bearer.<pct-token>: the first entry that decodes strictly is echoed exactly, unless
         * the client also offers one of the endpoint's own subprotocols (e.g. pylon.msgpack):
         * then that one is echoed (the first offered) and the token is still taken. */
        const char *protos = pylon_http_header_get(req, "sec-websocket-protocol");
        const pylon_stream_handlers *hp = srv->opt.streams[kind];
        bool own = false, have_bearer = false;
        for (const char *p = protos; p && *p;) {
            while (*p == ' ' || *p == ',')
                p++;
            const char *e = p;
            while (*e && *e != ',')
                e++;
            const char *t = e;
            while (t > p && t[-1] == ' ')
                t--;
            size_t len = (size_t)(t - p);
            char decoded[512];
            for (const char *const *sp = hp ? hp->subprotocols : NULL; !own && sp && *sp; sp++)
                if (strlen(*sp) == len && strncmp(p, *sp, len) == 0) {
                    snprintf(proto_echo, sizeof proto_echo, "%s", *sp);
                    own = true;
                }
            if (!have_bearer && len > 7 && strncmp(p, "bearer.", 7) == 0 &&
                len < sizeof proto_echo &&
                pct_decode(p + 7, len - 7, decoded, sizeof decoded, true)) {
                if (!own) snprintf(proto_echo, sizeof proto_echo, "%.*s", (int)len, p);
                if (!token[0]) snprintf(token, sizeof token, "%s", decoded);
                have_bearer = true;
            }
            p = e;
        }
        if (kind == PYLON_STREAM_SHARD_WS) {
            if (!query_param(req->query, "shard", shard, sizeof shard) &&
                strncmp(req->path, "/shard/", 7) == 0)
                pct_decode(req->path + 7, strlen(req->path + 7), shard, sizeof shard, false);
        }
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned dlen = 0;
        char material[64];
        snprintf(material, sizeof material, "%s%s", key, WS_GUID);
        EVP_Digest(material, strlen(material), digest, &dlen, EVP_sha1(), NULL);
        char accept[64];
        EVP_EncodeBlock((unsigned char *)accept, digest, (int)dlen);
        hn = (size_t)snprintf(head, sizeof head,
                              "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s%s%s\r\n",
                              accept, proto_echo[0] ? "Sec-WebSocket-Protocol: " : "", proto_echo,
                              proto_echo[0] ? "\r\n" : "");
    }

    ws_state *ws = calloc(1, sizeof *ws);
    pylon_stream *s = calloc(1, sizeof *s);
    pylon_buf *hb = pylon_buf_copy(head, hn < sizeof head ? hn : sizeof head - 1);
    if (!ws || !s || !hb) {
        free(ws);
        free(s);
        if (hb) pylon_buf_release(hb);
        pylon_conn_close(c);
        return;
    }
    atomic_init(&s->refs, 1); /* the connection's */
    atomic_init(&s->open, true);
    pthread_mutex_init(&s->out_lock, NULL);
    s->out_task.run = run_outbox;
    s->kind = kind;
    s->io = io;
    s->conn = c;
    s->h = srv->opt.streams[kind];
    ws->stream = s;
    ws->sse = sse;
    ws->last_ping_s = io->now_s;
    c->ws = ws;
    c->phase = PHASE_STREAM;
    c->deadline_ms = 0;
    STAT_ADD(io->stats.open[PYLON_LISTEN_COUNT + (sse ? 1 : 0)], 1);
    pylon_conn_write(c, &hb, 1);

    /* The exchange and the request memory leave the connection now: if on_open closes the
     * stream (1008, or a drop), the connection must not hand them to an orphan path. */
    req_state *rs = c->rs;
    c->rs = NULL;
    c->ex = NULL;
    io->http_busy--;
    pylon_stream_open info = {.kind = kind,
                              .req = req,
                              .bearer = token[0] ? token : NULL,
                              .protocol = proto_echo[0] ? proto_echo : NULL,
                              .shard_id = shard[0] ? shard : NULL,
                              .ctx = s->h ? s->h->ctx : NULL};
    if (s->h && s->h->on_open)
        s->user = s->h->on_open(s, &info);
    else
        stream_close_now(c, 1011, "no handler for this endpoint");
    finish_upgrade_exchange(c, ex, sse ? 200 : 101);
    /* The HTTP parser and the request are no longer needed. */
    pylon_req_state_free_(rs);
    free(c->pending);
    c->pending = NULL;
    c->pending_len = 0;
    if (c->closing) return;
    if (rest_len && !sse) pylon_ws_on_data(c, rest, rest_len);
    if (!c->closing && !c->lingering) pylon_conn_start_reading(c);
}
