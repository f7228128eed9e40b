/*
 * fanout.c — sync fan-out benchmark: write→delivery latency, deliveries/s and lost events.
 *
 *   bench_fanout load [options]   the load generator (below)
 *   bench_fanout server PORT      reference A, "bare broadcast": our http/ WebSocket layer with
 *                                 no database, no hub, no policy. POST /api/entities/<E> frames
 *                                 {"seq","entity","row_id","kind","data","timestamp":""} once
 *                                 and sends it to every open WebSocket (sync port PORT+1 or /ws
 *                                 on PORT), then answers 201 {"id"}. So it is the floor of our
 *                                 own stack: what pylon would do with a free database and hub.
 *   bench_fanout server PORT --coalesce-ms MS
 *                                 the same, but frames wait up to MS ms and go out together, one
 *                                 buffer (several frames) per subscriber, sent from another
 *                                 thread: what write coalescing would buy (README.md).
 *
 * The load generator (loopback only, every loop bounded in time and count):
 *   1. opens --subs WebSocket subscribers to 127.0.0.1:--ws-port (--ws-path), each with the
 *      subprotocol bearer.<token> (--guest: one token from POST /api/auth/guest, shared);
 *      at most 256 handshakes in flight; then waits --settle seconds (pylon registers a
 *      session with its hub after the 101 is sent);
 *   2. a writer thread sends --rate writes/s for --duration seconds over --writers keep-alive
 *      HTTP connections (one request in flight each), POST /api/entities/Event with
 *      {"t":<send time, CLOCK_MONOTONIC ns>,"n":<write number>}; each 201 marks n acked; a
 *      saturated server answers slowly, so the writer stops sending at 1.2 x --duration and
 *      waits 5 s at most for the answers in flight (wps says what was achieved);
 *   3. the main thread reads every frame on every subscriber (epoll, level-triggered), parses
 *      seq, t and n; latency = receive time − t (same clock, same process);
 *   4. after the last answer it drains until every open subscriber has every acked n, or
 *      --drain seconds pass (or nothing arrives for 3 s);
 *   5. prints one line of key=value figures:
 *        p50_ms p95_ms p99_ms max_ms   write→delivery latency (writes after --warmup)
 *        dps        deliveries per second, from the first write to the last delivery
 *        wps        acked writes per second achieved (the writer's schedule is open-loop:
 *                   write k is due at start + k/rate; a late write is sent when a
 *                   connection frees up, with its real send time in t)
 *        lost       acked writes missing on subscribers that stayed open, summed
 *        closed     subscribers the server closed (close code in closed_codes; 1013 is the
 *                   backlog policy: "reconnect and pull", so not lost, reported apart)
 *        dup, ooo   duplicate n; seq going backwards on one subscriber
 *        unacked    deliveries of writes whose answer was not a 201
 */
#include "http/guard.h"
#include "http/router.h"
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ==== reference A: bare broadcast on the http/ layer ====================================== */

typedef struct ref_hub ref_hub;

typedef struct ref_sub {
    pylon_stream *s;
    ref_hub *hub;
    size_t idx;
} ref_sub;

struct ref_hub {
    pthread_mutex_t mu; /* on_open/on_close and the POST handler run on the loop(s) */
    ref_sub **subs;
    size_t n, cap;
    int64_t seq;
    /* --coalesce-ms: frames wait in `pending` and a flusher thread sends them as one buffer */
    unsigned coalesce_ms;
    uint8_t *pending;
    size_t pending_len, pending_cap;
    atomic_bool stop;
};

static void *ref_open(pylon_stream *s, const pylon_stream_open *info)
{
    ref_hub *h = info->ctx;
    ref_sub *rs = malloc(sizeof *rs);
    if (!rs) {
        pylon_stream_close(s, 1013, "out of memory");
        return NULL;
    }
    pthread_mutex_lock(&h->mu);
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 1024;
        ref_sub **ns = realloc(h->subs, cap * sizeof *ns);
        if (!ns) {
            pthread_mutex_unlock(&h->mu);
            free(rs);
            pylon_stream_close(s, 1013, "out of memory");
            return NULL;
        }
        h->subs = ns;
        h->cap = cap;
    }
    pylon_stream_retain(s);
    rs->s = s;
    rs->hub = h;
    rs->idx = h->n;
    h->subs[h->n++] = rs;
    pthread_mutex_unlock(&h->mu);
    return rs;
}

static void ref_close(void *user, pylon_stream *s)
{
    (void)s;
    ref_sub *rs = user;
    if (!rs) return;
    ref_hub *h = rs->hub;
    pthread_mutex_lock(&h->mu);
    size_t i = rs->idx;
    h->subs[i] = h->subs[--h->n];
    h->subs[i]->idx = i;
    pthread_mutex_unlock(&h->mu);
    pylon_stream_release(rs->s);
    free(rs);
}

