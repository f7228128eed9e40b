/*
 * load.c — bench_data_load: a closed-loop HTTP/1.1 load generator for the data API.
 *
 * C keep-alive connections to 127.0.0.1:PORT, spread over T threads (one epoll loop each).
 * Every connection has exactly one request outstanding: when its answer is complete the next
 * request goes out at once, so the rate measured is the rate the server sustains at that
 * concurrency (no pipelining, no open-loop queueing). Answers are parsed by Content-Length.
 *
 * Modes:
 *   health   GET /health
 *   insert   POST /api/entities/<E> {"label":"bench row <k>","n":<k>,"done":<bool>}; the server
 *            picks the id; the ids answered 201 can be saved (--save-ids) for the get mode
 *   get      GET /api/entities/<E>/<id>, ids drawn at random from --ids FILE
 *
 * Only answers completed inside the measured window (after --warmup) count. A non-2xx answer
 * counts as an error (503 OVERLOADED separately). Prints one line of key=value pairs:
 *   mode=insert conns=128 secs=5.00 ok=251234 err=0 overloaded=0 rps=50246.8 p50_ms=2.41
 * p99_ms=5.93
 *
 * Usage: bench_data_load --port P --mode health|insert|get [--conns 128] [--threads 1]
 *          [--duration 5] [--warmup 1] [--entity Item] [--ids FILE] [--save-ids FILE]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum mode { M_HEALTH, M_INSERT, M_GET };

/* Latency histogram: 10 µs buckets up to 2 s, then one overflow bucket. */
#define HBUCKET_US 10
#define HBUCKETS   200001

typedef struct conn {
    int fd;
    char req[1024];
    size_t req_len, req_off;
    char buf[65536];
    size_t len;
    uint64_t sent_ns;
    bool want_out;
} conn;

typedef struct worker {
    pthread_t th;
    int id, nconns, ep;
    conn *conns;
    uint64_t seq; /* per-worker request counter (insert: row number; get: rng state) */
    /* results inside the window */
    uint64_t ok, err, overloaded, reconnects;
    uint32_t *hist;
    /* insert: saved ids */
    char (*ids)[64];
    size_t nids, cap_ids;
} worker;

static struct {
    const char *host;
    int port, nconns, nthreads;
    double duration, warmup;
    enum mode mode;
    const char *entity;
    const char *ids_file, *save_ids;
    char (*ids)[64]; /* get mode */
    size_t nids;
    uint64_t t_start, t_end; /* measured window, CLOCK_MONOTONIC ns */
    atomic_bool stop;
} g = {.host = "127.0.0.1",
       .nconns = 128,
       .nthreads = 1,
       .duration = 5,
       .warmup = 1,
       .entity = "Item"};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void build_request(worker *w, conn *c)
{
    int n = 0;
    switch (g.mode) {
    case M_HEALTH:
        n = snprintf(c->req, sizeof c->req, "GET /health HTTP/1.1\r\nHost: %s\r\n\r\n", g.host);
        break;
    case M_INSERT: {
        uint64_t k = ((uint64_t)w->id << 40) | w->seq++;
        char body[160];
        int bl =
            snprintf(body, sizeof body, "{\"label\":\"bench row %llu\",\"n\":%llu,\"done\":%s}",
                     (unsigned long long)k, (unsigned long long)(k & 0xffffffffffull),
                     (k & 1) ? "true" : "false");
        n = snprintf(
            c->req, sizeof c->req,
            "POST /api/entities/%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n%s",
            g.entity, g.host, bl, body);
        break;
    }
    case M_GET: {
        const char *id = g.ids[xorshift(&w->seq) % g.nids];
        n = snprintf(c->req, sizeof c->req, "GET /api/entities/%s/%s HTTP/1.1\r\nHost: %s\r\n\r\n",
                     g.entity, id, g.host);
        break;
    }
    }
    c->req_len = (size_t)n;
    c->req_off = 0;
}

static void set_events(worker *w, conn *c, bool out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev) != 0) die("epoll_ctl");
    c->want_out = out;
}

static void conn_open(worker *w, conn *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g.port)};
    if (inet_pton(AF_INET, g.host, &sa.sin_addr) != 1) {
        fprintf(stderr, "bench_data_load: --host must be an IPv4 address\n");
        exit(1);
    }
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS)
        die("connect");
    c->len = 0;
    build_request(w, c);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) die("epoll_ctl add");
    c->want_out = true;
}

static void conn_reopen(worker *w, conn *c)
{
    epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    w->reconnects++;
    conn_open(w, c);
}

/* Writes what is left of the request; false when the connection broke. */
static bool flush_request(worker *w, conn *c)
{
    while (c->req_off < c->req_len) {
        ssize_t n = send(c->fd, c->req + c->req_off, c->req_len - c->req_off, MSG_NOSIGNAL);
        if (n > 0) {
            if (c->req_off == 0) c->sent_ns = now_ns();
            c->req_off += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_out) set_events(w, c, true);
            return true;
        }
        return false;
    }
    if (c->want_out) set_events(w, c, false);
    return true;
}

