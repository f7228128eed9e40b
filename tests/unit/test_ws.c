/*
 * test_ws.c — the WebSocket and SSE plumbing of http/, in process, over real loopback sockets.
 *
 * A server is started with an echo endpoint on the sync WebSocket (the real endpoints come
 * with the sync and shard layers); a raw client speaks RFC 6455 by hand, so every frame the
 * server sends is checked byte by byte: handshake and subprotocol echo, masked text frames,
 * fragmented messages, ping/pong, close handshake, oversized frames (1009), unmasked frames
 * (1002), the backlog bound (1013) and shutdown (1001). Sends from another thread go through
 * the stream's outbox and are written in batches: a burst keeps every frame in order and
 * intact, a client that stops reading still gets 1013, and a SKIP stream jumps ahead.
 */
#include "http/guard.h"
#include "http/router.h"
#include "http/server.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static pylon_http_server *srv;
static pylon_router *router;
static pylon_guard *guard;
static int base_port;
/* Liveness settings of the servers start_server makes (the ws_liveness test shortens them). */
static unsigned opt_ping_s = 30, opt_dead_s = 75;

/* ---- a sender thread: sends from outside the loop (the outbox path) ---------------------- */

#define BURST      10000 /* ~0.75 MB in all: under the 1 MiB bound even unread */
#define SKIP_FRAME 16384
#define CHAIN_KEY  8 /* chained snapshots: every 8th one is independent, the others deltas */

typedef enum { SEND_BURST, SEND_FLOOD, SEND_SKIPPABLE } send_mode;

static struct {
    pylon_stream *s;
    send_mode mode;
    pthread_t th;
    atomic_bool started;
    atomic_bool stop, got;    /* SEND_SKIPPABLE: stop the snapshots; the client has "last" */
    bool chain;               /* SEND_SKIPPABLE: frames not a multiple of CHAIN_KEY are deltas */
    _Atomic uint64_t skipped; /* pylon_stream_skipped when the thread ended */
} snd;

/* Burst frame k: "k:<k>:" then a filler of a length that varies with k (0..129 bytes, so both
 * 7-bit and 16-bit length headers occur), each byte derived from k and its position. */
static size_t burst_payload(unsigned k, char *out)
{
    size_t n = (size_t)snprintf(out, 32, "k:%u:", k);
    size_t fill = (k * 37u) % 130u;
    for (size_t i = 0; i < fill; i++)
        out[n + i] = (char)('a' + (k + i) % 26);
    return n + fill;
}

static void *sender_main(void *arg)
{
    (void)arg;
    pylon_stream *s = snd.s;
    if (snd.mode == SEND_BURST) {
        char p[400];
        for (unsigned k = 0; k < BURST;) {
            if (k % 7 == 0 && k + 3 <= BURST) { /* some as one send_many of three */
                pylon_buf *f[3];
                for (int j = 0; j < 3; j++) {
                    size_t n = burst_payload(k + (unsigned)j, p);
                    f[j] = pylon_ws_frame(1, p, n);
                }
                pylon_stream_send_many(s, f, 3);
                for (int j = 0; j < 3; j++)
                    pylon_buf_release(f[j]);
                k += 3;
            } else {
                pylon_buf *f = pylon_ws_frame(1, p, burst_payload(k, p));
                pylon_stream_send(s, f);
                pylon_buf_release(f);
                k++;
            }
        }
        pylon_buf *f = pylon_ws_frame(1, "end", 3);
        pylon_stream_send(s, f);
        pylon_buf_release(f);
    } else if (snd.mode == SEND_FLOOD) { /* 64 MiB, like "flood", from this thread */
        static uint8_t chunk[65536];
        pylon_buf *f = pylon_ws_frame(2, chunk, sizeof chunk);
        for (int i = 0; i < 1024 && pylon_stream_is_open(s); i++)
            pylon_stream_send(s, f);
        pylon_buf_release(f);
    } else { /* numbered 16 KiB snapshots until told to stop, then "last" */
        static uint8_t p[SKIP_FRAME];
        for (uint32_t seq = 0; !atomic_load(&snd.stop) && seq < 1000000; seq++) {
            for (size_t i = 0; i < sizeof p; i++)
                p[i] = (uint8_t)(seq + i);
            memcpy(p, &seq, sizeof seq);
            pylon_buf *f = pylon_ws_frame(2, p, sizeof p);
            if (snd.chain && seq % CHAIN_KEY) f->flags |= PYLON_BUF_DEPENDENT;
            pylon_stream_send(s, f);
            pylon_buf_release(f);
            usleep(100);
        }
        /* "last" until the client says it has it: while its backlog is still full, this
         * small frame may be skipped like the others. */
        pylon_buf *f = pylon_ws_frame(1, "last", 4);
        for (int i = 0; i < 1000 && !atomic_load(&snd.got); i++) {
            pylon_stream_send(s, f);
            usleep(10 * 1000);
        }
        pylon_buf_release(f);
    }
    atomic_store(&snd.skipped, pylon_stream_skipped(s));
    pylon_stream_release(s);
    return NULL;
}