static void ref_post(pylon_http_exchange *ex, void *ctx)
{
    ref_hub *h = ctx;
    const pylon_http_request *req = pylon_http_request_of(ex);
    const char *e = req->path + strlen("/api/entities/");
    int elen = (int)strcspn(e, "/?");
    if (!req->body || req->body_len == 0 || req->body_len >= 512) {
        pylon_http_respond_error(ex, 400, "BAD_REQUEST", "send a JSON object under 512 bytes",
                                 NULL);
        return;
    }
    pthread_mutex_lock(&h->mu);
    int64_t seq = ++h->seq;
    /* The same shape as pylon's change event; the body is the row's data. */
    char text[1024];
    int len =
        snprintf(text, sizeof text,
                 "{\"seq\":%" PRId64 ",\"entity\":\"%.*s\",\"row_id\":\"r%024" PRId64
                 "\",\"kind\":\"insert\",\"data\":%.*s,\"timestamp\":\"\"}",
                 seq, elen > 64 ? 64 : elen, e, seq, (int)req->body_len, (const char *)req->body);
    pylon_buf *f =
        len > 0 && (size_t)len < sizeof text ? pylon_ws_frame(1, text, (size_t)len) : NULL;
    bool ok = f != NULL;
    if (f && h->coalesce_ms) {
        if (h->pending_len + f->len > h->pending_cap) {
            size_t cap = h->pending_cap ? h->pending_cap * 2 : 65536;
            while (cap < h->pending_len + f->len)
                cap *= 2;
            uint8_t *np = realloc(h->pending, cap);
            if (np) {
                h->pending = np;
                h->pending_cap = cap;
            }
        }
        ok = h->pending_len + f->len <= h->pending_cap;
        if (ok) {
            memcpy(h->pending + h->pending_len, f->data, f->len);
            h->pending_len += f->len;
        }
    } else if (f) {
        for (size_t i = 0; i < h->n; i++)
            pylon_stream_send(h->subs[i]->s, f);
    }
    if (f) pylon_buf_release(f);
    pthread_mutex_unlock(&h->mu);
    if (!ok) {
        pylon_http_respond_error(ex, 400, "BAD_REQUEST", "body too large", NULL);
        return;
    }
    char id[64];
    snprintf(id, sizeof id, "{\"id\":\"r%024" PRId64 "\"}", seq);
    pylon_http_respond_json(ex, 201, id);
}

/* --coalesce-ms: every period, the frames that arrived go out as one buffer per stream (one
 * write per subscriber however many events), sent from this thread like pylon's hub does. */
static void *ref_flusher(void *arg)
{
    ref_hub *h = arg;
    while (!atomic_load(&h->stop)) {
        struct timespec ts = {0, (long)h->coalesce_ms * 1000000L};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&h->mu);
        pylon_buf *b = h->pending_len ? pylon_buf_copy(h->pending, h->pending_len) : NULL;
        h->pending_len = 0;
        if (b) {
            for (size_t i = 0; i < h->n; i++)
                pylon_stream_send(h->subs[i]->s, b);
            pylon_buf_release(b);
        }
        pthread_mutex_unlock(&h->mu);
    }
    return NULL;
}

static void ref_guest(pylon_http_exchange *ex, void *ctx)
{
    (void)ctx;
    pylon_http_respond_json(ex, 200,
                            "{\"token\":\"ref\",\"user_id\":\"guest_ref\",\"guest\":true}");
}

static int run_server(int port, unsigned coalesce_ms)
{
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    ref_hub hub = {0};
    pthread_mutex_init(&hub.mu, NULL);
    hub.coalesce_ms = coalesce_ms;
    pylon_stream_handlers ws = {.on_open = ref_open,
                                .on_close = ref_close,
                                .backlog_policy = PYLON_BACKLOG_CLOSE,
                                .ctx = &hub};
    pylon_router *router = pylon_router_new();
    if (!router ||
        !pylon_router_add_inline(router, PYLON_M_POST, "/api/entities/:entity", ref_post, &hub) ||
        !pylon_router_add_inline(router, PYLON_M_POST, "/api/auth/guest", ref_guest, NULL)) {
        fprintf(stderr, "server: routes: out of memory\n");
        return 1;
    }
    /* The same limits and timers as `pylon` with the benchmark's environment. */
    pylon_guard_config gc = {.dev = true, .rate_max = 0, .rate_window_s = 60};
    pylon_guard *guard = pylon_guard_new(&gc);
    pylon_http_server_options o = {.host = "127.0.0.1",
                                   .port = port,
                                   .io_threads = 1,
                                   .max_header_bytes = 16384,
                                   .max_body_bytes = 1 << 20,
                                   .header_timeout_s = 10,
                                   .body_timeout_s = 30,
                                   .idle_timeout_s = 60,
                                   .ws_max_frame = 16 << 20,
                                   .stream_max_backlog = 4 << 20,
                                   .ws_ping_s = 30,
                                   .ws_dead_s = 75,
                                   .sse_keepalive_s = 30,
                                   .router = router,
                                   .guard = guard,
                                   .streams = {[PYLON_STREAM_SYNC_WS] = &ws}};
    char err[256];
    pylon_http_server *srv = pylon_http_server_start(&o, err, sizeof err);
    if (!srv) {
        fprintf(stderr, "server: %s\n", err);
        return 1;
    }
    pthread_t flusher;
    bool flushing = coalesce_ms && pthread_create(&flusher, NULL, ref_flusher, &hub) == 0;
    printf("ready\n");
    fflush(stdout);
    int sig;
    sigwait(&stop, &sig);
    atomic_store(&hub.stop, true);
    if (flushing) pthread_join(flusher, NULL);
    pylon_http_server_shutdown(srv, 1);
    pylon_http_server_destroy(srv);
    pylon_router_free(router);
    pylon_guard_free(guard);
    free(hub.subs);
    free(hub.pending);
    return 0;
}