/* Length of a complete response at the start of buf, 0 if incomplete, -1 if malformed. */
static long response_len(const char *buf, size_t len, int *status, const char **body, size_t *blen)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end) return len > 16384 ? -1 : 0;
    if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0) return -1;
    *status = atoi(buf + 9);
    size_t hdr = (size_t)(end - buf) + 4;
    long cl = -1;
    for (const char *p = buf; p < end;) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol) eol = end;
        if ((size_t)(eol - p) > 15 && strncasecmp(p, "content-length:", 15) == 0)
            cl = strtol(p + 15, NULL, 10);
        p = eol + 2;
    }
    if (cl < 0) cl = 0; /* every answer of the server carries Content-Length */
    if (len < hdr + (size_t)cl) return 0;
    *body = buf + hdr;
    *blen = (size_t)cl;
    return (long)(hdr + (size_t)cl);
}

static void save_id(worker *w, const char *body, size_t blen)
{
    if (!g.save_ids || w->nids >= 200000) return;
    const char *p = memmem(body, blen, "\"id\":\"", 6);
    if (!p) return;
    p += 6;
    const char *q = memchr(p, '"', blen - (size_t)(p - body));
    if (!q || q - p >= 64) return;
    if (w->nids == w->cap_ids) {
        w->cap_ids = w->cap_ids ? w->cap_ids * 2 : 4096;
        w->ids = realloc(w->ids, w->cap_ids * sizeof *w->ids);
        if (!w->ids) die("realloc");
    }
    memcpy(w->ids[w->nids], p, (size_t)(q - p));
    w->ids[w->nids++][q - p] = '\0';
}

static void on_readable(worker *w, conn *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
        if (n > 0) {
            c->len += (size_t)n;
            if (c->len == sizeof c->buf) break;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (!atomic_load(&g.stop)) conn_reopen(w, c); /* closed by the server: start over */
        return;
    }
    int status = 0;
    const char *body = NULL;
    size_t blen = 0;
    long rl = response_len(c->buf, c->len, &status, &body, &blen);
    if (rl == 0) return;
    if (rl < 0) {
        fprintf(stderr, "bench_data_load: malformed response: %.80s\n", c->buf);
        exit(1);
    }
    uint64_t t = now_ns();
    if (t >= g.t_start && t < g.t_end) {
        if (status >= 200 && status < 300) {
            w->ok++;
            uint64_t us = (t - c->sent_ns) / 1000 / HBUCKET_US;
            w->hist[us < HBUCKETS - 1 ? us : HBUCKETS - 1]++;
        } else if (status == 503) {
            w->overloaded++;
        } else {
            if (w->err++ == 0)
                fprintf(stderr, "bench_data_load: first error: %.*s\n", (int)(rl > 300 ? 300 : rl),
                        c->buf);
        }
    }
    if (g.mode == M_INSERT && status == 201) save_id(w, body, blen);
    c->len -= (size_t)rl;
    if (c->len) memmove(c->buf, c->buf + rl, c->len);
    if (atomic_load(&g.stop)) return;
    build_request(w, c);
    if (!flush_request(w, c)) conn_reopen(w, c);
}

static void *run(void *arg)
{
    worker *w = arg;
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    if (w->ep < 0) die("epoll_create1");
    w->hist = calloc(HBUCKETS, sizeof *w->hist);
    w->conns = calloc((size_t)w->nconns, sizeof *w->conns);
    if (!w->hist || !w->conns) die("calloc");
    for (int i = 0; i < w->nconns; i++)
        conn_open(w, &w->conns[i]);
    struct epoll_event evs[256];
    while (!atomic_load(&g.stop)) {
        int n = epoll_wait(w->ep, evs, 256, 50);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
                int e = 0;
                socklen_t el = sizeof e;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &el);
                if (e == ECONNREFUSED) {
                    fprintf(stderr, "bench_data_load: connection refused on port %d\n", g.port);
                    exit(1);
                }
            }
            if (evs[i].events & EPOLLOUT && c->req_off < c->req_len) {
                if (!flush_request(w, c)) {
                    conn_reopen(w, c);
                    continue;
                }
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(w, c);
        }
    }
    for (int i = 0; i < w->nconns; i++)
        close(w->conns[i].fd);
    close(w->ep);
    return NULL;
}

