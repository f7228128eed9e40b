/*
 * shards.c — realtime shards load generator: S arena shards × P players at 20 Hz.
 *
 *   bench_shards --port P --shards S --players P [options]
 *
 * Against a running `pylon dev` (loopback only; every loop bounded in count and time):
 *   1. mints one session per player (POST /api/auth/session {"user_id":"p<i>"}, dev mode), over
 *      8 keep-alive connections: the shard WebSocket only admits a user whose id is the sid
 *      (shards/shard_api.c ws_open), so each player needs its own;
 *   2. creates S shards (POST /api/shards, admin token): --kind (arena; or a plugin with the
 *      arena's input and snapshot), --tick-hz, never idle-stopped, config
 *      from --arena-config (run.sh makes every player see its whole shard, as a Colyseus room
 *      does);
 *   3. opens every player's WebSocket to port+3, /shard/<id>?sid=p<i>, subprotocol
 *      bearer.<token>, at most 256 handshakes in flight, for at most --connect-timeout s (an
 *      overloaded server answers handshakes late: those players are left out, `connected`
 *      says how many made it); waits --settle s;
 *   4. --threads threads, each owning a slice of the players, send every player's input at
 *      --input-hz, evenly staggered over the period (1 ms slots):
 *      {"input":{"dx":…,"dy":…},"client_seq":n} as a masked text frame; the direction changes
 *      every second. They read every snapshot frame [u64 BE tick][JSON] and take from it:
 *        - input→snapshot latency: "you":{…,"ack":n} is the last client_seq the arena applied
 *          (shards/sims/arena.c); each input's latency is the arrival of the first frame whose
 *          ack covers it, minus its send time (same clock, same process);
 *        - frame inter-arrival jitter |gap − 1/tick_hz| per player, and ticks missed (tick
 *          numbers skipped: the server drops frames for a slow subscriber);
 *   5. the main thread samples, at the start and end of the --duration window (after --warmup):
 *      the server's CPU (utime+stime of every thread, /proc/PID/stat), its RSS (/proc/PID/status,
 *      and once before step 1 as the baseline), and /metrics: the histograms
 *      pylon_shard_tick_lateness_seconds / pylon_shard_tick_duration_seconds, whose difference is
 *      the window's ticks (percentiles interpolated inside the buckets, which are coarse: 0.1,
 *      0.25, 0.5, 1, 2, 5 ms…; "le2ms" is the exact share of ticks at most 2 ms late);
 *   6. prints one line of key=value figures (README.md lists them), then resets every socket.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
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

static void sleep_until(uint64_t t)
{
    for (uint64_t n = now_ns(); n < t; n = now_ns()) {
        uint64_t d = t - n;
        struct timespec ts = {(time_t)(d / 1000000000ull), (long)(d % 1000000000ull)};
        nanosleep(&ts, NULL);
    }
}

/* ---- histogram: 10 µs buckets up to 1 s, then 1 ms buckets up to 60 s -------------------- */

#define H_FINE   100000
#define H_COARSE 59000
typedef struct hist {
    uint64_t b[H_FINE + H_COARSE + 1];
    uint64_t n, max_ns;
} hist;

static void hist_add(hist *h, uint64_t ns)
{
    uint64_t us = ns / 1000, i;
    if (us < 1000000)
        i = us / 10;
    else if (us < 60000000)
        i = H_FINE + (us - 1000000) / 1000;
    else
        i = H_FINE + H_COARSE;
    h->b[i]++;
    h->n++;
    if (ns > h->max_ns) h->max_ns = ns;
}

static void hist_merge(hist *into, const hist *h)
{
    for (size_t i = 0; i <= H_FINE + H_COARSE; i++)
        into->b[i] += h->b[i];
    into->n += h->n;
    if (h->max_ns > into->max_ns) into->max_ns = h->max_ns;
}

static double hist_pct_ms(const hist *h, double p)
{
    if (!h->n) return -1; /* nothing measured: run.sh's medians skip negative values */
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

/* ---- /proc -------------------------------------------------------------------------------- */

/* utime + stime of a process (all its threads), in seconds; -1 when unreadable. */
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
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* VmRSS in KiB; -1 when unreadable. */
static long proc_rss_kb(int pid)
{
    if (pid <= 0) return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

/* ---- blocking HTTP (setup and sampling only) ---------------------------------------------- */

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
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

static bool write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else {
            return false;
        }
    }
    return true;
}

/* One request on a keep-alive connection (*fd, opened on demand): the status, the body into
 * out (NUL-terminated, cut at cap). -1 on a broken connection (closed, *fd = -1). */