/* Loop thread (on_message): starts the sender for this stream. */
static void sender_start(pylon_stream *s, send_mode mode, bool chain)
{
    if (atomic_load(&snd.started)) return;
    pylon_stream_retain(s);
    snd.s = s;
    snd.mode = mode;
    snd.chain = chain;
    atomic_store(&snd.stop, false);
    atomic_store(&snd.got, false);
    if (pthread_create(&snd.th, NULL, sender_main, NULL) == 0)
        atomic_store(&snd.started, true);
    else
        pylon_stream_release(s);
}

static void sender_join(void)
{
    for (int i = 0; i < 500 && !atomic_load(&snd.started); i++) /* the message may be on its way */
        usleep(10 * 1000);
    cr_assert(atomic_load(&snd.started), "the sender thread started");
    pthread_join(snd.th, NULL);
    atomic_store(&snd.started, false);
}

/* "stall": another thread sends STALL_FRAMES numbered frames while the loop thread waits for
 * it (here, inside on_message), so they all reach the outbox before the loop can write any:
 * the state of an I/O loop that has fallen behind, without timing. */
#define STALL_FRAMES 50

static bool stall_chain; /* frames after the first are deltas */

static void *stall_main(void *arg)
{
    pylon_stream *s = arg;
    for (uint32_t k = 0; k < STALL_FRAMES; k++) {
        pylon_buf *f = pylon_ws_frame(2, &k, sizeof k);
        if (stall_chain && k > 0) f->flags |= PYLON_BUF_DEPENDENT;
        pylon_stream_send(s, f);
        pylon_buf_release(f);
    }
    return NULL;
}

static _Atomic uint64_t stall_skipped; /* pylon_stream_skipped right after the sends */
static pylon_stream *_Atomic stalled;  /* the stream of the last stall, while it is open */

static void stall(pylon_stream *s, bool chain)
{
    stall_chain = chain;
    pthread_t th;
    if (pthread_create(&th, NULL, stall_main, s) == 0) pthread_join(th, NULL);
    atomic_store(&stall_skipped, pylon_stream_skipped(s));
    atomic_store(&stalled, s);
}

/* "more", after a chained stall (loop thread, nothing waiting: written at once): a delta, an
 * independent frame, a delta; then "done". */
static void chain_more(pylon_stream *s)
{
    pylon_buf *f[3];
    for (uint32_t j = 0; j < 3; j++) {
        uint32_t k = STALL_FRAMES + j;
        f[j] = pylon_ws_frame(2, &k, sizeof k);
        if (j != 1) f[j]->flags |= PYLON_BUF_DEPENDENT;
    }
    pylon_stream_send_many(s, f, 3);
    for (int j = 0; j < 3; j++)
        pylon_buf_release(f[j]);
    atomic_store(&stall_skipped, pylon_stream_skipped(s));
    pylon_buf *done = pylon_ws_frame(1, "done", 4); /* the count above is stored */
    pylon_stream_send(s, done);
    pylon_buf_release(done);
}

/* Echo: a text message "flood" makes the server send 64 MiB to test the backlog bound. */
static void echo_msg(void *user, pylon_stream *s, bool binary, const uint8_t *data, size_t len)
{
    (void)user;
    if (!binary && len == 5 && memcmp(data, "flood", 5) == 0) {
        static uint8_t chunk[65536];
        pylon_buf *f = pylon_ws_frame(2, chunk, sizeof chunk);
        for (int i = 0; i < 1024 && pylon_stream_is_open(s); i++)
            pylon_stream_send(s, f);
        pylon_buf_release(f);
        return;
    }
    if (!binary && len == 5 && memcmp(data, "burst", 5) == 0) {
        sender_start(s, SEND_BURST, false);
        return;
    }
    if (!binary && len == 6 && memcmp(data, "tflood", 6) == 0) {
        sender_start(s, SEND_FLOOD, false);
        return;
    }
    if (!binary && len == 3 && memcmp(data, "got", 3) == 0) {
        atomic_store(&snd.got, true);
        return;
    }
    if (!binary && len == 5 && memcmp(data, "stall", 5) == 0) {
        stall(s, false);
        return;
    }
    if (!binary && len == 5 && memcmp(data, "snaps", 5) == 0) {
        sender_start(s, SEND_SKIPPABLE, false);
        return;
    }
    if (!binary && len == 6 && memcmp(data, "chains", 6) == 0) {
        sender_start(s, SEND_SKIPPABLE, true);
        return;
    }
    if (!binary && len == 6 && memcmp(data, "cstall", 6) == 0) {
        stall(s, true);
        return;
    }
    if (!binary && len == 4 && memcmp(data, "more", 4) == 0) {
        chain_more(s);
        return;
    }
    pylon_buf *f = pylon_ws_frame(binary ? 2 : 1, data, len);
    pylon_stream_send(s, f);
    pylon_buf_release(f);
}