/* ==== the load generator =================================================================== */

typedef struct opts {
    int http_port, ws_port;
    const char *ws_path;
    int subs, rate, writers;
    double duration, warmup, settle, drain, connect_timeout;
    bool guest;
    const char *token;
    const char *entity;
    const char *label;
    int server_pid; /* its CPU time is read from /proc around the write phase */
} opts;

/* Latency histogram: 10 µs buckets up to 1 s, then 1 ms buckets up to 120 s. */
#define H_FINE   100000
#define H_COARSE 119000
typedef struct hist {
    uint64_t b[H_FINE + H_COARSE + 1];
    uint64_t n, max_ns;
} hist;

static void hist_add(hist *h, uint64_t ns)
{
    uint64_t us = ns / 1000, i;
    if (us < 1000000)
        i = us / 10;
    else if (us < 120000000)
        i = H_FINE + (us - 1000000) / 1000;
    else
        i = H_FINE + H_COARSE;
    h->b[i]++;
    h->n++;
    if (ns > h->max_ns) h->max_ns = ns;
}

static double hist_pct_ms(const hist *h, double p)
{
    if (!h->n) return 0;
    uint64_t want = (uint64_t)((double)h->n * p / 100.0);
    if (want >= h->n) want = h->n - 1;
    uint64_t acc = 0;
    for (size_t i = 0; i <= H_FINE + H_COARSE; i++) {
        acc += h->b[i];
        if (acc > want) {
            if (i < H_FINE) return (double)(i * 10 + 10) / 1000.0; /* upper bound */
            return 1000.0 + (double)(i - H_FINE + 1);
        }
    }
    return (double)h->max_ns / 1e6;
}

/* ---- writers (their own thread) ---- */

typedef struct writer {
    int fd;
    bool busy;
    int64_t n; /* the write in flight */
    uint64_t sent_ns;
    char rbuf[8192];
    size_t rlen;
} writer;

typedef struct shared {
    const opts *o;
    char token[512];
    int64_t total;        /* writes planned */
    uint8_t *acked;       /* [total]: 1 when answered 201 (writer thread; read after join) */
    _Atomic int64_t sent; /* writes sent so far */
    _Atomic bool writes_done;
    _Atomic uint64_t first_write_ns, last_answer_ns;
    int64_t n_acked, n_failed, n_behind;
    hist rtt; /* write round trips */
    char first_error[200];
} shared;

static int connect_blocking(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static bool write_all(int fd, const char *p, size_t n)
{
    uint64_t deadline = now_ns() + 5000000000ull;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (now_ns() > deadline) return false;
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
        } else {
            return false;
        }
    }
    return true;
}

/* One blocking HTTP exchange (setup only): returns the status, body into out. */
static int http_once(int port, const char *req, char *out, size_t cap)
{
    int fd = connect_blocking(port);
    if (fd < 0) return -1;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (!write_all(fd, req, strlen(req))) {
        close(fd);
        return -1;
    }
    char buf[16384];
    size_t len = 0;
    int status = -1;
    for (int i = 0; i < 100 && len < sizeof buf - 1; i++) {
        ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
        if (r <= 0) break;
        len += (size_t)r;
        buf[len] = '\0';
        char *body = strstr(buf, "\r\n\r\n");
        if (!body) continue;
        const char *cl = strcasestr(buf, "content-length:");
        size_t want = cl ? strtoul(cl + 15, NULL, 10) : 0;
        if ((size_t)(buf + len - (body + 4)) >= want) {
            sscanf(buf, "HTTP/1.%*d %d", &status);
            snprintf(out, cap, "%.*s", (int)want, body + 4);
            break;
        }
    }
    close(fd);
    return status;
}

static bool writer_send(shared *sh, writer *w, int64_t n)
{
    const opts *o = sh->o;
    char body[96], req[1024];
    uint64_t t = now_ns();
    int bl = snprintf(body, sizeof body, "{\"t\":%" PRIu64 ",\"n\":%" PRId64 "}", t, n);
    int rl = snprintf(req, sizeof req,
                      "POST /api/entities/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Content-Type: application/json\r\n%s%s%sContent-Length: %d\r\n\r\n%s",
                      o->entity, sh->token[0] ? "Authorization: Bearer " : "", sh->token,
                      sh->token[0] ? "\r\n" : "", bl, body);
    w->busy = true;
    w->n = n;
    w->sent_ns = t;
    w->rlen = 0;
    return write_all(w->fd, req, (size_t)rl);
}

/* A complete response in w->rbuf: its status, and consumes it. 0: incomplete. -1: broken. */
static int writer_parse(writer *w)
{
    w->rbuf[w->rlen < sizeof w->rbuf ? w->rlen : sizeof w->rbuf - 1] = '\0';
    char *end = strstr(w->rbuf, "\r\n\r\n");
    if (!end) return w->rlen >= sizeof w->rbuf - 1 ? -1 : 0;
    int status = 0;
    if (sscanf(w->rbuf, "HTTP/1.%*d %d", &status) != 1) return -1;
    char save = end[2];
    end[2] = '\0';
    const char *cl = strcasestr(w->rbuf, "\ncontent-length:");
    end[2] = save;
    size_t want = cl ? strtoul(cl + 16, NULL, 10) : 0;
    size_t head = (size_t)(end + 4 - w->rbuf);
    if (w->rlen < head + want) return 0;
    memmove(w->rbuf, w->rbuf + head + want, w->rlen - head - want);
    w->rlen -= head + want;
    return status;
}