static int http_do(int *fd, int port, const char *req, size_t reqlen, char *out, size_t cap)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (*fd < 0) *fd = connect_blocking(port);
        if (*fd < 0) return -1;
        if (!write_all(*fd, req, reqlen)) {
            close(*fd);
            *fd = -1;
            continue;
        }
        static _Thread_local char buf[1 << 17];
        size_t len = 0;
        for (int i = 0; i < 10000 && len < sizeof buf - 1; i++) {
            ssize_t r = read(*fd, buf + len, sizeof buf - 1 - len);
            if (r <= 0) break;
            len += (size_t)r;
            buf[len] = '\0';
            char *body = strstr(buf, "\r\n\r\n");
            if (!body) continue;
            const char *cl = strcasestr(buf, "\ncontent-length:");
            size_t want = cl && cl < body ? strtoul(cl + 16, NULL, 10) : 0;
            if ((size_t)(buf + len - (body + 4)) < want) continue;
            int status = -1;
            sscanf(buf, "HTTP/1.%*d %d", &status);
            snprintf(out, cap, "%.*s", (int)want, body + 4);
            if (strcasestr(buf, "\nconnection: close")) {
                close(*fd);
                *fd = -1;
            }
            return status;
        }
        close(*fd);
        *fd = -1;
        if (len > 0) return -1; /* an answer was cut: do not resend */
    }
    return -1;
}

static int http_once(int port, const char *req, char *out, size_t cap)
{
    int fd = -1;
    int st = http_do(&fd, port, req, strlen(req), out, cap);
    if (fd >= 0) close(fd);
    return st;
}

/* ---- options and shared state ------------------------------------------------------------- */

typedef struct opts {
    int port, shard_port, shards, players, threads, tick_hz, input_hz, server_pid;
    double duration, warmup, settle, connect_timeout;
    const char *admin, *label, *arena_config, *prefix, *kind;
} opts;

enum { S_IDLE, S_CONNECTING, S_HANDSHAKE, S_OPEN, S_CLOSED, S_FAILED };

typedef struct player {
    int fd;
    uint8_t state;
    uint16_t close_code;
    int shard;
    uint32_t plen, pcap;
    uint8_t *part; /* a partial frame (or the handshake answer so far) */
    char token[96];
    uint64_t seq, ack; /* last client_seq sent; last ack seen */
    uint64_t sent_ns[64];
    uint64_t last_frame_ns, last_tick;
    int8_t dx, dy;
    uint32_t rng;
} player;

/* One thread's players and figures. */
typedef struct worker {
    const opts *o;
    player *pl;
    int n, id;
    int ep;
    uint64_t start_ns, measure_from, measure_to, end_ns;
    /* figures (window only unless said) */
    int64_t frames, frames_all, missed_ticks, inputs_sent, inputs_failed, acks, bad_frames;
    int64_t bytes;
    int open, connecting, closed, failed;
    uint16_t close_codes[8];
    int n_close_codes;
    char first_error[160];
    hist *lat, *jit;
    uint8_t scratch[1 << 18];
} worker;

static void pl_drop(worker *w, player *p, int state)
{
    if (p->fd >= 0) {
        epoll_ctl(w->ep, EPOLL_CTL_DEL, p->fd, NULL);
        close(p->fd);
    }
    p->fd = -1;
    if (p->state == S_OPEN)
        w->open--;
    else if (p->state == S_CONNECTING || p->state == S_HANDSHAKE)
        w->connecting--;
    p->state = (uint8_t)state;
    if (state == S_CLOSED) w->closed++;
    if (state == S_FAILED) w->failed++;
    free(p->part);
    p->part = NULL;
    p->plen = p->pcap = 0;
}

static bool part_put(player *p, const uint8_t *d, size_t n)
{
    if (p->plen + n > p->pcap) {
        size_t cap = p->pcap ? p->pcap : 512;
        while (cap < p->plen + n)
            cap *= 2;
        if (cap > (16u << 20)) return false;
        uint8_t *np = realloc(p->part, cap);
        if (!np) return false;
        p->part = np;
        p->pcap = (uint32_t)cap;
    }
    memcpy(p->part + p->plen, d, n);
    p->plen += (uint32_t)n;
    return true;
}

/* A snapshot frame: tick, ack → latency, inter-arrival jitter. */
static void on_snapshot(worker *w, player *p, const uint8_t *d, size_t len, uint64_t now)
{
    if (len < 8) {
        w->bad_frames++;
        return;
    }
    uint64_t tick = 0;
    for (int i = 0; i < 8; i++)
        tick = (tick << 8) | d[i];
    bool in = now >= w->measure_from && now < w->measure_to;
    w->frames_all++;
    if (in) {
        w->frames++;
        w->bytes += (int64_t)len;
        if (p->last_tick && tick > p->last_tick + 1)
            w->missed_ticks += (int64_t)(tick - p->last_tick - 1);
        if (p->last_frame_ns) {
            uint64_t gap = now - p->last_frame_ns, period = 1000000000ull / (uint64_t)w->o->tick_hz;
            hist_add(w->jit, gap > period ? gap - period : period - gap);
        }
    }
    p->last_tick = tick;
    p->last_frame_ns = now;
    /* "you" comes first in the arena's snapshot, so the first "ack" is this player's */
    const uint8_t *a = memmem(d + 8, len - 8, "\"ack\":", 6);
    if (!a) return;
    const uint8_t *q = a + 6, *end = d + len;
    uint64_t ack = 0;
    while (q < end && *q >= '0' && *q <= '9')
        ack = ack * 10 + (uint64_t)(*q++ - '0');
    if (ack <= p->ack) return;
    for (uint64_t s = p->ack + 1; s <= ack && s <= p->seq; s++) {
        if (p->seq - s >= 64) continue; /* too old for the ring: not measured */
        uint64_t t = p->sent_ns[s & 63];
        if (t >= w->measure_from && t < w->measure_to && now >= t) {
            hist_add(w->lat, now - t);
            w->acks++;
        }
    }
    p->ack = ack;
}