static void *echo_open(pylon_stream *s, const pylon_stream_open *info)
{
    (void)s;
    (void)info;
    return NULL;
}

static const pylon_stream_handlers ECHO = {
    .on_open = echo_open, .on_message = echo_msg, .backlog_policy = PYLON_BACKLOG_CLOSE};
/* The same on the shard WebSocket port, where frames supersede each other. */
static const pylon_stream_handlers ECHO_SKIP = {.on_open = echo_open,
                                                .on_message = echo_msg,
                                                .backlog_policy = PYLON_BACKLOG_SKIP,
                                                .max_pending = 2};

/* A server on a free port (tried from a pid-derived one) with the options the tests share. */
static pylon_http_server *start_server(unsigned io_threads, pylon_router *r, pylon_guard *g,
                                       const pylon_stream_handlers *sync_ws,
                                       const pylon_stream_handlers *shard_ws, int *port)
{
    pylon_http_server *s = NULL;
    char err[256] = "";
    for (int attempt = 0; attempt < 20 && !s; attempt++) {
        *port = 20000 + (int)((unsigned)getpid() * 7919u + (unsigned)attempt * 104729u) % 40000;
        pylon_http_server_options o = {
            .host = "127.0.0.1",
            .port = *port,
            .io_threads = io_threads,
            .max_header_bytes = 16384,
            .max_body_bytes = 1 << 20,
            .header_timeout_s = 10,
            .body_timeout_s = 10,
            .idle_timeout_s = 60,
            .max_stream_conns_per_ip = 64,
            .ws_max_frame = 1 << 16,
            .stream_max_backlog = 1 << 20,
            .ws_ping_s = opt_ping_s,
            .ws_dead_s = opt_dead_s,
            .sse_keepalive_s = 30,
            .router = r,
            .guard = g,
            .streams = {[PYLON_STREAM_SYNC_WS] = sync_ws, [PYLON_STREAM_SHARD_WS] = shard_ws}};
        s = pylon_http_server_start(&o, err, sizeof err);
    }
    cr_assert(s, "server did not start: %s", err);
    return s;
}

static void start(void)
{
    router = pylon_router_new();
    pylon_guard_config gc = {.dev = true, .rate_window_s = 60};
    guard = pylon_guard_new(&gc);
    srv = start_server(1, router, guard, &ECHO, &ECHO_SKIP, &base_port);
}

static void stop(void)
{
    if (srv) {
        pylon_http_server_shutdown(srv, 1);
        pylon_http_server_destroy(srv);
    }
    srv = NULL;
    pylon_router_free(router);
    pylon_guard_free(guard);
}

TestSuite(ws, .init = start, .fini = stop, .timeout = 30);

/* ---- a tiny blocking client -------------------------------------------------------------- */

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0, "connect: %s", strerror(errno));
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        cr_assert_gt(w, 0);
        b += w;
        n -= (size_t)w;
    }
}

/* Reads exactly n bytes (2 s budget); returns how many arrived before EOF. */
static size_t recv_n(int fd, void *p, size_t n)
{
    uint8_t *b = p;
    size_t got = 0;
    while (got < n) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 2000) <= 0) break;
        ssize_t r = read(fd, b + got, n - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    return got;
}

/* Handshake on port base_port + offset; returns the response head. */
static int ws_connect_to(int offset, const char *extra_headers, char *head, size_t cap)
{
    int fd = dial(base_port + offset);
    char req[1024];
    snprintf(req, sizeof req,
             "GET /anything HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
             extra_headers);
    send_all(fd, req, strlen(req));
    size_t n = 0;
    while (n + 1 < cap) {
        if (recv_n(fd, head + n, 1) != 1) break;
        n++;
        if (n >= 4 && memcmp(head + n - 4, "\r\n\r\n", 4) == 0) break;
    }
    head[n] = '\0';
    return fd;
}