static void *writer_main(void *arg)
{
    shared *sh = arg;
    const opts *o = sh->o;
    int nw = o->writers;
    writer *ws = calloc((size_t)nw, sizeof *ws);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < nw; i++) {
        ws[i].fd = connect_blocking(o->http_port);
        if (ws[i].fd < 0) {
            snprintf(sh->first_error, sizeof sh->first_error, "writer connect: %s",
                     strerror(errno));
            continue;
        }
        fcntl(ws[i].fd, F_SETFL, fcntl(ws[i].fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, ws[i].fd, &ev);
    }
    uint64_t start = now_ns();
    atomic_store(&sh->first_write_ns, start);
    double interval = 1e9 / o->rate;
    /* A saturated server answers slowly: stop sending at 1.2 x duration, wait 5 s at most for
     * the answers in flight. */
    uint64_t send_end = start + (uint64_t)(o->duration * 1.2e9);
    uint64_t hard_end = send_end + 5000000000ull;
    int64_t k = 0;
    int inflight = 0;
    for (;;) {
        uint64_t now = now_ns();
        bool sending = k < sh->total && now < send_end;
        if ((!sending && inflight == 0) || now >= hard_end) break;
        bool late = false;
        while (sending && k < sh->total && now >= start + (uint64_t)(k * interval)) {
            int free_w = -1;
            for (int i = 0; i < nw; i++)
                if (ws[i].fd >= 0 && !ws[i].busy) {
                    free_w = i;
                    break;
                }
            if (free_w < 0) {
                late = true;
                break;
            }
            if (now > start + (uint64_t)(k * interval) + 5000000) sh->n_behind++; /* >5 ms late */
            if (!writer_send(sh, &ws[free_w], k)) {
                snprintf(sh->first_error, sizeof sh->first_error, "writer send: %s",
                         strerror(errno));
                close(ws[free_w].fd);
                ws[free_w].fd = -1;
                sh->n_failed++;
                k++;
                continue;
            }
            inflight++;
            k++;
            atomic_store_explicit(&sh->sent, k, memory_order_relaxed);
        }
        int timeout = 100;
        if (sending && k < sh->total && !late) {
            uint64_t due = start + (uint64_t)(k * interval);
            now = now_ns();
            timeout = due > now ? (int)((due - now + 999999) / 1000000) : 0;
        }
        struct epoll_event evs[64];
        int ne = epoll_wait(ep, evs, 64, timeout);
        for (int e = 0; e < ne; e++) {
            writer *w = &ws[evs[e].data.u32];
            if (w->fd < 0) continue;
            ssize_t r = read(w->fd, w->rbuf + w->rlen, sizeof w->rbuf - 1 - w->rlen);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            int st = r > 0 ? (w->rlen += (size_t)r, writer_parse(w)) : -1;
            if (st == 0) continue;
            uint64_t t = now_ns();
            if (st < 0) {
                if (!sh->first_error[0])
                    snprintf(sh->first_error, sizeof sh->first_error, "writer connection lost");
                epoll_ctl(ep, EPOLL_CTL_DEL, w->fd, NULL);
                close(w->fd);
                w->fd = -1;
                if (w->busy) {
                    sh->n_failed++;
                    inflight--;
                }
                w->busy = false;
                continue;
            }
            if (!w->busy) continue;
            w->busy = false;
            inflight--;
            hist_add(&sh->rtt, t - w->sent_ns);
            atomic_store(&sh->last_answer_ns, t);
            if (st == 201) {
                sh->acked[w->n] = 1;
                sh->n_acked++;
            } else {
                sh->n_failed++;
                if (!sh->first_error[0])
                    snprintf(sh->first_error, sizeof sh->first_error, "write answered %d: %.100s",
                             st, w->rbuf);
            }
        }
    }
    for (int i = 0; i < nw; i++)
        if (ws[i].fd >= 0) close(ws[i].fd);
    close(ep);
    free(ws);
    atomic_store(&sh->writes_done, true);
    return NULL;
}

/* ---- subscribers (main thread) ---- */

enum { S_IDLE, S_CONNECTING, S_HANDSHAKE, S_OPEN, S_CLOSED, S_FAILED };

typedef struct sub {
    int fd;
    uint8_t state;
    uint16_t close_code;
    uint32_t plen, pcap;
    uint8_t *part; /* a partial frame (or the handshake answer so far) */
    uint64_t *got; /* bitmap over n */
    int64_t distinct;
    int64_t last_seq;
} sub;

typedef struct run {
    const opts *o;
    shared *sh;
    sub *subs;
    int ep;
    size_t words;
    char handshake[1024];
    size_t hs_len;
    int connecting, open, closed, failed;
    int64_t deliveries, dups, ooo, unparsed, distinct_open;
    uint64_t last_delivery_ns, measure_from_ns;
    hist lat;
    uint16_t close_codes[8];
    int n_close_codes;
    uint8_t scratch[1 << 18];
} run;