/* Parses whole frames at d[0..len); returns the bytes used. */
static size_t on_frames(worker *w, player *p, const uint8_t *d, size_t len, uint64_t now)
{
    size_t off = 0;
    while (len - off >= 2) {
        const uint8_t *f = d + off;
        int opcode = f[0] & 0x0f;
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
        if (f[1] & 0x80) hl += 4; /* a server must not mask; tolerated */
        if (pl > (16u << 20)) {
            pl_drop(w, p, S_CLOSED);
            return len;
        }
        if (len - off < hl + pl) break;
        const uint8_t *payload = f + hl;
        switch (opcode) {
        case 2:
            on_snapshot(w, p, payload, (size_t)pl, now);
            break;
        case 8: {
            uint16_t code = pl >= 2 ? (uint16_t)((payload[0] << 8) | payload[1]) : 1005;
            p->close_code = code;
            bool seen = false;
            for (int i = 0; i < w->n_close_codes; i++)
                seen |= w->close_codes[i] == code;
            if (!seen && w->n_close_codes < 8) w->close_codes[w->n_close_codes++] = code;
            if (!w->first_error[0])
                snprintf(w->first_error, sizeof w->first_error, "closed %u: %.*s", code,
                         pl > 2 ? (int)(pl - 2 > 100 ? 100 : pl - 2) : 0, payload + 2);
            pl_drop(w, p, S_CLOSED);
            return len;
        }
        case 9: { /* ping: a masked pong with the same payload (zero mask key) */
            uint8_t pong[2 + 4 + 125];
            size_t n = pl > 125 ? 125 : (size_t)pl;
            pong[0] = 0x8a;
            pong[1] = (uint8_t)(0x80 | n);
            memset(pong + 2, 0, 4);
            memcpy(pong + 6, payload, n);
            if (write(p->fd, pong, 6 + n) < 0) { /* a lost pong only risks a ping timeout */
            }
            break;
        }
        case 1: /* the shard sends binary only */
            w->bad_frames++;
            break;
        default:
            break;
        }
        off += hl + (size_t)pl;
    }
    return off;
}

static void pl_readable(worker *w, player *p, uint64_t now)
{
    for (int round = 0; round < 4 && p->fd >= 0; round++) {
        size_t pre = p->plen;
        if (pre > sizeof w->scratch / 2) { /* a huge partial frame stays in part */
            uint8_t tmp[65536];
            ssize_t r = read(p->fd, tmp, sizeof tmp);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                pl_drop(w, p, S_CLOSED);
                return;
            }
            if (r < 0) return;
            if (!part_put(p, tmp, (size_t)r)) {
                pl_drop(w, p, S_CLOSED);
                return;
            }
            size_t used = on_frames(w, p, p->part, p->plen, now);
            if (p->fd < 0) return;
            memmove(p->part, p->part + used, p->plen - used);
            p->plen -= (uint32_t)used;
            continue;
        }
        if (pre) memcpy(w->scratch, p->part, pre);
        ssize_t r = read(p->fd, w->scratch + pre, sizeof w->scratch - pre);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
            pl_drop(w, p, p->state == S_OPEN ? S_CLOSED : S_FAILED);
            return;
        }
        if (r < 0) return;
        size_t len = pre + (size_t)r, used = 0;
        p->plen = 0;
        if (p->state == S_HANDSHAKE) {
            uint8_t *end = memmem(w->scratch, len, "\r\n\r\n", 4);
            if (!end) {
                if (len > 4096 || !part_put(p, w->scratch, len)) pl_drop(w, p, S_FAILED);
                return;
            }
            if (len < 12 || memcmp(w->scratch, "HTTP/1.1 101", 12) != 0) {
                if (!w->first_error[0])
                    snprintf(w->first_error, sizeof w->first_error, "handshake: %.80s",
                             (const char *)w->scratch);
                pl_drop(w, p, S_FAILED);
                return;
            }
            used = (size_t)(end + 4 - w->scratch);
            p->state = S_OPEN;
            w->connecting--;
            w->open++;
        }
        used += on_frames(w, p, w->scratch + used, len - used, now);
        if (p->fd < 0) return;
        if (used < len && !part_put(p, w->scratch + used, len - used)) {
            pl_drop(w, p, S_CLOSED);
            return;
        }
        if ((size_t)r < sizeof w->scratch - pre) return; /* drained */
    }
}

static bool pl_start(worker *w, player *p, uint32_t idx)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)w->o->shard_port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    if (rc != 0 && errno != EINPROGRESS) {
        close(fd);
        return false;
    }
    p->fd = fd;
    p->state = S_CONNECTING;
    w->connecting++;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = idx};
    epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev);
    return true;
}