static int ws_connect(const char *extra_headers, char *head, size_t cap)
{
    return ws_connect_to(1, extra_headers, head, cap);
}

static void send_frame(int fd, int fin, int opcode, const void *payload, size_t len, bool mask)
{
    uint8_t h[14];
    size_t hl = 2;
    h[0] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    if (len < 126) {
        h[1] = (uint8_t)len;
    } else if (len < 65536) {
        h[1] = 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        hl = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
        hl = 10;
    }
    uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    if (mask) {
        h[1] |= 0x80;
        memcpy(h + hl, key, 4);
        hl += 4;
    }
    uint8_t *buf = malloc(hl + len);
    memcpy(buf, h, hl);
    for (size_t i = 0; i < len; i++)
        buf[hl + i] = ((const uint8_t *)payload)[i] ^ (mask ? key[i % 4] : 0);
    send_all(fd, buf, hl + len);
    free(buf);
}

/* Reads one server frame (unmasked). Returns the opcode, or -1 on EOF. */
static int read_frame(int fd, uint8_t *payload, size_t cap, size_t *len)
{
    uint8_t h[10];
    if (recv_n(fd, h, 2) != 2) return -1;
    cr_assert_eq(h[1] & 0x80, 0, "server frames are never masked");
    uint64_t n = h[1] & 0x7f;
    if (n == 126) {
        cr_assert_eq(recv_n(fd, h + 2, 2), 2);
        n = ((uint64_t)h[2] << 8) | h[3];
    } else if (n == 127) {
        cr_assert_eq(recv_n(fd, h + 2, 8), 8);
        n = 0;
        for (int i = 0; i < 8; i++)
            n = (n << 8) | h[2 + i];
    }
    cr_assert_leq(n, cap);
    cr_assert_eq(recv_n(fd, payload, n), n);
    *len = n;
    return h[0] & 0x0f;
}

static uint16_t close_code(const uint8_t *p, size_t len)
{
    return len >= 2 ? (uint16_t)(p[0] << 8 | p[1]) : 0;
}

/* ---- tests ------------------------------------------------------------------------------- */

