/*
 * stream.h — long-lived client connections (WebSocket and SSE) as actors see them.
 *
 * Owns: the stream handle and its contract. A stream is created by the server when an upgrade
 * (or an SSE request) succeeds; the endpoint's handlers (sync sessions, shards) get it in
 * on_open and may keep it (retain) and send to it from any thread. Sends take already framed
 * bytes, so one encoded buffer can go to thousands of streams without a copy.
 *
 * Backlog: every stream has a bound on the bytes queued to its client (PYLON_WS_MAX_BACKLOG).
 * Past it the endpoint's policy applies: CLOSE closes the stream (WebSocket code 1013, "try
 * again later"; the sync clients pull before reconnecting, so nothing is lost), SKIP drops
 * frames (shard snapshots: of the frames waiting to be written, the newest that fit are kept,
 * so a lagging client skips to the newest snapshot). A SKIP stream's outbox can be bounded too
 * (max_pending): a frame sent while that many still wait for the I/O loop replaces the oldest
 * (counted in pylon_stream_skipped), so a loop that falls behind skips frames instead of
 * queuing them. Frames marked PYLON_BUF_DEPENDENT (deltas) are never delivered after a gap:
 * once a frame of the stream is dropped, the dependent frames that follow it are dropped and
 * counted as well, until an independent frame goes out. A sender of deltas therefore watches
 * pylon_stream_skipped and sends an independent (full) frame when it has moved.
 */
#ifndef PYLON_HTTP_STREAM_H
#define PYLON_HTTP_STREAM_H

#include "engine/buf.h"
#include "http/http.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    PYLON_STREAM_SYNC_WS,
    PYLON_STREAM_SSE,
    PYLON_STREAM_SHARD_WS,
    PYLON_STREAM_SHARD_SSE, /* GET /api/shards/<id>/connect on the main port */
    PYLON_STREAM_KIND_COUNT
} pylon_stream_kind;

typedef enum { PYLON_BACKLOG_CLOSE, PYLON_BACKLOG_SKIP } pylon_backlog_policy;

typedef struct pylon_stream pylon_stream;

typedef struct pylon_stream_open {
    pylon_stream_kind kind;
    const pylon_http_request *req; /* the opening request; valid during on_open only */
    const char *bearer;   /* token from Authorization: Bearer or the bearer.<t> subprotocol */
    const char *protocol; /* the subprotocol echoed to the client (an endpoint subprotocol if
                             one was offered, else the bearer.<token> entry), or NULL */
    const char *shard_id; /* shard WS: from ?shard= or /shard/<id> */
    void *ctx;            /* the handlers' ctx */
} pylon_stream_open;

/* What a refused opening request is answered (before any stream byte is sent). */
typedef struct pylon_stream_refusal {
    int status; /* 0: accepted */
    const char *code;
    char message[200];
} pylon_stream_refusal;

typedef struct pylon_stream_handlers {
    /* Optional, loop thread, before the handshake answer: status 0 accepts; anything else is
     * answered as an ordinary HTTP error (e.g. 401, 404) and no stream opens. */
    void (*precheck)(const pylon_stream_open *info, pylon_stream_refusal *out);
    /* Loop thread, after the handshake response is queued. Returns the endpoint's state for
     * this stream (e.g. its session actor). May close the stream at once (e.g. 1008). */
    void *(*on_open)(pylon_stream *s, const pylon_stream_open *info);
    /* Loop thread: one complete message from the client (WebSocket only). */
    void (*on_message)(void *user, pylon_stream *s, bool binary, const uint8_t *data, size_t len);
    /* Loop thread: the connection is gone. Sends after this are dropped. */
    void (*on_close)(void *user, pylon_stream *s);
    pylon_backlog_policy backlog_policy;
    /* SKIP only: at most this many frames sent from other threads wait for the I/O loop; a
     * newer frame replaces the oldest. 0: no bound but the backlog's. */
    uint32_t max_pending;
    void *ctx; /* handed to on_open (e.g. the auth service that resolves the token) */
    /* WebSocket subprotocols the endpoint speaks besides bearer.<token> (NULL-terminated, or
     * NULL). The first one the client offers is echoed (and is pylon_stream_open.protocol);
     * the token of a bearer.<token> offered alongside it is still used. */
    const char *const *subprotocols;
} pylon_stream_handlers;

void pylon_stream_retain(pylon_stream *s);
void pylon_stream_release(pylon_stream *s);

/* Any thread. `framed` must be a complete WebSocket frame (pylon_ws_frame) or SSE event
 * (pylon_sse_event) matching the stream's transport; the stream takes its own reference.
 * Returns false when the stream is closed or the frame was dropped by the backlog policy. */
bool pylon_stream_send(pylon_stream *s, pylon_buf *framed);
/* The same for n frames, in order; cheaper than n sends (one lock, at most one wake-up).
 * Sends from other threads wait in the stream's outbox until its I/O loop writes everything
 * that accumulated there with one writev: under load, batches grow by themselves. */
bool pylon_stream_send_many(pylon_stream *s, pylon_buf *const *frames, size_t n);
/* The same, but the caller hands over one reference to each frame (taken in bulk with
 * pylon_buf_retain_n when one frame goes to many streams); released here if not sent. */
bool pylon_stream_send_many_owned(pylon_stream *s, pylon_buf *const *frames, size_t n);

/* Any thread. WebSocket: a close frame with `code` and `reason`, then the TCP close once it
 * is written; code 0 drops the connection without a close frame. SSE: the response ends.
 * Idempotent. */
void pylon_stream_close(pylon_stream *s, uint16_t code, const char *reason);

pylon_stream_kind pylon_stream_kind_of(const pylon_stream *s);
/* Frames dropped so far by the SKIP backlog policy (any thread). */
uint64_t pylon_stream_skipped(const pylon_stream *s);
bool pylon_stream_is_open(const pylon_stream *s);
/* Any thread: whether the next send would replace a frame still waiting for the I/O loop
 * (a SKIP stream with max_pending frames waiting). A sender whose frames depend on the previous
 * one (pylon.delta snapshots) skips its frame instead when this is true. */
bool pylon_stream_would_skip(pylon_stream *s);

/* Framing helpers. opcode: 1 text, 2 binary. A NULL payload leaves its `len` bytes (the last
 * ones of the buffer) for the caller to fill, which saves building it elsewhere and copying. */
pylon_buf *pylon_ws_frame(int opcode, const void *payload, size_t len);
/* "data: <json>\n\n" (the payload must not contain newlines: compact JSON never does). */
pylon_buf *pylon_sse_event(const char *json, size_t len);

#endif