static void sub_drop(run *R, sub *s, int state)
{
    if (s->fd >= 0) {
        epoll_ctl(R->ep, EPOLL_CTL_DEL, s->fd, NULL);
        close(s->fd);
    }
    s->fd = -1;
    if (s->state == S_OPEN) {
        R->open--;
        R->distinct_open -= s->distinct;
    } else if (s->state == S_CONNECTING || s->state == S_HANDSHAKE) {
        R->connecting--;
    }
    s->state = (uint8_t)state;
    if (state == S_CLOSED) R->closed++;
    if (state == S_FAILED) R->failed++;
    free(s->part);
    s->part = NULL;
    s->plen = s->pcap = 0;
}

static bool sub_start(run *R, sub *s, uint32_t idx)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)R->o->ws_port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    if (rc != 0 && errno != EINPROGRESS) {
        close(fd);
        return false;
    }
    s->fd = fd;
    s->state = S_CONNECTING;
    s->last_seq = -1;
    R->connecting++;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = idx};
    epoll_ctl(R->ep, EPOLL_CTL_ADD, fd, &ev);
    return true;
}

static bool part_put(sub *s, const uint8_t *p, size_t n)
{
    if (s->plen + n > s->pcap) {
        size_t cap = s->pcap ? s->pcap : 256;
        while (cap < s->plen + n)
            cap *= 2;
        if (cap > (16u << 20)) return false;
        uint8_t *np = realloc(s->part, cap);
        if (!np) return false;
        s->part = np;
        s->pcap = (uint32_t)cap;
    }
    memcpy(s->part + s->plen, p, n);
    s->plen += (uint32_t)n;
    return true;
}

/* The integer after "key": in p[0..len), or false. */
static bool json_int(const uint8_t *p, size_t len, const char *key, size_t klen, int64_t *out)
{
    const uint8_t *k = memmem(p, len, key, klen);
    if (!k) return false;
    const uint8_t *q = k + klen, *end = p + len;
    bool neg = false;
    if (q < end && *q == '-') {
        neg = true;
        q++;
    }
    if (q >= end || *q < '0' || *q > '9') return false;
    int64_t v = 0;
    while (q < end && *q >= '0' && *q <= '9')
        v = v * 10 + (*q++ - '0');
    *out = neg ? -v : v;
    return true;
}

static void on_text(run *R, sub *s, const uint8_t *p, size_t len, uint64_t now)
{
    int64_t seq, t, n;
    if (!json_int(p, len, "\"seq\":", 6, &seq)) return; /* presence and such */
    if (!json_int(p, len, "\"t\":", 4, &t) || !json_int(p, len, "\"n\":", 4, &n) || n < 0 ||
        n >= R->sh->total) {
        R->unparsed++;
        return;
    }
    if (seq <= s->last_seq) R->ooo++;
    s->last_seq = seq;
    uint64_t bit = 1ull << (n & 63);
    if (s->got[n >> 6] & bit) {
        R->dups++;
        return;
    }
    s->got[n >> 6] |= bit;
    s->distinct++;
    R->distinct_open++;
    R->deliveries++;
    R->last_delivery_ns = now;
    if ((uint64_t)t >= R->measure_from_ns && now >= (uint64_t)t)
        hist_add(&R->lat, now - (uint64_t)t);
}

/* Parses whole frames at p[0..len); returns the bytes used. */
static size_t on_frames(run *R, sub *s, const uint8_t *p, size_t len, uint64_t now)
{
    size_t off = 0;
    while (len - off >= 2) {
        const uint8_t *f = p + off;
        int opcode = f[0] & 0x0f;
        bool masked = f[1] & 0x80;
        uint64_t pl = f[1] & 0x7f;
        size_t hl = 2;
        if (pl == 126) {
            if (len - off < 4) break;
            pl = ((uint64_t)f[2] << 8) | f[3];
            hl = 4;
        } else if (pl == 127) {
            if (len - off < 10) break;
            pl = 0;
            for (int i = 0; i < 8; i++)
                pl = (pl << 8) | f[2 + i];
            hl = 10;
        }
        if (masked) hl += 4; /* a server must not mask; tolerated */
        if (pl > (16u << 20)) {
            sub_drop(R, s, S_CLOSED);
            return len;
        }
        if (len - off < hl + pl) break;
        const uint8_t *payload = f + hl;
        switch (opcode) {
        case 1:
            on_text(R, s, payload, (size_t)pl, now);
            break;
        case 8: {
            uint16_t code = pl >= 2 ? (uint16_t)((payload[0] << 8) | payload[1]) : 1005;
            s->close_code = code;
            bool seen = false;
            for (int i = 0; i < R->n_close_codes; i++)
                seen |= R->close_codes[i] == code;
            if (!seen && R->n_close_codes < 8) R->close_codes[R->n_close_codes++] = code;
            sub_drop(R, s, S_CLOSED);
            return len;
        }
        case 9: { /* ping: a masked pong with the same payload (zero mask key) */
            uint8_t pong[2 + 4 + 125];
            size_t n = pl > 125 ? 125 : (size_t)pl;
            pong[0] = 0x8a;
            pong[1] = (uint8_t)(0x80 | n);
            memset(pong + 2, 0, 4);
            memcpy(pong + 6, payload, n);
            if (write(s->fd, pong, 6 + n) < 0) { /* a lost pong only risks a ping timeout */
            }
            break;
        }
        default:
            break;
        }
        off += hl + (size_t)pl;
    }
    return off;
}