static void pl_event(worker *w, uint32_t idx, uint32_t events, uint64_t now)
{
    player *p = &w->pl[idx];
    if (p->fd < 0) return;
    if (p->state == S_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        char hs[512];
        int hl = snprintf(hs, sizeof hs,
                          "GET /shard/%s%d?sid=p%d HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: bearer.%s\r\n\r\n",
                          w->o->prefix, p->shard, (int)(p - w->pl), p->token);
        if (err || write(p->fd, hs, (size_t)hl) != hl) {
            pl_drop(w, p, S_FAILED);
            return;
        }
        int one = 1;
        setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        p->state = S_HANDSHAKE;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = idx};
        epoll_ctl(w->ep, EPOLL_CTL_MOD, p->fd, &ev);
        return;
    }
    pl_readable(w, p, now);
}

static void pump(worker *w, int timeout_ms)
{
    struct epoll_event evs[1024];
    int ne = epoll_wait(w->ep, evs, 1024, timeout_ms);
    uint64_t now = now_ns();
    for (int e = 0; e < ne; e++) {
        pl_event(w, evs[e].data.u32, evs[e].events, now);
        if ((e & 63) == 63) now = now_ns();
    }
}

/* One input as a masked text frame (zero mask key: the payload goes as is). */
static void send_input(worker *w, player *p, uint64_t now)
{
    if (p->seq % (uint64_t)w->o->input_hz == 0) { /* a new direction every second */
        p->rng = p->rng * 1103515245u + 12345u;
        p->dx = (int8_t)((p->rng >> 16) % 3) - 1;
        p->dy = (int8_t)((p->rng >> 20) % 3) - 1;
    }
    uint64_t seq = p->seq + 1;
    uint8_t f[6 + 125];
    int n =
        snprintf((char *)f + 6, 125, "{\"input\":{\"dx\":%d,\"dy\":%d},\"client_seq\":%" PRIu64 "}",
                 p->dx, p->dy, seq);
    f[0] = 0x81;
    f[1] = (uint8_t)(0x80 | n);
    memset(f + 2, 0, 4);
    ssize_t wr = write(p->fd, f, 6 + (size_t)n);
    if (wr != 6 + n) { /* a full socket buffer: the server is not reading; counted, not retried */
        w->inputs_failed++;
        if (wr > 0) pl_drop(w, p, S_CLOSED); /* half a frame: the stream is broken */
        return;
    }
    p->seq = seq;
    p->sent_ns[seq & 63] = now;
    if (now >= w->measure_from && now < w->measure_to) w->inputs_sent++;
}

/* The input phase: 1 ms slots, player j of this thread sends in slot j mod (slots per period). */
static void *worker_main(void *arg)
{
    worker *w = arg;
    uint64_t slot_ns = 1000000, period_slots = 1000 / (uint64_t)w->o->input_hz;
    if (period_slots < 1) period_slots = 1;
    uint64_t k = 0, max_k = (w->end_ns - w->start_ns) / slot_ns + 1;
    while (k < max_k) {
        uint64_t now = now_ns();
        if (now >= w->end_ns) break;
        while (k < max_k && w->start_ns + k * slot_ns <= now) {
            uint64_t slot = k % period_slots;
            for (int j = (int)slot; j < w->n; j += (int)period_slots)
                if (w->pl[j].state == S_OPEN) send_input(w, &w->pl[j], now);
            k++;
            if ((k & 7) == 0) now = now_ns();
        }
        uint64_t due = w->start_ns + k * slot_ns;
        now = now_ns();
        int timeout = due > now ? (int)((due - now + 999999) / 1000000) : 0;
        pump(w, timeout);
    }
    return NULL;
}

/* ---- /metrics: the shard tick histograms -------------------------------------------------- */

#define MB 16
typedef struct prom_hist {
    int n;
    double le[MB];
    double cum[MB];
    double count, sum;
} prom_hist;

static void prom_parse(const char *text, const char *name, prom_hist *h)
{
    memset(h, 0, sizeof *h);
    char key[128];
    int kl = snprintf(key, sizeof key, "%s_bucket{le=\"", name);
    for (const char *p = strstr(text, key); p && h->n < MB; p = strstr(p + 1, key)) {
        const char *q = p + kl;
        h->le[h->n] = strncmp(q, "+Inf", 4) == 0 ? INFINITY : strtod(q, NULL);
        const char *sp = strchr(q, ' ');
        h->cum[h->n++] = sp ? strtod(sp + 1, NULL) : 0;
    }
    snprintf(key, sizeof key, "\n%s_sum ", name);
    const char *s = strstr(text, key);
    if (s) h->sum = strtod(s + strlen(key), NULL);
    snprintf(key, sizeof key, "\n%s_count ", name);
    s = strstr(text, key);
    if (s) h->count = strtod(s + strlen(key), NULL);
}

