/*
 * ws_idle.c — memory per idle WebSocket connection.
 *
 *   bench_ws_idle server PORT     our WebSocket layer (http/ with a no-op endpoint), in this
 *                                 process, so its RSS is the server's alone
 *   bench_ws_idle clients PORT N  opens N WebSocket connections to 127.0.0.1:PORT, completes
 *                                 every handshake, prints "ready N" and holds them until
 *                                 SIGTERM
 *
 * run.sh starts a server (ours, or Node's `ws` as the reference), reads its RSS, starts the
 * clients, reads the RSS again and divides the difference by N.
 */
#include "http/guard.h"
#include "http/router.h"
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void *noop_open(pylon_stream *s, const pylon_stream_open *info)
{
    (void)s;
    (void)info;
    return NULL;
}

static const pylon_stream_handlers NOOP = {.on_open = noop_open,
                                           .backlog_policy = PYLON_BACKLOG_CLOSE};

static int run_server(int port)
{
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    pylon_router *router = pylon_router_new();
    pylon_guard_config gc = {.dev = true, .rate_window_s = 60};
    pylon_guard *guard = pylon_guard_new(&gc);
    pylon_http_server_options o = {.host = "127.0.0.1",
                                   .port = port,
                                   .io_threads = 1,
                                   .max_header_bytes = 16384,
                                   .max_body_bytes = 1 << 20,
                                   .header_timeout_s = 10,
                                   .body_timeout_s = 10,
                                   .idle_timeout_s = 60,
                                   .ws_max_frame = 1 << 20,
                                   .stream_max_backlog = 1 << 20,
                                   .ws_ping_s = 30,
                                   .ws_dead_s = 75,
                                   .sse_keepalive_s = 30,
                                   .router = router,
                                   .guard = guard,
                                   .streams = {[PYLON_STREAM_SYNC_WS] = &NOOP}};
    char err[256];
    pylon_http_server *srv = pylon_http_server_start(&o, err, sizeof err);
    if (!srv) {
        fprintf(stderr, "server: %s\n", err);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    int sig;
    sigwait(&stop, &sig);
    pylon_http_server_shutdown(srv, 1);
    pylon_http_server_destroy(srv);
    pylon_router_free(router);
    pylon_guard_free(guard);
    return 0;
}

static int run_clients(int port, int n)
{
    int *fds = calloc((size_t)n, sizeof *fds);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    static const char req[] =
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    int ok = 0;
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&a, sizeof a) != 0) {
            fprintf(stderr, "clients: connect %d: %s\n", i, strerror(errno));
            break;
        }
        if (write(fds[i], req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) break;
        /* Read the 101 head before the next one: the server sees a steady, bounded load. */
        char buf[1024];
        size_t got = 0;
        while (got < sizeof buf - 1) {
            struct pollfd pf = {.fd = fds[i], .events = POLLIN};
            if (poll(&pf, 1, 5000) <= 0) break;
            ssize_t r = read(fds[i], buf + got, sizeof buf - 1 - got);
            if (r <= 0) break;
            got += (size_t)r;
            buf[got] = '\0';
            if (strstr(buf, "\r\n\r\n")) break;
        }
        buf[got] = '\0';
        if (strncmp(buf, "HTTP/1.1 101", 12) != 0) {
            fprintf(stderr, "clients: handshake %d failed: %.60s\n", i, buf);
            break;
        }
        ok++;
    }
    printf("ready %d\n", ok);
    fflush(stdout);
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigprocmask(SIG_BLOCK, &stop, NULL);
    int sig;
    sigwait(&stop, &sig);
    for (int i = 0; i < ok; i++)
        close(fds[i]);
    free(fds);
    return ok == n ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "server") == 0) return run_server(atoi(argv[2]));
    if (argc >= 4 && strcmp(argv[1], "clients") == 0)
        return run_clients(atoi(argv[2]), atoi(argv[3]));
    fprintf(stderr, "usage: bench_ws_idle server PORT | clients PORT N\n");
    return 64;
}