static void sub_readable(run *R, sub *s, uint64_t now)
{
    for (int round = 0; round < 4 && s->fd >= 0; round++) {
        size_t pre = s->plen;
        if (pre > sizeof R->scratch / 2) { /* a huge partial frame: keep it in part */
            uint8_t tmp[65536];
            ssize_t r = read(s->fd, tmp, sizeof tmp);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                sub_drop(R, s, S_CLOSED);
                return;
            }
            if (r < 0) return;
            if (!part_put(s, tmp, (size_t)r)) {
                sub_drop(R, s, S_CLOSED);
                return;
            }
            size_t used = on_frames(R, s, s->part, s->plen, now);
            if (s->fd < 0) return;
            memmove(s->part, s->part + used, s->plen - used);
            s->plen -= (uint32_t)used;
            continue;
        }
        if (pre) memcpy(R->scratch, s->part, pre);
        ssize_t r = read(s->fd, R->scratch + pre, sizeof R->scratch - pre);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
            if (s->state == S_HANDSHAKE || s->state == S_CONNECTING)
                sub_drop(R, s, S_FAILED);
            else
                sub_drop(R, s, S_CLOSED);
            return;
        }
        if (r < 0) return;
        size_t len = pre + (size_t)r, used = 0;
        s->plen = 0;
        if (s->state == S_HANDSHAKE) {
            uint8_t *end = memmem(R->scratch, len, "\r\n\r\n", 4);
            if (!end) {
                if (len > 4096 || !part_put(s, R->scratch, len)) sub_drop(R, s, S_FAILED);
                return;
            }
            if (len < 12 || memcmp(R->scratch, "HTTP/1.1 101", 12) != 0) {
                if (!R->sh->first_error[0])
                    snprintf(R->sh->first_error, sizeof R->sh->first_error, "handshake: %.80s",
                             (const char *)R->scratch);
                sub_drop(R, s, S_FAILED);
                return;
            }
            used = (size_t)(end + 4 - R->scratch);
            s->state = S_OPEN;
            R->connecting--;
            R->open++;
        }
        used += on_frames(R, s, R->scratch + used, len - used, now);
        if (s->fd < 0) return;
        if (used < len && !part_put(s, R->scratch + used, len - used)) {
            sub_drop(R, s, S_CLOSED);
            return;
        }
        if ((size_t)r < sizeof R->scratch - pre) return; /* drained */
    }
}

static void sub_event(run *R, uint32_t idx, uint32_t events, uint64_t now)
{
    sub *s = &R->subs[idx];
    if (s->fd < 0) return;
    if (s->state == S_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err || write(s->fd, R->handshake, R->hs_len) != (ssize_t)R->hs_len) {
            sub_drop(R, s, S_FAILED);
            return;
        }
        int one = 1;
        setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        s->state = S_HANDSHAKE;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = idx};
        epoll_ctl(R->ep, EPOLL_CTL_MOD, s->fd, &ev);
        return;
    }
    sub_readable(R, s, now);
}

static void pump(run *R, int timeout_ms)
{
    struct epoll_event evs[1024];
    int ne = epoll_wait(R->ep, evs, 1024, timeout_ms);
    uint64_t now = now_ns();
    for (int e = 0; e < ne; e++) {
        sub_event(R, evs[e].data.u32, evs[e].events, now);
        if ((e & 63) == 63) now = now_ns();
    }
}

/* utime + stime of a process, in seconds; -1 when unreadable. */
static double proc_cpu_s(int pid)
{
    if (pid <= 0) return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long ut, st;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
     */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_fanout load --http-port P --ws-port P [--ws-path /] [--subs N]\n"
                    "         [--rate M] [--duration D] [--writers W] [--warmup S] [--settle S]\n"
                    "         [--drain S] [--guest | --token T] [--entity Event] [--label NAME]\n"
                    "         [--server-pid PID]\n"
                    "       bench_fanout server PORT [--coalesce-ms MS]\n");
}