/* Percentile (ms) of b − a, linear inside a bucket; the last finite bound when in +Inf. */
static double prom_pct_ms(const prom_hist *a, const prom_hist *b, double p)
{
    if (a->n != b->n || b->n == 0) return -1;
    double total = b->cum[b->n - 1] - a->cum[a->n - 1];
    if (total <= 0) return -1;
    double want = total * p / 100.0, prev = 0, lo = 0;
    for (int i = 0; i < b->n; i++) {
        double c = b->cum[i] - a->cum[i];
        if (c >= want) {
            if (isinf(b->le[i])) return lo * 1000;
            double in = c - prev;
            double f = in > 0 ? (want - prev) / in : 1;
            return (lo + f * (b->le[i] - lo)) * 1000;
        }
        prev = c;
        lo = b->le[i];
    }
    return lo * 1000;
}

/* Share of b − a at most `bound` seconds (a bucket bound), or -1. */
static double prom_share_le(const prom_hist *a, const prom_hist *b, double bound)
{
    if (a->n != b->n || b->n == 0) return -1;
    double total = b->cum[b->n - 1] - a->cum[a->n - 1];
    if (total <= 0) return -1;
    for (int i = 0; i < b->n; i++)
        if (fabs(b->le[i] - bound) < 1e-12) return (b->cum[i] - a->cum[i]) / total;
    return -1;
}

typedef struct sample {
    double cpu;
    long rss;
    uint64_t at, metrics_at; /* when CPU was read; when /metrics answered */
    prom_hist late, dur;
    bool ok;
    const opts *o;
} sample;

/* CPU and RSS now; /metrics may take long when the server's loop is saturated (its answer waits
 * behind the load), so it is fetched apart and its own time kept: the tick figures cover the
 * span between the two answers. */
static void sample_proc(const opts *o, sample *s)
{
    s->o = o;
    s->at = now_ns();
    s->cpu = proc_cpu_s(o->server_pid);
    s->rss = proc_rss_kb(o->server_pid);
}

static void *sample_metrics(void *arg)
{
    sample *s = arg;
    static _Thread_local char body[1 << 17];
    const char *req = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n"
                      "Connection: close\r\n\r\n";
    body[0] = '\0';
    int st = http_once(s->o->port, req, body, sizeof body);
    s->metrics_at = now_ns();
    s->ok = st == 200;
    prom_parse(body, "pylon_shard_tick_lateness_seconds", &s->late);
    prom_parse(body, "pylon_shard_tick_duration_seconds", &s->dur);
    return NULL;
}

/* ---- setup: sessions and shards over keep-alive connections ------------------------------- */

typedef struct setup_job {
    const opts *o;
    player *pl;
    int from, step, n_players;
    int failed;
    char first_error[200];
} setup_job;