Test(ws, handshake_accept_and_bearer_subprotocol_echo)
{
    char head[2048];
    int fd = ws_connect("Sec-WebSocket-Protocol: json, bearer.abc%2Bdef\r\n", head, sizeof head);
    cr_assert(strstr(head, "HTTP/1.1 101 Switching Protocols\r\n"), "%s", head);
    /* RFC 6455's example key and accept value. */
    cr_assert(strstr(head, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "%s", head);
    cr_assert(strstr(head, "Sec-WebSocket-Protocol: bearer.abc%2Bdef\r\n"), "%s", head);
    close(fd);
    fd = ws_connect("Sec-WebSocket-Protocol: bearer.%zz\r\n", head, sizeof head);
    cr_assert(strstr(head, "101"), "%s", head);
    cr_assert_null(strstr(head, "Sec-WebSocket-Protocol"), "a malformed entry is not echoed");
    close(fd);
}

Test(ws, text_echo_fragmented_message_and_ping)
{
    char head[2048];
    int fd = ws_connect("", head, sizeof head);
    uint8_t buf[70000];
    size_t len;
    send_frame(fd, 1, 1, "hello", 5, true);
    cr_assert_eq(read_frame(fd, buf, sizeof buf, &len), 1);
    cr_assert_eq(len, 5);
    cr_assert_eq(memcmp(buf, "hello", 5), 0);

    /* A message in three fragments, with a ping in the middle: pong first, then the whole. */
    send_frame(fd, 0, 1, "frag", 4, true);
    send_frame(fd, 0, 0, "men", 3, true);
    send_frame(fd, 1, 9, "p!", 2, true);
    send_frame(fd, 1, 0, "ted", 3, true);
    cr_assert_eq(read_frame(fd, buf, sizeof buf, &len), 0xA, "pong");
    cr_assert_eq(len, 2);
    cr_assert_eq(memcmp(buf, "p!", 2), 0);
    cr_assert_eq(read_frame(fd, buf, sizeof buf, &len), 1);
    cr_assert_eq(len, 10);
    cr_assert_eq(memcmp(buf, "fragmented", 10), 0);

    /* A 40 000-byte binary message split across many small writes. */
    static uint8_t big[40000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7);
    send_frame(fd, 1, 2, big, sizeof big, true);
    cr_assert_eq(read_frame(fd, buf, sizeof buf, &len), 2);
    cr_assert_eq(len, sizeof big);
    cr_assert_eq(memcmp(buf, big, sizeof big), 0);
    close(fd);
}

Test(ws, close_handshake_is_answered)
{
    char head[2048];
    int fd = ws_connect("", head, sizeof head);
    uint8_t payload[2] = {0x03, 0xe8}; /* 1000 */
    send_frame(fd, 1, 8, payload, 2, true);
    uint8_t buf[256];
    size_t len;
    cr_assert_eq(read_frame(fd, buf, sizeof buf, &len), 8);
    cr_assert_eq(close_code(buf, len), 1000);
    cr_assert_eq(read_frame(fd, buf, sizeof buf, &len), -1, "then the server closes the TCP");
    close(fd);
}

Test(ws, oversized_frame_is_refused_with_1009)
{
    char head[2048];
    int fd = ws_connect("", head, sizeof head);
    static uint8_t big[70000]; /* the test server allows 64 KiB */
    send_frame(fd, 1, 2, big, sizeof big, true);
    uint8_t buf[256];
    size_t len;
    cr_assert_eq(read_frame(fd, buf, sizeof buf, &len), 8);
    cr_assert_eq(close_code(buf, len), 1009);
    close(fd);
}

Test(ws, unmasked_client_frame_is_a_protocol_error)
{
    char head[2048];
    int fd = ws_connect("", head, sizeof head);
    send_frame(fd, 1, 1, "x", 1, false);
    uint8_t buf[256];
    size_t len;
    cr_assert_eq(read_frame(fd, buf, sizeof buf, &len), 8);
    cr_assert_eq(close_code(buf, len), 1002);
    close(fd);
}

/* Reads frames until a close frame or the end of the socket: the data bytes read; *last = the
 * last opcode (-1: none), *code = the close code (0: none). `whole_64k` asserts every data frame
 * is one whole 64 KiB binary frame. */
static size_t drain_until_close(int fd, bool whole_64k, int *last, uint16_t *code)
{
    uint8_t *buf = malloc(1 << 17);
    size_t len, total = 0;
    int op;
    *last = -1;
    *code = 0;
    while ((op = read_frame(fd, buf, 1 << 17, &len)) >= 0) {
        *last = op;
        if (op == 8) {
            *code = close_code(buf, len);
            break;
        }
        if (whole_64k) {
            cr_assert_eq(op, 2);
            cr_assert_eq(len, 65536, "whole frames only");
        }
        total += len;
    }
    free(buf);
    return total;
}

Test(ws, client_that_stops_reading_is_closed_at_the_backlog_bound)
{
    char head[2048];
    int fd = ws_connect("", head, sizeof head);
    send_frame(fd, 1, 1, "flood", 5, true);
    usleep(500 * 1000); /* the server queues past its 1 MiB bound and gives up on us */
    /* Drain: the data stops short of 64 MiB and ends with a 1013 close (or the socket closes). */
    int last;
    uint16_t code;
    size_t total = drain_until_close(fd, false, &last, &code);
    cr_assert_lt(total, (size_t)64 << 20, "the server stopped queueing");
    if (last == 8) cr_assert_eq(code, 1013);
    close(fd);
}

Test(ws, shutdown_sends_1001_going_away)
{
    char head[2048];
    int fd = ws_connect("", head, sizeof head);
    cr_assert(strstr(head, "101"));
    pylon_http_server_shutdown(srv, 1);
    uint8_t buf[256];
    size_t len;
    cr_assert_eq(read_frame(fd, buf, sizeof buf, &len), 8);
    cr_assert_eq(close_code(buf, len), 1001);
    close(fd);
}

Test(ws, burst_from_another_thread_arrives_complete_and_in_order)
{
    char head[2048];
    int fd = ws_connect("", head, sizeof head);
    send_frame(fd, 1, 1, "burst", 5, true);
    uint8_t buf[1024];
    char want[400];
    size_t len;
    unsigned next = 0;
    bool ping_sent = false, pong_seen = false;
    for (;;) {
        int op = read_frame(fd, buf, sizeof buf, &len);
        cr_assert_neq(op, -1, "the stream ended after %u of %d frames", next, BURST);
        if (op == 0xA) { /* our ping's answer, between two whole data frames */
            cr_assert_eq(len, 4);
            cr_assert_eq(memcmp(buf, "mid!", 4), 0);
            pong_seen = true;
            if (next > BURST) break;
            continue;
        }
        cr_assert_eq(op, 1, "frame %u: opcode %d", next, op);
        cr_assert_lt(next, BURST + 1u, "nothing after \"end\" but the pong");
        if (next == BURST) {
            cr_assert_eq(len, 3);
            cr_assert_eq(memcmp(buf, "end", 3), 0);
            if (pong_seen) break;
            next++; /* the pong may come after everything already on its way */
            continue;
        }
        size_t wl = burst_payload(next, want);
        cr_assert_eq(len, wl, "frame %u: %zu bytes, want %zu", next, len, wl);
        cr_assert_eq(memcmp(buf, want, wl), 0, "frame %u: wrong bytes (order or content)", next);
        next++;
        if (next == BURST / 4 && !ping_sent) { /* a control frame in the middle of the burst */
            send_frame(fd, 1, 9, "mid!", 4, true);
            ping_sent = true;
        }
    }
    cr_assert(pong_seen, "the pong came back during the burst");
    sender_join();
    close(fd);
}

Test(ws, client_that_stops_reading_sends_from_another_thread_get_1013)
{
    char head[2048];
    int fd = ws_connect("", head, sizeof head);
    send_frame(fd, 1, 1, "tflood", 6, true);
    sender_join(); /* it stops once the server gave up on us (or after 64 MiB) */
    int last;
    uint16_t code;
    size_t total = drain_until_close(fd, true, &last, &code);
    cr_assert_lt(total, (size_t)64 << 20, "the server stopped queueing");
    cr_assert_eq(last, 8, "the data ends with a close frame");
    cr_assert_eq(code, 1013);
    close(fd);
}

/* chain: the snapshots are deltas except every CHAIN_KEY-th, and after a gap the client must
 * get an independent one first. */
static void skip_policy(bool chain)
{
    char head[2048];
    int fd = ws_connect_to(3, "", head, sizeof head); /* the shard port: SKIP policy */
    cr_assert(strstr(head, "101"), "%s", head);
    send_frame(fd, 1, 1, chain ? "chains" : "snaps", chain ? 6 : 5, true);
    /* Do not read until the server has skipped frames for us (the stall is the point). */
    for (int i = 0; i < 1000 && (!atomic_load(&snd.started) || pylon_stream_skipped(snd.s) == 0);
         i++)
        usleep(10 * 1000);
    cr_assert(atomic_load(&snd.started) && pylon_stream_skipped(snd.s) > 0,
              "the stalled client skips frames");
    static uint8_t buf[SKIP_FRAME + 16];
    size_t len;
    int64_t prev = -1;
    unsigned frames = 0, gaps = 0;
    for (;;) {
        int op = read_frame(fd, buf, sizeof buf, &len);
        cr_assert_neq(op, -1, "the stream stays open");
        if (op == 1) {
            cr_assert_eq(len, 4);
            cr_assert_eq(memcmp(buf, "last", 4), 0);
            send_frame(fd, 1, 1, "got", 3, true);
            break;
        }
        cr_assert_eq(op, 2);
        cr_assert_eq(len, SKIP_FRAME, "whole frames only");
        uint32_t seq;
        memcpy(&seq, buf, sizeof seq);
        for (size_t i = sizeof seq; i < len; i++)
            cr_assert_eq(buf[i], (uint8_t)(seq + i), "frame %u: wrong bytes at %zu", seq, i);
        cr_assert_gt((int64_t)seq, prev, "frames stay in order (%u after %lld)", seq,
                     (long long)prev);
        if ((int64_t)seq > prev + 1) {
            gaps++;
            if (chain)
                cr_assert_eq(seq % CHAIN_KEY, 0,
                             "a delta (%u) after a gap (%lld): its base is lost", seq,
                             (long long)prev);
        }
        prev = seq;
        if (++frames == 200) atomic_store(&snd.stop, true); /* reading again: let it finish */
    }
    cr_assert_geq(gaps, 1, "older frames were skipped");
    sender_join();
    cr_assert_gt(atomic_load(&snd.skipped), 0);
    close(fd);
}

Test(ws, skip_policy_drops_older_frames_keeps_order_and_the_stream)
{
    skip_policy(false);
}

Test(ws, skip_policy_never_sends_a_delta_after_a_gap)
{
    skip_policy(true);
}

/* A loop that falls behind: on a SKIP stream the outbox keeps only the newest frames (2 here,
 * max_pending; the older ones are skipped and counted); on the sync stream every frame still
 * arrives, in order. The "stall" message blocks the loop while another thread sends. */
static void stalled_loop(int port_offset, bool skip)
{
    char head[2048];
    int fd = ws_connect_to(port_offset, "", head, sizeof head);
    cr_assert(strstr(head, "101"), "%s", head);
    send_frame(fd, 1, 1, "stall", 5, true);
    send_frame(fd, 1, 1, "after", 5, true); /* echoed once the stall is over */
    uint8_t buf[64];
    size_t len;
    uint32_t want = skip ? STALL_FRAMES - 2 : 0;
    for (;;) {
        int op = read_frame(fd, buf, sizeof buf, &len);
        cr_assert_neq(op, -1, "the stream stays open");
        if (op == 1) {
            cr_assert_eq(len, 5);
            cr_assert_eq(memcmp(buf, "after", 5), 0);
            break;
        }
        cr_assert_eq(op, 2);
        cr_assert_eq(len, sizeof(uint32_t));
        uint32_t k;
        memcpy(&k, buf, sizeof k);
        cr_assert_eq(k, want, "frame %u, want %u", k, want);
        want++;
    }
    cr_assert_eq(want, STALL_FRAMES, "%s", skip ? "only the newest frames" : "every frame");
    cr_assert_eq(atomic_load(&stall_skipped), skip ? STALL_FRAMES - 2 : 0, "skips counted");
    close(fd);
}

Test(ws, stalled_loop_skip_stream_sends_only_the_newest_frames)
{
    stalled_loop(3, true);
}

Test(ws, stalled_loop_sync_stream_keeps_every_frame_in_order)
{
    stalled_loop(1, false);
}

/* The same stall with deltas: frame 0 is independent, 1..49 are deltas. The outbox keeps 48 and
 * 49, deltas on skipped frames, so the loop drops them too. The cut outlasts the batch: of the
 * "more" frames 50 (a delta) is dropped, 51 (independent) mends the chain and 52 follows it.
 * (No echo in between: an echoed text frame is independent and would mend the chain.) */
Test(ws, stalled_loop_drops_deltas_until_an_independent_frame)
{
    char head[2048];
    int fd = ws_connect_to(3, "", head, sizeof head);
    cr_assert(strstr(head, "101"), "%s", head);
    atomic_store(&stalled, NULL);
    send_frame(fd, 1, 1, "cstall", 6, true);
    /* "more" only once the loop has written (dropped) the stalled batch: a batch of its own */
    for (int i = 0; i < 500 && (!atomic_load(&stalled) ||
                                pylon_stream_skipped(atomic_load(&stalled)) < STALL_FRAMES);
         i++)
        usleep(10 * 1000);
    cr_assert(atomic_load(&stalled), "the stall ran");
    cr_assert_eq(pylon_stream_skipped(atomic_load(&stalled)), STALL_FRAMES,
                 "48 replaced in the outbox, 48 and 49 dropped by the loop");
    send_frame(fd, 1, 1, "more", 4, true);
    uint8_t buf[64];
    size_t len;
    int op;
    for (uint32_t want = STALL_FRAMES + 1; want <= STALL_FRAMES + 2; want++) {
        op = read_frame(fd, buf, sizeof buf, &len);
        cr_assert_eq(op, 2);
        cr_assert_eq(len, sizeof(uint32_t));
        uint32_t k;
        memcpy(&k, buf, sizeof k);
        cr_assert_eq(k, want, "frame %u, want %u", k, want);
    }
    op = read_frame(fd, buf, sizeof buf, &len);
    cr_assert(op == 1 && len == 4 && memcmp(buf, "done", 4) == 0, "then \"done\"");
    cr_assert_eq(atomic_load(&stall_skipped), STALL_FRAMES + 1, "then 50, counted too");
    atomic_store(&stalled, NULL);
    close(fd);
}

/* ---- several I/O loops: accepted connections are dealt round-robin ---------------------- */

/* Each loop listens on the same socket and the first one awake accepts everything pending;
 * pylon_conn_accept hands connections to the loops in turn instead. An inline route answers
 * with the index of the loop thread it runs on. */
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t seen_threads[8];
static int nseen;

static void which_loop(pylon_http_exchange *ex, void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&seen_lock);
    int k = 0;
    while (k < nseen && !pthread_equal(seen_threads[k], pthread_self()))
        k++;
    if (k == nseen && nseen < 8) seen_threads[nseen++] = pthread_self();
    pthread_mutex_unlock(&seen_lock);
    char body[16];
    snprintf(body, sizeof body, "%d", k);
    pylon_http_respond_json(ex, 200, body);
}