static int run_load(int argc, char **argv)
{
    opts o = {.ws_path = "/",
              .subs = 1000,
              .rate = 100,
              .writers = 4,
              .duration = 10,
              .warmup = 1,
              .settle = 1,
              .drain = 10,
              .connect_timeout = 120,
              .entity = "Event",
              .label = "run"};
    static const struct option lo[] = {{"http-port", 1, 0, 'h'},  {"ws-port", 1, 0, 'p'},
                                       {"ws-path", 1, 0, 'P'},    {"subs", 1, 0, 'n'},
                                       {"rate", 1, 0, 'r'},       {"duration", 1, 0, 'd'},
                                       {"writers", 1, 0, 'w'},    {"warmup", 1, 0, 'W'},
                                       {"settle", 1, 0, 's'},     {"drain", 1, 0, 'D'},
                                       {"guest", 0, 0, 'g'},      {"token", 1, 0, 't'},
                                       {"entity", 1, 0, 'e'},     {"label", 1, 0, 'l'},
                                       {"server-pid", 1, 0, 'S'}, {0, 0, 0, 0}};
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'h':
            o.http_port = atoi(optarg);
            break;
        case 'p':
            o.ws_port = atoi(optarg);
            break;
        case 'P':
            o.ws_path = optarg;
            break;
        case 'n':
            o.subs = atoi(optarg);
            break;
        case 'r':
            o.rate = atoi(optarg);
            break;
        case 'd':
            o.duration = atof(optarg);
            break;
        case 'w':
            o.writers = atoi(optarg);
            break;
        case 'W':
            o.warmup = atof(optarg);
            break;
        case 's':
            o.settle = atof(optarg);
            break;
        case 'D':
            o.drain = atof(optarg);
            break;
        case 'g':
            o.guest = true;
            break;
        case 't':
            o.token = optarg;
            break;
        case 'e':
            o.entity = optarg;
            break;
        case 'l':
            o.label = optarg;
            break;
        case 'S':
            o.server_pid = atoi(optarg);
            break;
        default:
            usage();
            return 64;
        }
    }
    /* Bounds: everything below is sized and timed from these. */
    if (o.http_port <= 0 || o.ws_port <= 0 || o.subs < 1 || o.subs > 60000 || o.rate < 1 ||
        o.rate > 100000 || o.duration <= 0 || o.duration > 600 || o.writers < 1 ||
        o.writers > 256 || o.drain < 0 || o.drain > 120 || o.warmup < 0 || o.settle < 0 ||
        o.settle > 30) {
        usage();
        return 64;
    }
    signal(SIGPIPE, SIG_IGN);
    shared *sh = calloc(1, sizeof *sh);
    run *R = calloc(1, sizeof *R);
    if (!sh || !R) return 1;
    sh->o = &o;
    sh->total = (int64_t)((double)o.rate * o.duration);
    if (sh->total < 1) sh->total = 1;
    R->words = (size_t)(sh->total + 63) / 64;
    if ((double)R->words * 8 * o.subs > 4e9) {
        fprintf(stderr, "load: subs x rate x duration too large for the receive bitmaps\n");
        return 64;
    }
    sh->acked = calloc((size_t)sh->total, 1);
    R->o = &o;
    R->sh = sh;
    R->subs = calloc((size_t)o.subs, sizeof *R->subs);
    if (!sh->acked || !R->subs) return 1;
    for (int i = 0; i < o.subs; i++) {
        R->subs[i].fd = -1;
        R->subs[i].got = calloc(R->words, sizeof(uint64_t));
        if (!R->subs[i].got) return 1;
    }

    if (o.token) snprintf(sh->token, sizeof sh->token, "%s", o.token);
    if (o.guest) {
        char body[1024];
        const char *req = "POST /api/auth/guest HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          "Content-Length: 0\r\nConnection: close\r\n\r\n";
        int st = http_once(o.http_port, req, body, sizeof body);
        char *tk = strstr(body, "\"token\":\"");
        if (st < 200 || st >= 300 || !tk) {
            fprintf(stderr, "load: POST /api/auth/guest answered %d: %.200s\n", st, body);
            return 1;
        }
        tk += 9;
        snprintf(sh->token, sizeof sh->token, "%.*s", (int)strcspn(tk, "\""), tk);
    }
    R->hs_len = (size_t)snprintf(
        R->handshake, sizeof R->handshake,
        "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "%s%s%s\r\n",
        o.ws_path, sh->token[0] ? "Sec-WebSocket-Protocol: bearer." : "", sh->token,
        sh->token[0] ? "\r\n" : "");
    R->ep = epoll_create1(EPOLL_CLOEXEC);

    /* 1. Subscribers: at most 256 handshakes in flight. */
    uint64_t t0 = now_ns();
    uint64_t connect_end = t0 + (uint64_t)(o.connect_timeout * 1e9);
    int next = 0;
    while ((next < o.subs || R->connecting > 0) && now_ns() < connect_end) {
        while (next < o.subs && R->connecting < 256) {
            if (!sub_start(R, &R->subs[next], (uint32_t)next)) {
                R->subs[next].state = S_FAILED;
                R->failed++;
            }
            next++;
        }
        pump(R, 50);
    }
    double connect_s = (double)(now_ns() - t0) / 1e9;
    for (int i = 0; i < o.subs; i++)
        if (R->subs[i].state == S_CONNECTING || R->subs[i].state == S_HANDSHAKE)
            sub_drop(R, &R->subs[i], S_FAILED);
    int connected = R->open;
    if (connected == 0) {
        fprintf(stderr, "load: no subscriber connected (%s)\n",
                sh->first_error[0] ? sh->first_error : "?");
        return 1;
    }
    uint64_t settle_end = now_ns() + (uint64_t)(o.settle * 1e9);
    while (now_ns() < settle_end)
        pump(R, 20);
    int64_t pre_deliveries = R->deliveries;

    /* 2-3. Writes and deliveries. */
    R->measure_from_ns = now_ns() + (uint64_t)(o.warmup * 1e9);
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    uint64_t wall0 = now_ns();
    double srv0 = proc_cpu_s(o.server_pid);
    pthread_t wt;
    if (pthread_create(&wt, NULL, writer_main, sh) != 0) return 1;
    uint64_t hard_end = now_ns() + (uint64_t)((o.duration * 1.2 + 6 + o.drain) * 1e9);
    uint64_t drain_end = 0, last_progress = now_ns();
    int64_t last_count = 0;
    while (now_ns() < hard_end) {
        pump(R, 20);
        uint64_t now = now_ns();
        if (R->deliveries != last_count) {
            last_count = R->deliveries;
            last_progress = now;
        }
        if (!atomic_load(&sh->writes_done)) continue;
        if (!drain_end) drain_end = now + (uint64_t)(o.drain * 1e9);
        int64_t want = (int64_t)R->open * (atomic_load(&sh->sent));
        /* every open subscriber has every write sent (acked or not), or it is time */
        if (R->distinct_open >= want || now >= drain_end || now - last_progress > 3000000000ull)
            break;
    }
    pthread_join(wt, NULL);
    getrusage(RUSAGE_SELF, &ru1);
    double srv1 = proc_cpu_s(o.server_pid);
    double wall = (double)(now_ns() - wall0) / 1e9;
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                 (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;

    /* 4. Losses: acked writes missing on subscribers still open. */
    int64_t lost = 0, unacked = 0, subs_missing = 0;
    for (int i = 0; i < o.subs; i++) {
        sub *s = &R->subs[i];
        if (s->state != S_OPEN) continue;
        int64_t miss = 0;
        for (int64_t n = 0; n < sh->total; n++) {
            bool got = s->got[n >> 6] & (1ull << (n & 63));
            if (sh->acked[n] && !got) miss++;
            if (!sh->acked[n] && got) unacked++;
        }
        lost += miss;
        if (miss) subs_missing++;
    }
    uint64_t first = atomic_load(&sh->first_write_ns);
    uint64_t wend = atomic_load(&sh->last_answer_ns);
    double wspan = wend > first ? (double)(wend - first) / 1e9 : 0;
    double dspan = R->last_delivery_ns > first ? (double)(R->last_delivery_ns - first) / 1e9 : 0;
    char codes[64] = "";
    for (int i = 0; i < R->n_close_codes; i++)
        snprintf(codes + strlen(codes), sizeof codes - strlen(codes), "%s%u", i ? "," : "",
                 R->close_codes[i]);
    printf(
        "label=%s subs=%d connected=%d connect_s=%.2f rate=%d duration=%.1f writes=%" PRId64
        " acked=%" PRId64 " failed=%" PRId64 " behind=%" PRId64 " wps=%.1f"
        " rtt_p50_ms=%.2f rtt_p99_ms=%.2f deliveries=%" PRId64 " dps=%.0f p50_ms=%.2f p95_ms=%.2f"
        " p99_ms=%.2f max_ms=%.2f lost=%" PRId64 " subs_missing=%" PRId64 " closed=%d"
        " closed_codes=%s dup=%" PRId64 " ooo=%" PRId64 " unacked=%" PRId64 " unparsed=%" PRId64
        " stray=%" PRId64 " client_cpu=%.2f server_cpu=%.2f"
        " server_us_per_delivery=%.3f%s%s\n",
        o.label, o.subs, connected, connect_s, o.rate, o.duration, (int64_t)atomic_load(&sh->sent),
        sh->n_acked, sh->n_failed, sh->n_behind, wspan > 0 ? (double)sh->n_acked / wspan : 0,
        hist_pct_ms(&sh->rtt, 50), hist_pct_ms(&sh->rtt, 99), R->deliveries,
        dspan > 0 ? (double)R->deliveries / dspan : 0, hist_pct_ms(&R->lat, 50),
        hist_pct_ms(&R->lat, 95), hist_pct_ms(&R->lat, 99), (double)R->lat.max_ns / 1e6, lost,
        subs_missing, R->closed, codes[0] ? codes : "-", R->dups, R->ooo, unacked, R->unparsed,
        pre_deliveries, wall > 0 ? cpu / wall : 0,
        srv0 >= 0 && srv1 >= 0 && wall > 0 ? (srv1 - srv0) / wall : -1,
        srv0 >= 0 && srv1 >= 0 && R->deliveries ? (srv1 - srv0) * 1e6 / (double)R->deliveries : -1,
        sh->first_error[0] ? " error=" : "", sh->first_error[0] ? "see-stderr" : "");
    if (sh->first_error[0]) fprintf(stderr, "load: first error: %s\n", sh->first_error);
    fflush(stdout);

    /* Close everything with a reset: no TIME_WAIT pile-up across scenarios. */
    struct linger lg = {1, 0};
    for (int i = 0; i < o.subs; i++) {
        if (R->subs[i].fd >= 0) {
            setsockopt(R->subs[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(R->subs[i].fd);
        }
        free(R->subs[i].part);
        free(R->subs[i].got);
    }
    close(R->ep);
    free(R->subs);
    free(sh->acked);
    free(sh);
    free(R);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "server") == 0) {
        unsigned coalesce = 0;
        if (argc >= 5 && strcmp(argv[3], "--coalesce-ms") == 0) coalesce = (unsigned)atoi(argv[4]);
        if (coalesce > 1000) coalesce = 1000;
        return run_server(atoi(argv[2]), coalesce);
    }
    if (argc >= 2 && strcmp(argv[1], "load") == 0) return run_load(argc, argv);
    usage();
    return 64;
}