static void *mint_main(void *arg)
{
    setup_job *j = arg;
    int fd = -1;
    char body[1024], req[512];
    for (int i = j->from; i < j->n_players; i += j->step) {
        char b[64];
        int bl = snprintf(b, sizeof b, "{\"user_id\":\"p%d\"}", i);
        int rl = snprintf(req, sizeof req,
                          "POST /api/auth/session HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                          bl, b);
        int st = http_do(&fd, j->o->port, req, (size_t)rl, body, sizeof body);
        const char *tk = strstr(body, "\"token\":\"");
        if (st < 200 || st >= 300 || !tk) {
            if (!j->first_error[0])
                snprintf(j->first_error, sizeof j->first_error, "POST /api/auth/session: %d %.120s",
                         st, body);
            j->failed++;
            continue;
        }
        tk += 9;
        snprintf(j->pl[i].token, sizeof j->pl[i].token, "%.*s", (int)strcspn(tk, "\""), tk);
    }
    if (fd >= 0) close(fd);
    return NULL;
}

static int create_shards(const opts *o, char *err, size_t errlen)
{
    int fd = -1, failed = 0;
    char body[2048], req[2048];
    for (int i = 0; i < o->shards; i++) {
        char b[1024];
        int bl = snprintf(b, sizeof b,
                          "{\"id\":\"%s%d\",\"kind\":\"%s\",\"tick_rate_hz\":%d,"
                          "\"idle_ticks_before_shutdown\":0,\"max_subscribers\":0,\"config\":%s}",
                          o->prefix, i, o->kind, o->tick_hz, o->arena_config);
        int rl = snprintf(req, sizeof req,
                          "POST /api/shards HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                          "Content-Length: %d\r\n\r\n%s",
                          o->admin, bl, b);
        int st = http_do(&fd, o->port, req, (size_t)rl, body, sizeof body);
        if (st != 201) {
            if (!failed) snprintf(err, errlen, "POST /api/shards: %d %.150s", st, body);
            failed++;
        }
    }
    if (fd >= 0) close(fd);
    return failed;
}

/* Σ "key":N over GET /api/shards (admin): frames_skipped, inputs_dropped. */
static void shard_totals(const opts *o, long long *skipped, long long *dropped, int *running)
{
    static char body[1 << 20];
    char req[512];
    snprintf(req, sizeof req,
             "GET /api/shards HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
             "Connection: close\r\n\r\n",
             o->admin);
    *skipped = *dropped = -1;
    *running = -1;
    int fd = -1;
    /* the list can exceed http_do's buffer at 500 shards: read it whole here */
    fd = connect_blocking(o->port);
    if (fd < 0 || !write_all(fd, req, strlen(req))) {
        if (fd >= 0) close(fd);
        return;
    }
    size_t len = 0;
    for (int i = 0; i < 100000 && len < sizeof body - 1; i++) {
        ssize_t r = read(fd, body + len, sizeof body - 1 - len);
        if (r <= 0) break;
        len += (size_t)r;
    }
    close(fd);
    body[len] = '\0';
    *skipped = *dropped = 0;
    *running = 0;
    for (const char *p = strstr(body, "\"frames_skipped\":"); p;
         p = strstr(p + 1, "\"frames_skipped\":"))
        *skipped += strtoll(p + 17, NULL, 10);
    for (const char *p = strstr(body, "\"inputs_dropped\":"); p;
         p = strstr(p + 1, "\"inputs_dropped\":"))
        *dropped += strtoll(p + 17, NULL, 10);
    for (const char *p = strstr(body, "\"running\":true"); p; p = strstr(p + 1, "\"running\":true"))
        (*running)++;
}

/* ---- main --------------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_shards --port P --admin TOKEN --server-pid PID [--shard-port P+3]\n"
            "         [--shards 50] [--players 20 (per shard)] [--threads 2] [--tick-hz 20]\n"
            "         [--input-hz 20] [--duration 10] [--warmup 2] [--settle 1]\n"
            "         [--arena-config JSON] [--prefix b] [--label NAME] [--connect-timeout 30]\n"
            "         [--kind arena (a simulation with the arena's input and snapshot)]\n");
}

int main(int argc, char **argv)
{
    opts o = {.shards = 50,
              .players = 20,
              .threads = 2,
              .tick_hz = 20,
              .input_hz = 20,
              .duration = 10,
              .warmup = 2,
              .settle = 1,
              .connect_timeout = 30,
              .label = "run",
              .arena_config = "{}",
              .prefix = "b",
              .kind = "arena"};
    static const struct option lo[] = {{"port", 1, 0, 'p'},       {"shard-port", 1, 0, 'P'},
                                       {"shards", 1, 0, 's'},     {"players", 1, 0, 'n'},
                                       {"threads", 1, 0, 't'},    {"tick-hz", 1, 0, 'T'},
                                       {"input-hz", 1, 0, 'i'},   {"duration", 1, 0, 'd'},
                                       {"warmup", 1, 0, 'w'},     {"settle", 1, 0, 'S'},
                                       {"admin", 1, 0, 'a'},      {"label", 1, 0, 'l'},
                                       {"server-pid", 1, 0, 'x'}, {"arena-config", 1, 0, 'c'},
                                       {"prefix", 1, 0, 'f'},     {"connect-timeout", 1, 0, 'C'},
                                       {"kind", 1, 0, 'k'},       {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'p':
            o.port = atoi(optarg);
            break;
        case 'P':
            o.shard_port = atoi(optarg);
            break;
        case 's':
            o.shards = atoi(optarg);
            break;
        case 'n':
            o.players = atoi(optarg);
            break;
        case 't':
            o.threads = atoi(optarg);
            break;
        case 'T':
            o.tick_hz = atoi(optarg);
            break;
        case 'i':
            o.input_hz = atoi(optarg);
            break;
        case 'd':
            o.duration = atof(optarg);
            break;
        case 'w':
            o.warmup = atof(optarg);
            break;
        case 'S':
            o.settle = atof(optarg);
            break;
        case 'a':
            o.admin = optarg;
            break;
        case 'l':
            o.label = optarg;
            break;
        case 'x':
            o.server_pid = atoi(optarg);
            break;
        case 'c':
            o.arena_config = optarg;
            break;
        case 'C':
            o.connect_timeout = atof(optarg);
            break;
        case 'k':
            o.kind = optarg;
            break;
        case 'f':
            o.prefix = optarg;
            break;
        default:
            usage();
            return 64;
        }
    }
    if (!o.shard_port) o.shard_port = o.port + 3;
    int total = o.shards * o.players;
    /* Bounds: everything below is sized and timed from these. */
    if (o.port <= 0 || !o.admin || o.shards < 1 || o.shards > 5000 || o.players < 1 ||
        o.players > 1000 || total > 60000 || o.threads < 1 || o.threads > 16 || o.tick_hz < 1 ||
        o.tick_hz > 1000 || o.input_hz < 1 || o.input_hz > 1000 || o.duration <= 0 ||
        o.duration > 600 || o.warmup < 0 || o.warmup > 60 || o.settle < 0 || o.settle > 30 ||
        o.connect_timeout <= 0 || o.connect_timeout > 120 || strlen(o.prefix) > 20 ||
        strlen(o.kind) > 60) {
        usage();
        return 64;
    }
    signal(SIGPIPE, SIG_IGN);
    player *pl = calloc((size_t)total, sizeof *pl);
    if (!pl) return 1;
    for (int i = 0; i < total; i++) {
        pl[i].fd = -1;
        pl[i].shard = i / o.players;
        pl[i].rng = 2166136261u ^ (uint32_t)i * 16777619u;
    }
    long rss_base = proc_rss_kb(o.server_pid);

    /* 1. Sessions, 8 connections. */
    uint64_t t0 = now_ns();
    enum { NMINT = 8 };
    setup_job jobs[NMINT];
    pthread_t jt[NMINT];
    for (int i = 0; i < NMINT; i++) {
        jobs[i] = (setup_job){.o = &o, .pl = pl, .from = i, .step = NMINT, .n_players = total};
        pthread_create(&jt[i], NULL, mint_main, &jobs[i]);
    }
    int mint_failed = 0;
    for (int i = 0; i < NMINT; i++) {
        pthread_join(jt[i], NULL);
        mint_failed += jobs[i].failed;
        if (jobs[i].failed && mint_failed == jobs[i].failed)
            fprintf(stderr, "bench_shards: %s\n", jobs[i].first_error);
    }
    double mint_s = (double)(now_ns() - t0) / 1e9;
    if (mint_failed == total) return 1;

    /* 2. Shards. */
    char err[256] = "";
    int shards_failed = create_shards(&o, err, sizeof err);
    if (shards_failed)
        fprintf(stderr, "bench_shards: %d shards not created: %s\n", shards_failed, err);
    if (shards_failed == o.shards) return 1;

    /* 3. Players connect (one thread, one epoll), then split over the threads. */
    worker *ws = calloc((size_t)o.threads, sizeof *ws);
    if (!ws) return 1;
    worker *w0 = calloc(1, sizeof *w0);
    hist *scratch_h = calloc(2, sizeof(hist));
    if (!w0 || !scratch_h) return 1;
    w0->o = &o;
    w0->pl = pl;
    w0->n = total;
    w0->ep = epoll_create1(EPOLL_CLOEXEC);
    w0->lat = &scratch_h[0];
    w0->jit = &scratch_h[1];
    w0->measure_from = w0->measure_to = UINT64_MAX;
    t0 = now_ns();
    uint64_t connect_end = t0 + (uint64_t)(o.connect_timeout * 1e9);
    int next = 0;
    while ((next < total || w0->connecting > 0) && now_ns() < connect_end) {
        while (next < total && w0->connecting < 256) {
            if (!pl[next].token[0] || !pl_start(w0, &pl[next], (uint32_t)next)) {
                pl[next].state = S_FAILED;
                w0->failed++;
            }
            next++;
        }
        pump(w0, 20);
    }
    for (int i = 0; i < total; i++)
        if (pl[i].state == S_CONNECTING || pl[i].state == S_HANDSHAKE)
            pl_drop(w0, &pl[i], S_FAILED);
    double connect_s = (double)(now_ns() - t0) / 1e9;
    uint64_t settle_end = now_ns() + (uint64_t)(o.settle * 1e9);
    while (now_ns() < settle_end)
        pump(w0, 20);
    int connected = w0->open;
    if (connected == 0) {
        fprintf(stderr, "bench_shards: no player connected (%s)\n",
                w0->first_error[0] ? w0->first_error : "?");
        return 1;
    }
    close(w0->ep);

    /* 4. The input phase. */
    uint64_t start = now_ns() + 10000000;
    uint64_t mfrom = start + (uint64_t)(o.warmup * 1e9);
    uint64_t mto = mfrom + (uint64_t)(o.duration * 1e9);
    uint64_t end = mto + 200000000; /* inputs of the window's end get their snapshot */
    int per = (total + o.threads - 1) / o.threads;
    hist *hs = calloc((size_t)o.threads * 2, sizeof(hist));
    if (!hs) return 1;
    pthread_t *th = calloc((size_t)o.threads, sizeof *th);
    for (int t = 0; t < o.threads; t++) {
        worker *w = &ws[t];
        w->o = &o;
        w->id = t;
        w->pl = pl + t * per;
        w->n = t * per >= total ? 0 : (total - t * per < per ? total - t * per : per);
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        w->lat = &hs[2 * t];
        w->jit = &hs[2 * t + 1];
        w->start_ns = start;
        w->measure_from = mfrom;
        w->measure_to = mto;
        w->end_ns = end;
        for (int j = 0; j < w->n; j++) {
            player *p = &w->pl[j];
            if (p->fd < 0) continue;
            w->open++;
            struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)j};
            epoll_ctl(w->ep, EPOLL_CTL_ADD, p->fd, &ev);
        }
        pthread_create(&th[t], NULL, worker_main, w);
    }
    struct rusage ru0, ru1;
    sleep_until(mfrom);
    getrusage(RUSAGE_SELF, &ru0);
    sample s0 = {0}, s1 = {0};
    sample_proc(&o, &s0);
    pthread_t mt;
    bool mt_ok = pthread_create(&mt, NULL, sample_metrics, &s0) == 0;
    sleep_until(mto);
    sample_proc(&o, &s1);
    getrusage(RUSAGE_SELF, &ru1);
    if (mt_ok) pthread_join(mt, NULL);
    sample_metrics(&s1);
    for (int t = 0; t < o.threads; t++)
        pthread_join(th[t], NULL);
    long long skipped, dropped;
    int running;
    shard_totals(&o, &skipped, &dropped, &running);

    /* 5. Figures. */
    hist *lat = calloc(1, sizeof *lat), *jit = calloc(1, sizeof *jit);
    if (!lat || !jit) return 1;
    int64_t frames = 0, missed = 0, inputs = 0, in_failed = 0, acks = 0, bad = 0, bytes = 0;
    int open = 0, closed = 0;
    char codes[64] = "", first_error[160] = "";
    for (int t = 0; t < o.threads; t++) {
        worker *w = &ws[t];
        hist_merge(lat, w->lat);
        hist_merge(jit, w->jit);
        frames += w->frames;
        missed += w->missed_ticks;
        inputs += w->inputs_sent;
        in_failed += w->inputs_failed;
        acks += w->acks;
        bad += w->bad_frames;
        bytes += w->bytes;
        open += w->open;
        closed += w->closed;
        for (int i = 0; i < w->n_close_codes; i++)
            snprintf(codes + strlen(codes), sizeof codes - strlen(codes), "%s%u",
                     codes[0] ? "," : "", w->close_codes[i]);
        if (!first_error[0] && w->first_error[0])
            snprintf(first_error, sizeof first_error, "%s", w->first_error);
    }
    double win = o.duration; /* the generator's own window (client-side counts) */
    double swin = (double)(s1.at - s0.at) / 1e9;                 /* server CPU */
    double mwin = (double)(s1.metrics_at - s0.metrics_at) / 1e9; /* /metrics */
    double scpu = s0.cpu >= 0 && s1.cpu >= 0 ? s1.cpu - s0.cpu : -1;
    double ccpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                  (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                  (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                  (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    double ticks = s1.late.count - s0.late.count;
    long rss = s1.rss;
    printf("label=%s server=pylon shards=%d players=%d connected=%d open_end=%d mint_s=%.2f "
           "connect_s=%.2f window_s=%.2f metrics_window_s=%.2f ticks_per_s=%.1f ticks_expected=%d"
           " late_p50_ms=%.3f late_p99_ms=%.3f late_le2ms=%.4f late_mean_ms=%.3f"
           " tickdur_p50_ms=%.3f tickdur_p99_ms=%.3f"
           " inputs_per_s=%.0f inputs_failed=%" PRId64
           " fps=%.0f fps_expected=%d missed_ticks=%" PRId64
           " frame_kb_s=%.0f lat_p50_ms=%.2f lat_p99_ms=%.2f lat_max_ms=%.2f lat_n=%" PRId64
           " jit_p50_ms=%.2f jit_p99_ms=%.2f server_cpu=%.3f cpu_ms_per_player_s=%.4f"
           " rss_mb=%.1f rss_base_mb=%.1f kb_per_player=%.1f client_cpu=%.2f"
           " frames_skipped=%lld inputs_dropped=%lld shards_running=%d closed=%d closed_codes=%s"
           " bad_frames=%" PRId64 " metrics_ok=%d%s%s\n",
           o.label, o.shards, total, connected, open, mint_s, connect_s, swin, mwin,
           mwin > 0 ? ticks / mwin : 0, o.shards * o.tick_hz, prom_pct_ms(&s0.late, &s1.late, 50),
           prom_pct_ms(&s0.late, &s1.late, 99), prom_share_le(&s0.late, &s1.late, 0.002),
           ticks > 0 ? (s1.late.sum - s0.late.sum) / ticks * 1000 : -1,
           prom_pct_ms(&s0.dur, &s1.dur, 50), prom_pct_ms(&s0.dur, &s1.dur, 99),
           win > 0 ? (double)inputs / win : 0, in_failed, win > 0 ? (double)frames / win : 0,
           connected * o.tick_hz, missed, win > 0 ? (double)bytes / win / 1024 : 0,
           hist_pct_ms(lat, 50), hist_pct_ms(lat, 99), (double)lat->max_ns / 1e6, acks,
           hist_pct_ms(jit, 50), hist_pct_ms(jit, 99), swin > 0 && scpu >= 0 ? scpu / swin : -1,
           swin > 0 && scpu >= 0 ? scpu * 1000 / ((double)connected * swin) : -1, rss / 1024.0,
           rss_base / 1024.0, rss > 0 && rss_base > 0 ? (double)(rss - rss_base) / connected : -1,
           swin > 0 ? ccpu / swin : 0, skipped, dropped, running, closed, codes[0] ? codes : "-",
           bad, s0.ok && s1.ok, first_error[0] ? " error=" : "",
           first_error[0] ? "see-stderr" : "");
    if (first_error[0]) fprintf(stderr, "bench_shards: first error: %s\n", first_error);
    if (w0->first_error[0]) fprintf(stderr, "bench_shards: connect: %s\n", w0->first_error);
    fflush(stdout);

    /* Close everything with a reset: no TIME_WAIT pile-up across runs. */
    struct linger lg = {1, 0};
    for (int i = 0; i < total; i++) {
        if (pl[i].fd >= 0) {
            setsockopt(pl[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(pl[i].fd);
        }
        free(pl[i].part);
    }
    return 0;
}
