/*
 * server.c — starting the listeners and loops, the once-a-second sweep, statistics and the
 * graceful shutdown sequence.
 *
 * Listening sockets are created and bound on the calling thread, so "port in use" is reported
 * at start, before any thread runs. With several I/O loops each loop listens on its own
 * duplicate of the same socket. SO_REUSEPORT is deliberately not used: it would let a second
 * server started by mistake on the same port silently take half the connections.
 */
#include "http/server_internal.h"

#include "engine/clock.h"
#include "engine/hash.h"
#include "engine/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *const LISTENER_NAMES[PYLON_LISTEN_COUNT] = {"http", "sync-ws", "sse",
                                                               "shard-ws"};

size_t pylon_server_common_headers(pylon_http_server *srv, const char *origin, char *out,
                                   size_t cap)
{
    return pylon_guard_response_headers(srv->opt.guard, origin, out, cap);
}

ip_slot **pylon_server_ip_bucket(pylon_http_server *srv, const char *ip)
{
    return &srv->ips[pylon_hash_str(ip) % IP_BUCKETS];
}

void pylon_server_ip_release(io_loop *io, ip_slot *slot, int kind)
{
    if (!slot) return;
    pylon_http_server *srv = io->srv;
    pthread_mutex_lock(&srv->per_ip_lock);
    slot->count[kind]--;
    bool empty = true;
    for (int k = 0; k < PYLON_LISTEN_COUNT; k++)
        if (slot->count[k]) empty = false;
    if (empty) { /* last connection from this IP: unlink the slot so the table stays small */
        ip_slot **pp = pylon_server_ip_bucket(srv, slot->ip);
        while (*pp && *pp != slot)
            pp = &(*pp)->next;
        if (*pp) *pp = slot->next;
        free(slot);
    }
    pthread_mutex_unlock(&srv->per_ip_lock);
}

static void on_connection(uv_stream_t *listener, int status)
{
    io_loop *io = listener->data;
    if (status < 0) return;
    int kind = (int)((uv_tcp_t *)listener - io->listeners);
    pylon_conn_accept(io, listener, kind);
}

static void on_sweep(uv_timer_t *t)
{
    pylon_conn_sweep(t->data);
}

/* socket + SO_REUSEADDR + bind, on the calling thread. Returns fd or -errno. */
static int bind_socket(const char *host, int port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    int family;
    if (strchr(host, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) return -EINVAL;
        len = sizeof *a;
        family = AF_INET6;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) return -EINVAL;
        len = sizeof *a;
        family = AF_INET;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

pylon_http_server *pylon_http_server_start(const pylon_http_server_options *opt, char *err,
                                           size_t errlen)
{
    /* libuv writes with write(2): a peer that vanished must be an EPIPE, not a SIGPIPE that
     * kills the process. Process-wide, and harmless to set twice. */
    signal(SIGPIPE, SIG_IGN);
    pylon_http_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    srv->opt = *opt;
    srv->nloops = opt->io_threads ? opt->io_threads : 1;
    srv->start_ns = pylon_clock_now_ns();
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->cond, NULL);
    pthread_mutex_init(&srv->per_ip_lock, NULL);
    srv->rate = pylon_rate_limiter_new(pylon_guard_rate_max(opt->guard),
                                       pylon_guard_rate_window(opt->guard));
    srv->loops = calloc(srv->nloops, sizeof(io_loop));
    if (!srv->loops || !srv->rate) {
        snprintf(err, errlen, "out of memory");
        pylon_rate_limiter_free(srv->rate);
        free(srv->loops);
        free(srv);
        return NULL;
    }
    unsigned started = 0;
    int fds[PYLON_LISTEN_COUNT] = {-1, -1, -1, -1};
    for (int k = 0; k < PYLON_LISTEN_COUNT; k++) {
        int port = opt->port + k;
        fds[k] = bind_socket(opt->host, port);
        if (fds[k] < 0) {
            snprintf(err, errlen,
                     "cannot listen on %s:%d (%s port): %s; stop what uses it or set PYLON_PORT "
                     "(the server needs %d..%d)",
                     opt->host, port, LISTENER_NAMES[k], strerror(-fds[k]), opt->port,
                     opt->port + 3);
            goto fail;
        }
    }
    for (unsigned i = 0; i < srv->nloops; i++) {
        io_loop *io = &srv->loops[i];
        io->srv = srv;
        io->index = i;
        char name[16];
        snprintf(name, sizeof name, "io%u", i);
        io->loop = pylon_loop_create(name, err, errlen);
        if (!io->loop) goto fail;
        io->read_buf = pylon_conn_read_buf_new();
        if (!io->read_buf) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        uv_loop_t *uv = pylon_loop_uv(io->loop);
        for (int k = 0; k < PYLON_LISTEN_COUNT; k++) {
            int port = opt->port + k;
            /* The last loop takes the original descriptor, the others a duplicate. */
            int fd = i + 1 == srv->nloops ? fds[k] : dup(fds[k]);
            if (i + 1 == srv->nloops) fds[k] = -1;
            uv_tcp_init(uv, &io->listeners[k]);
            io->listeners[k].data = io;
            int rc = uv_tcp_open(&io->listeners[k], fd);
            if (rc == 0) rc = uv_listen((uv_stream_t *)&io->listeners[k], 4096, on_connection);
            if (rc != 0) {
                snprintf(err, errlen, "cannot listen on %s:%d: %s", opt->host, port,
                         uv_strerror(rc));
                goto fail;
            }
            io->listening[k] = true;
        }
        uv_timer_init(uv, &io->sweep);
        io->sweep.data = io;
        uv_timer_start(&io->sweep, on_sweep, 1000, 1000);
    }
    for (; started < srv->nloops; started++) {
        int rc = pylon_loop_start(srv->loops[started].loop);
        if (rc != 0) {
            snprintf(err, errlen, "cannot start I/O thread: %s", strerror(-rc));
            goto fail;
        }
    }
    return srv;
fail:
    for (int k = 0; k < PYLON_LISTEN_COUNT; k++)
        if (fds[k] >= 0) close(fds[k]);
    pylon_http_server_destroy(srv);
    return NULL;
}