static void load_ids(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) die(path);
    size_t cap = 0;
    char line[128];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || strlen(line) >= 64) continue;
        if (g.nids == cap) {
            cap = cap ? cap * 2 : 4096;
            g.ids = realloc(g.ids, cap * sizeof *g.ids);
            if (!g.ids) die("realloc");
        }
        strcpy(g.ids[g.nids++], line);
    }
    fclose(f);
    if (!g.nids) {
        fprintf(stderr, "bench_data_load: no ids in %s\n", path);
        exit(1);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_data_load --port P --mode health|insert|get [--conns N] "
                    "[--threads T] [--duration S] [--warmup S] [--entity E] [--ids FILE] "
                    "[--save-ids FILE] [--host 127.0.0.1]\n");
    exit(64);
}

int main(int argc, char **argv)
{
    const char *mode = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (strcmp(a, "--port") == 0)
            g.port = atoi(v);
        else if (strcmp(a, "--host") == 0)
            g.host = v;
        else if (strcmp(a, "--mode") == 0)
            mode = v;
        else if (strcmp(a, "--conns") == 0)
            g.nconns = atoi(v);
        else if (strcmp(a, "--threads") == 0)
            g.nthreads = atoi(v);
        else if (strcmp(a, "--duration") == 0)
            g.duration = atof(v);
        else if (strcmp(a, "--warmup") == 0)
            g.warmup = atof(v);
        else if (strcmp(a, "--entity") == 0)
            g.entity = v;
        else if (strcmp(a, "--ids") == 0)
            g.ids_file = v;
        else if (strcmp(a, "--save-ids") == 0)
            g.save_ids = v;
        else
            usage();
        i++;
    }
    if (!mode || g.port <= 0 || g.nconns <= 0 || g.nthreads <= 0 || g.duration <= 0) usage();
    if (strcmp(mode, "health") == 0)
        g.mode = M_HEALTH;
    else if (strcmp(mode, "insert") == 0)
        g.mode = M_INSERT;
    else if (strcmp(mode, "get") == 0)
        g.mode = M_GET;
    else
        usage();
    if (g.mode == M_GET) {
        if (!g.ids_file) usage();
        load_ids(g.ids_file);
    }
    if (g.nthreads > g.nconns) g.nthreads = g.nconns;

    uint64_t t0 = now_ns();
    g.t_start = t0 + (uint64_t)(g.warmup * 1e9);
    g.t_end = g.t_start + (uint64_t)(g.duration * 1e9);
    worker *ws = calloc((size_t)g.nthreads, sizeof *ws);
    if (!ws) die("calloc");
    for (int t = 0; t < g.nthreads; t++) {
        ws[t].id = t;
        ws[t].nconns = g.nconns / g.nthreads + (t < g.nconns % g.nthreads);
        ws[t].seq = 0x9e3779b97f4a7c15ull ^ ((uint64_t)t * 0x100000001b3ull) ^ t0;
        if (g.mode == M_INSERT) ws[t].seq = 0;
        if (pthread_create(&ws[t].th, NULL, run, &ws[t]) != 0) die("pthread_create");
    }
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 20000000};
    while (now_ns() < g.t_end)
        nanosleep(&ts, NULL);
    atomic_store(&g.stop, true);
    uint64_t ok = 0, err = 0, over = 0, rec = 0;
    uint32_t *hist = calloc(HBUCKETS, sizeof *hist);
    if (!hist) die("calloc");
    FILE *ids = g.save_ids ? fopen(g.save_ids, "w") : NULL;
    if (g.save_ids && !ids) die(g.save_ids);
    for (int t = 0; t < g.nthreads; t++) {
        pthread_join(ws[t].th, NULL);
        ok += ws[t].ok;
        err += ws[t].err;
        over += ws[t].overloaded;
        rec += ws[t].reconnects;
        for (size_t b = 0; b < HBUCKETS; b++)
            hist[b] += ws[t].hist[b];
        for (size_t k = 0; ids && k < ws[t].nids; k++)
            fprintf(ids, "%s\n", ws[t].ids[k]);
    }
    if (ids) fclose(ids);
    double p50 = 0, p99 = 0;
    uint64_t acc = 0;
    for (size_t b = 0; b < HBUCKETS && ok; b++) {
        uint64_t prev = acc;
        acc += hist[b];
        double ms = (double)((b + 1) * HBUCKET_US) / 1000.0;
        if (prev < (ok + 1) / 2 && acc >= (ok + 1) / 2) p50 = ms;
        if (prev < (uint64_t)(ok * 0.99) && acc >= (uint64_t)(ok * 0.99)) p99 = ms;
    }
    printf("mode=%s conns=%d threads=%d secs=%.2f ok=%llu err=%llu overloaded=%llu reconnects=%llu "
           "rps=%.1f p50_ms=%.2f p99_ms=%.2f\n",
           mode, g.nconns, g.nthreads, g.duration, (unsigned long long)ok, (unsigned long long)err,
           (unsigned long long)over, (unsigned long long)rec, (double)ok / g.duration, p50, p99);
    return err ? 2 : 0;
}