/* One GET /which on an open connection: the loop index from the body. */
static int ask_which(int fd)
{
    static const char req[] = "GET /which HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(fd, req, sizeof req - 1);
    char buf[2048];
    size_t got = 0;
    for (;;) { /* up to the end of a short body: headers, blank line, one digit */
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        cr_assert_gt(poll(&pf, 1, 2000), 0, "no answer");
        ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
        cr_assert_gt(r, 0, "connection closed");
        got += (size_t)r;
        buf[got] = '\0';
        const char *end = strstr(buf, "\r\n\r\n");
        if (end && end[4]) return atoi(end + 4);
    }
}

Test(io_loops, accepted_connections_are_dealt_round_robin, .timeout = 30)
{
    pylon_router *r = pylon_router_new();
    cr_assert(pylon_router_add_inline(r, PYLON_M_GET, "/which", which_loop, NULL));
    pylon_guard_config gc = {.dev = true, .rate_window_s = 60};
    pylon_guard *g = pylon_guard_new(&gc);
    int port = 0;
    pylon_http_server *s = start_server(3, r, g, NULL, NULL, &port);
    enum { CONNS = 30 };
    int fds[CONNS], per_loop[8] = {0};
    for (int i = 0; i < CONNS; i++)
        fds[i] = dial(port); /* all opened before any is used: accepted in bursts */
    for (int i = 0; i < CONNS; i++) {
        int k = ask_which(fds[i]);
        cr_assert(k >= 0 && k < 8);
        cr_assert_eq(ask_which(fds[i]), k, "a connection stays on its loop (keep-alive)");
        per_loop[k]++;
    }
    cr_assert_eq(nseen, 3, "all three loops serve connections (%d did)", nseen);
    for (int k = 0; k < 3; k++)
        cr_assert_eq(per_loop[k], CONNS / 3, "loop %d has %d of %d connections", k, per_loop[k],
                     CONNS);
    for (int i = 0; i < CONNS; i++)
        close(fds[i]);
    pylon_http_server_shutdown(s, 1);
    pylon_http_server_destroy(s);
    pylon_router_free(r);
    pylon_guard_free(g);
}