/* ---- running a step on every loop and waiting for it ------------------------------------- */

typedef struct loop_step {
    pylon_loop_task task;
    io_loop *io;
    void (*fn)(io_loop *io, void *arg);
    void *arg;
} loop_step;

static void run_step(pylon_loop_task *t, pylon_loop *loop)
{
    (void)loop;
    loop_step *st = (loop_step *)t;
    pylon_http_server *srv = st->io->srv;
    st->fn(st->io, st->arg);
    free(st);
    pthread_mutex_lock(&srv->lock);
    srv->pending_reports--;
    pthread_cond_signal(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
}

static void on_every_loop(pylon_http_server *srv, void (*fn)(io_loop *, void *), void *arg)
{
    pthread_mutex_lock(&srv->lock);
    srv->pending_reports = srv->nloops;
    pthread_mutex_unlock(&srv->lock);
    for (unsigned i = 0; i < srv->nloops; i++) {
        loop_step *st = calloc(1, sizeof *st);
        st->io = &srv->loops[i];
        st->fn = fn;
        st->arg = arg;
        st->task.run = run_step;
        pylon_loop_post(srv->loops[i].loop, &st->task);
    }
    pthread_mutex_lock(&srv->lock);
    while (srv->pending_reports > 0)
        pthread_cond_wait(&srv->cond, &srv->lock);
    pthread_mutex_unlock(&srv->lock);
}

static void stop_accepting(io_loop *io, void *arg)
{
    (void)arg;
    for (int k = 0; k < PYLON_LISTEN_COUNT; k++) {
        if (!io->listening[k]) continue;
        io->listening[k] = false;
        uv_close((uv_handle_t *)&io->listeners[k], NULL);
    }
    pylon_conn_shutdown_idle(io);
}

/* The counts below are summed by every loop at once: atomically. */
static void count_busy(io_loop *io, void *arg)
{
    pylon_conn_shutdown_idle(io); /* keep-alive connections that just finished a request */
    atomic_fetch_add((atomic_uint *)arg, io->http_busy);
}

static void count_open(io_loop *io, void *arg)
{
    unsigned n = 0;
    for (pylon_conn *c = io->conns; c; c = c->next)
        n++;
    atomic_fetch_add((atomic_uint *)arg, n);
}

static void close_streams(io_loop *io, void *arg)
{
    (void)arg;
    pylon_conn *c = io->conns;
    while (c) {
        pylon_conn *next = c->next;
        if (c->ws)
            pylon_stream_shutdown(c);
        else if (!c->lingering)
            pylon_conn_close(c); /* an HTTP request that outlived the drain cap */
        c = next;
    }
}

/* What is still open after the flush wait: a peer that does not read (its socket buffers
 * full, or it never answers our close) would keep its connection forever, and the loop's
 * teardown closes handles without their close callbacks, leaking the connection, its queued
 * writes and what its stream's endpoint holds (a shard subscription, a sync session). Closing
 * here runs on_close and frees all of it; queued writes are cancelled and their buffers
 * released by libuv. */
static void close_all(io_loop *io, void *arg)
{
    (void)arg;
    pylon_conn *c = io->conns;
    while (c) {
        pylon_conn *next = c->next;
        pylon_conn_close(c);
        c = next;
    }
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void pylon_http_server_shutdown(pylon_http_server *srv, unsigned drain_s)
{
    atomic_store(&srv->draining, true);
    /* 1. Stop accepting: listening sockets close; idle keep-alive connections close. */
    on_every_loop(srv, stop_accepting, NULL);
    /* 2. In-flight requests finish (answers carry Connection: close), up to the cap. */
    uint64_t deadline = pylon_clock_now_ns() + (uint64_t)drain_s * PYLON_NS_PER_SEC;
    for (;;) {
        atomic_uint busy_sum = 0;
        on_every_loop(srv, count_busy, &busy_sum);
        unsigned busy = atomic_load(&busy_sum);
        if (busy == 0) break;
        if (pylon_clock_now_ns() >= deadline) {
            pylon_log_warn("http", "drain cap of %u s reached with %u request(s) unfinished",
                           drain_s, busy);
            break;
        }
        sleep_ms(20);
    }
    /* 3. WebSockets get a 1001 close frame, SSE streams end; then wait for the bytes to go. */
    on_every_loop(srv, close_streams, NULL);
    uint64_t flush_deadline = pylon_clock_now_ns() + 2 * PYLON_NS_PER_SEC;
    for (;;) {
        atomic_uint open_sum = 0;
        on_every_loop(srv, count_open, &open_sum);
        unsigned open = atomic_load(&open_sum);
        if (open == 0) break;
        if (pylon_clock_now_ns() >= flush_deadline) {
            pylon_log_warn("http", "%u connection(s) not flushed after 2 s: closed", open);
            on_every_loop(srv, close_all, NULL);
            break;
        }
        sleep_ms(10);
    }
}

bool pylon_http_server_draining(const pylon_http_server *srv)
{
    return atomic_load(&((pylon_http_server *)srv)->draining);
}

void pylon_http_server_destroy(pylon_http_server *srv)
{
    if (!srv) return;
    for (unsigned i = 0; i < srv->nloops; i++) {
        io_loop *io = &srv->loops[i];
        if (io->loop) pylon_loop_destroy(io->loop); /* closes whatever is still open */
        free(io->read_buf);
    }
    for (size_t b = 0; b < IP_BUCKETS; b++) {
        ip_slot *s = srv->ips[b];
        while (s) {
            ip_slot *n = s->next;
            free(s);
            s = n;
        }
    }
    pylon_rate_limiter_free(srv->rate);
    pthread_mutex_destroy(&srv->per_ip_lock);
    free(srv->loops);
    pthread_mutex_destroy(&srv->lock);
    pthread_cond_destroy(&srv->cond);
    free(srv);
}

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

void pylon_http_server_stats(pylon_http_server *srv, pylon_http_stats *out)
{
    memset(out, 0, sizeof *out);
    for (unsigned i = 0; i < srv->nloops; i++) {
        loop_stats *s = &srv->loops[i].stats;
        out->requests += LOAD(s->requests);
        out->ok += LOAD(s->ok);
        out->errors += LOAD(s->errors);
        for (int k = 0; k < 5; k++)
            out->by_method[k] += LOAD(s->by_method[k]);
        for (int k = 0; k < 6; k++)
            out->by_class[k] += LOAD(s->by_class[k]);
        for (int k = 0; k < 12; k++)
            out->latency_buckets[k] += LOAD(s->latency_buckets[k]);
        out->latency_count += LOAD(s->latency_count);
        out->latency_sum_s += (double)LOAD(s->latency_sum_us) / 1e6;
        for (int k = 0; k < PYLON_LISTEN_COUNT + 2; k++)
            out->open[k] += LOAD(s->open[k]);
        out->rejected_conns += LOAD(s->rejected_conns);
        out->timeouts += LOAD(s->timeouts);
    }
}