/* Liveness (DECISIONS.md §2): the server pings a WebSocket that has been silent for ws_ping_s and
 * drops one silent for ws_dead_s. Here 1 s and 3 s: a client that answers the pings stays (and
 * still gets its echoes), one that never sends anything is closed after about 3 s. */
Test(ws_liveness, silent_peer_is_dropped_one_answering_pings_stays, .timeout = 30)
{
    opt_ping_s = 1;
    opt_dead_s = 3;
    start();
    char head[2048];
    int quiet = ws_connect("", head, sizeof head);
    cr_assert(strstr(head, " 101 "), "%s", head);
    int live = ws_connect("", head, sizeof head);
    cr_assert(strstr(head, " 101 "), "%s", head);
    uint8_t buf[256];
    size_t len;
    int pings = 0;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do { /* 5 s: answer every ping with a pong carrying its payload */
        struct pollfd pf = {.fd = live, .events = POLLIN};
        if (poll(&pf, 1, 200) == 1) {
            int op = read_frame(live, buf, sizeof buf, &len);
            cr_assert_eq(op, 0x9, "only pings arrive on an idle socket (opcode %d)", op);
            pings++;
            send_frame(live, 1, 0xA, buf, len, true);
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while (t.tv_sec - t0.tv_sec < 5);
    cr_assert_geq(pings, 2, "the answering client was pinged (%d pings in 5 s)", pings);

    int quiet_pings = 0, op;
    while ((op = read_frame(quiet, buf, sizeof buf, &len)) == 0x9)
        quiet_pings++;
    cr_assert_eq(op, -1, "the silent client gets pings, then the end (opcode %d)", op);
    cr_assert_geq(quiet_pings, 1, "the silent client was pinged before it was dropped");
    cr_assert_eq(recv(quiet, buf, 1, MSG_DONTWAIT), 0, "the server closed the silent client");

    send_frame(live, 1, 1, "still here", 10, true); /* the answering one is still served */
    while ((op = read_frame(live, buf, sizeof buf, &len)) == 0x9)
        send_frame(live, 1, 0xA, buf, len, true);
    cr_assert_eq(op, 1);
    cr_assert_eq(len, 10);
    cr_assert_eq(memcmp(buf, "still here", 10), 0);
    close(quiet);
    close(live);
    stop();
    opt_ping_s = 30;
    opt_dead_s = 75;
}
