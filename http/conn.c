/*
 * conn.c — one HTTP/1.1 connection: reading, parsing (llhttp), dispatching, writing, limits,
 * timeouts and closing.
 *
 * One request at a time per connection: when a request is complete the parser pauses, reading
 * stops, and bytes already received (pipelined requests) wait in `pending`. When the answer is
 * queued the parser resumes on those bytes, then reading restarts. So pipelined requests are
 * answered in order and a client cannot pile up work.
 *
 * Every refusal is an answer with the JSON error envelope, then a lingering close: the write
 * side is shut and input is discarded for a moment, so the client reads the answer instead of
 * a reset.
 */
#include "http/server_internal.h"

#include "engine/clock.h"
#include "engine/log.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MAX_HEADERS   100
#define READ_BUF_SIZE 65536
#define PIPELINE_MAX  (256 * 1024) /* unanswered pipelined bytes kept before reading pauses */
#define LINGER_S      2

struct req_state {
    llhttp_t parser;
    pylon_conn *conn;
    char *arena; /* url, then header names and values, each NUL-terminated */
    size_t arena_len, arena_cap;
    size_t url_off;
    size_t name_off[MAX_HEADERS], value_off[MAX_HEADERS];
    size_t nhdr;
    size_t header_bytes;
    uint8_t *body;
    size_t body_len, body_cap;
    int error_status; /* set by a callback that refused the request */
    const char *error_code, *error_msg;
    pylon_http_header headers[MAX_HEADERS];
};

static llhttp_settings_t parser_settings;

static uint64_t loop_now_s(io_loop *io)
{
    io->now_s = (pylon_clock_now_ns() - io->srv->start_ns) / PYLON_NS_PER_SEC;
    return io->now_s;
}

/* Deadlines are in milliseconds since the server started; the sweep checks them once a
 * second, so a timeout of N seconds fires between N and N+1 seconds, never early. */
static uint64_t now_ms(io_loop *io)
{
    return (pylon_clock_now_ns() - io->srv->start_ns) / PYLON_NS_PER_MS;
}

/* ---- writing ----------------------------------------------------------------------------- */

typedef struct write_req {
    uv_write_t req;
    pylon_conn *c;
    size_t bytes, n;
    pylon_buf *bufs[];
} write_req;

static void linger_or_close(pylon_conn *c);

static void after_write_check(pylon_conn *c)
{
    if (c->queued == 0 && c->close_after_write && !c->closing) linger_or_close(c);
}

static void on_write(uv_write_t *req, int status)
{
    write_req *wr = (write_req *)req;
    pylon_conn *c = wr->c;
    c->queued -= wr->bytes;
    for (size_t i = 0; i < wr->n; i++)
        pylon_buf_release(wr->bufs[i]);
    free(wr);
    if (status < 0) {
        pylon_conn_close(c);
        return;
    }
    after_write_check(c);
}

/* Writes every buffer of bufs through ub, which has room for n entries. `written`: bytes the
 * caller already wrote with pylon_conn_try_write (then the socket is full: no new attempt). */
static bool conn_write_with(pylon_conn *c, pylon_buf **bufs, size_t n, uv_buf_t *ub, size_t written)
{
    size_t total = 0, k = 0;
    for (size_t i = 0; i < n; i++) {
        if (bufs[i]->len == 0) continue;
        ub[k++] = uv_buf_init((char *)bufs[i]->data, (unsigned)bufs[i]->len);
        total += bufs[i]->len;
    }
    size_t done = written;
    if (c->queued == 0 && k > 0 && written == 0) { /* nothing ahead of us: write right now */
        int r = uv_try_write((uv_stream_t *)&c->tcp, ub, (unsigned)k);
        if (r < 0 && r != UV_EAGAIN) {
            for (size_t i = 0; i < n; i++)
                pylon_buf_release(bufs[i]);
            pylon_conn_close(c);
            return false;
        }
        if (r > 0) done = (size_t)r;
    }
    if (done == total) {
        for (size_t i = 0; i < n; i++)
            pylon_buf_release(bufs[i]);
        after_write_check(c);
        return true;
    }
    /* Skip what was written, queue the rest; the buffers stay referenced until on_write. */
    size_t first = 0, skip = done;
    while (skip >= ub[first].len)
        skip -= ub[first++].len;
    ub[first].base += skip;
    ub[first].len -= skip;
    write_req *wr = malloc(sizeof *wr + n * sizeof(pylon_buf *));
    if (!wr) {
        for (size_t i = 0; i < n; i++)
            pylon_buf_release(bufs[i]);
        pylon_conn_close(c);
        return false;
    }
    wr->c = c;
    wr->n = n;
    wr->bytes = total - done;
    memcpy(wr->bufs, bufs, n * sizeof(pylon_buf *));
    c->queued += wr->bytes;
    int rc =
        uv_write(&wr->req, (uv_stream_t *)&c->tcp, ub + first, (unsigned)(k - first), on_write);
    if (rc < 0) {
        c->queued -= wr->bytes;
        for (size_t i = 0; i < n; i++)
            pylon_buf_release(bufs[i]);
        free(wr);
        pylon_conn_close(c);
        return false;
    }
    return true;
}

#define SMALL_BUFS 16

bool pylon_conn_write_rest(pylon_conn *c, pylon_buf **bufs, size_t n, size_t written)
{
    if (c->closing) {
        for (size_t i = 0; i < n; i++)
            pylon_buf_release(bufs[i]);
        return false;
    }
    /* Most writes are a header and a body; longer lists (batched frames) get a heap array so
     * no buffer is ever dropped. uv_write copies the array, so it may be freed right after. */
    uv_buf_t small[SMALL_BUFS];
    uv_buf_t *ub = n <= SMALL_BUFS ? small : malloc(n * sizeof *ub);
    if (!ub) {
        for (size_t i = 0; i < n; i++)
            pylon_buf_release(bufs[i]);
        pylon_conn_close(c);
        return false;
    }
    bool ok = conn_write_with(c, bufs, n, ub, written);
    if (ub != small) free(ub);
    return ok;
}

bool pylon_conn_write(pylon_conn *c, pylon_buf **bufs, size_t n)
{
    return pylon_conn_write_rest(c, bufs, n, 0);
}

ssize_t pylon_conn_try_write(pylon_conn *c, pylon_buf *const *bufs, size_t n)
{
    if (c->closing) return -1;
    if (c->queued > 0) return 0; /* behind what is queued: keep the order */
    uv_buf_t small[SMALL_BUFS];
    uv_buf_t *ub = n <= SMALL_BUFS ? small : malloc(n * sizeof *ub);
    if (!ub) return 0; /* the caller queues it all: a slower path, not an error */
    unsigned k = 0;
    for (size_t i = 0; i < n; i++)
        if (bufs[i]->len) ub[k++] = uv_buf_init((char *)bufs[i]->data, (unsigned)bufs[i]->len);
    int r = k ? uv_try_write((uv_stream_t *)&c->tcp, ub, k) : 0;
    if (ub != small) free(ub);
    if (r == UV_EAGAIN) return 0;
    if (r < 0) {
        pylon_conn_close(c);
        return -1;
    }
    return r;
}

/* ---- closing ----------------------------------------------------------------------------- */

static void req_state_free(req_state *rs)
{
    if (!rs) return;
    free(rs->arena);
    free(rs->body);
    free(rs);
}

void pylon_req_state_free_(void *rs)
{
    req_state_free(rs);
}

static void on_closed(uv_handle_t *h)
{
    pylon_conn *c = h->data;
    req_state_free(c->rs);
    free(c->pending);
    pylon_ws_state_free(c->ws);
    free(c);
}

void pylon_conn_close(pylon_conn *c)
{
    if (c->closing) return;
    c->closing = true;
    io_loop *io = c->io;
    if (c->prev)
        c->prev->next = c->next;
    else
        io->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    if (c->phase == PHASE_HEADERS || c->phase == PHASE_BODY || c->phase == PHASE_HANDLING)
        io->http_busy--;
    if (c->ex) { /* the handler still runs: its answer will find no connection */
        c->ex->conn = NULL;
        c->rs = NULL; /* the exchange owns the request memory now */
        c->ex = NULL;
    }
    if (c->ws) pylon_stream_on_conn_closed(c);
    STAT_ADD(io->stats.open[c->listener], -1);
    pylon_server_ip_release(io, c->ip, c->listener);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_linger_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    if (nread < 0) pylon_conn_close(s->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    pylon_conn *c = req->data;
    free(req);
    if (status < 0) pylon_conn_close(c);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

/* Half-close and discard input until the client closes (or LINGER_S passes), so the client
 * reads our last answer rather than a connection reset. */
static void linger_or_close(pylon_conn *c)
{
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req || uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        free(req);
        pylon_conn_close(c);
        return;
    }
    req->data = c;
    c->close_after_write = false;
    c->lingering = true;
    c->deadline_ms = now_ms(c->io) + LINGER_S * 1000;
    if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = true;
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_linger_read);
}

void pylon_conn_close_when_flushed(pylon_conn *c)
{
    if (c->closing || c->lingering) return;
    c->close_after_write = true;
    after_write_check(c);
}

/* ---- answering --------------------------------------------------------------------------- */

static int method_index(const char *m)
{
    static const char *const names[] = {"GET", "POST", "PATCH", "DELETE", "OPTIONS"};
    for (int i = 0; i < 5; i++)
        if (strcmp(m, names[i]) == 0) return i;
    return -1;
}

const double pylon_http_latency_bounds[12] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                              0.05,   0.1,   0.25,   0.5,   1.0,  1e300};

static void record(io_loop *io, pylon_http_exchange *ex, int status)
{
    loop_stats *st = &io->stats;
    double secs = (double)(pylon_clock_now_ns() - ex->start_ns) / 1e9;
    STAT_ADD(st->requests, 1);
    if (status >= 200 && status < 400)
        STAT_ADD(st->ok, 1);
    else
        STAT_ADD(st->errors, 1);
    int mi = method_index(ex->req.method_name);
    if (mi >= 0) STAT_ADD(st->by_method[mi], 1);
    if (status >= 100 && status < 600) STAT_ADD(st->by_class[status / 100], 1);
    int b = 0;
    while (b < 11 && secs > pylon_http_latency_bounds[b])
        b++;
    STAT_ADD(st->latency_buckets[b], 1);
    STAT_ADD(st->latency_count, 1);
    STAT_ADD(st->latency_sum_us, (uint64_t)(secs * 1e6));
    if (ex->log && pylon_log_enabled(PYLON_LOG_INFO)) {
        pylon_log_field f[] = {PYLON_LF_STR("method", ex->req.method_name),
                               PYLON_LF_STR("path", ex->req.url), PYLON_LF_INT("status", status),
                               PYLON_LF_DOUBLE("ms", secs * 1000.0),
                               PYLON_LF_STR("ip", ex->req.client_ip)};
        pylon_log_write(PYLON_LOG_INFO, "http", "request", f, sizeof f / sizeof f[0]);
    }
}

static void reset_for_next(req_state *rs);
static void http_feed(pylon_conn *c, const uint8_t *data, size_t len);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* `v` in decimal; returns its length (at most 20). */
static size_t fmt_uint(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/* Loop thread: the handler answered `ex` on connection `c` (which is alive). */
void pylon_conn_finish_exchange(pylon_conn *c, pylon_http_exchange *ex)
{
    io_loop *io = c->io;
    pylon_http_server *srv = io->srv;
    const pylon_http_response *res = &ex->res;
    bool keep = ex->keep_alive && !atomic_load(&srv->draining) && res->status != 400 &&
                res->status != 408 && res->status != 413 && res->status != 431;
    size_t body_len = res->body ? res->body->len : 0;
    char common[1024];
    size_t common_len = pylon_server_common_headers(srv, pylon_http_header_get(&ex->req, "origin"),
                                                    common, sizeof common);
    /* The head is assembled by hand, straight into its buffer: snprintf of ~600 bytes of
     * headers was a tenth of a /health answer. A 204 carries neither Content-Type nor
     * Content-Length (RFC 9110 §8.6, §15.3.5); everything else says what and how long. */
    char status[4], length[24];
    size_t status_len = fmt_uint(status, (unsigned)res->status % 1000);
    size_t length_len = fmt_uint(length, body_len);
    const char *reason = pylon_http_status_text(res->status);
    const char *ctype = res->content_type ? res->content_type : "application/json";
    const char *extra = ex->res_headers ? ex->res_headers : "";
    const char *close_hdr = keep ? "" : "Connection: close\r\n";
    struct {
        const char *s;
        size_t n;
    } parts[14];
    size_t np = 0;
#define HEAD_PART(str, len) (parts[np].s = (str), parts[np++].n = (len))
    HEAD_PART("HTTP/1.1 ", 9);
    HEAD_PART(status, status_len);
    HEAD_PART(" ", 1);
    HEAD_PART(reason, strlen(reason));
    HEAD_PART("\r\n", 2);
    if (res->status != 204) {
        HEAD_PART("Content-Type: ", 14);
        HEAD_PART(ctype, strlen(ctype));
        HEAD_PART("\r\nContent-Length: ", 18);
        HEAD_PART(length, length_len);
        HEAD_PART("\r\n", 2);
    }
    HEAD_PART(common, common_len);
    HEAD_PART(extra, strlen(extra));
    HEAD_PART(close_hdr, strlen(close_hdr));
    HEAD_PART("\r\n", 2);
#undef HEAD_PART
    size_t head_len = 0;
    for (size_t i = 0; i < np; i++)
        head_len += parts[i].n;
    pylon_buf *head = pylon_buf_new(head_len);
    if (head) {
        size_t at = 0;
        for (size_t i = 0; i < np; i++) {
            memcpy(head->data + at, parts[i].s, parts[i].n);
            at += parts[i].n;
        }
    }
    record(io, ex, res->status);
    c->ex = NULL;
    io->http_busy--;
    pylon_buf *bufs[2];
    size_t nb = 0;
    if (head) bufs[nb++] = head;
    if (res->body) {
        if (ex->req.method_name[0] == 'H') /* HEAD: the length, not the bytes */
            pylon_buf_release(res->body);
        else
            bufs[nb++] = res->body;
    }
    free(ex->res_headers);
    free(ex);
    if (!keep) { /* nothing more is read: the rest goes unparsed (reading ran on meanwhile) */
        c->close_after_write = true;
        if (c->reading) {
            uv_read_stop((uv_stream_t *)&c->tcp);
            c->reading = false;
        }
    }
    c->phase = PHASE_IDLE;
    c->deadline_ms = now_ms(io) + srv->opt.idle_timeout_s * 1000ull;
    if (!pylon_conn_write(c, bufs, nb) || !keep || c->closing) return;
    pylon_conn_resume_http(c);
}

/* After an answer: parse what already arrived, then read again. An inline handler answers
 * from inside dispatch, which runs inside this function: rather than recursing once per
 * pipelined request (a 64 KiB read can hold a thousand), the nested call only asks the
 * outer loop for another turn. */
void pylon_conn_resume_http(pylon_conn *c)
{
    if (c->resuming) {
        c->resume_again = true;
        return;
    }
    c->resuming = true;
    do {
        c->resume_again = false;
        if (c->closing || !c->rs) break;
        reset_for_next(c->rs);
        llhttp_resume(&c->rs->parser);
        if (c->pending) {
            uint8_t *p = c->pending;
            size_t len = c->pending_len;
            c->pending = NULL;
            c->pending_len = 0;
            http_feed(c, p, len);
            free(p);
        }
    } while (c->resume_again);
    c->resuming = false;
    if (c->closing || c->ex || c->ws || c->close_after_write || c->lingering) return;
    pylon_conn_start_reading(c);
}

void pylon_conn_start_reading(pylon_conn *c)
{
    if (c->reading || c->closing) return;
    c->reading = true;
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
}

/* ---- parsing ----------------------------------------------------------------------------- */

static bool arena_put(req_state *rs, const char *p, size_t len)
{
    if (rs->arena_len + len + 1 > rs->arena_cap) {
        size_t cap = rs->arena_cap ? rs->arena_cap : 1024;
        while (cap < rs->arena_len + len + 1)
            cap *= 2;
        char *na = realloc(rs->arena, cap);
        if (!na) return false;
        rs->arena = na;
        rs->arena_cap = cap;
    }
    memcpy(rs->arena + rs->arena_len, p, len);
    rs->arena_len += len;
    return true;
}

static int refuse(req_state *rs, int status, const char *code, const char *msg)
{
    rs->error_status = status;
    rs->error_code = code;
    rs->error_msg = msg;
    return -1; /* llhttp stops with HPE_USER */
}

static int count_header_bytes(req_state *rs, size_t len)
{
    rs->header_bytes += len;
    if (rs->header_bytes > rs->conn->io->srv->opt.max_header_bytes)
        return refuse(rs, 431, "HEADERS_TOO_LARGE",
                      "Request headers are too large: keep the URL, cookies and headers under "
                      "16 KiB in total");
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    req_state *rs = p->data;
    pylon_conn *c = rs->conn;
    if (c->phase == PHASE_IDLE) c->io->http_busy++;
    c->phase = PHASE_HEADERS;
    c->deadline_ms = now_ms(c->io) + c->io->srv->opt.header_timeout_s * 1000ull;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    req_state *rs = p->data;
    if (count_header_bytes(rs, len)) return -1;
    return arena_put(rs, at, len) ? 0 : refuse(rs, 500, "INTERNAL", "out of memory");
}

static int on_url_complete(llhttp_t *p)
{
    req_state *rs = p->data;
    return arena_put(rs, "", 1) ? 0 : refuse(rs, 500, "INTERNAL", "out of memory");
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    req_state *rs = p->data;
    if (count_header_bytes(rs, len)) return -1;
    if (rs->name_off[rs->nhdr] == SIZE_MAX) {
        if (rs->nhdr + 1 >= MAX_HEADERS)
            return refuse(rs, 431, "HEADERS_TOO_LARGE",
                          "Too many request headers: send at most 99");
        rs->name_off[rs->nhdr] = rs->arena_len;
    }
    return arena_put(rs, at, len) ? 0 : refuse(rs, 500, "INTERNAL", "out of memory");
}

static int on_header_field_complete(llhttp_t *p)
{
    req_state *rs = p->data;
    if (!arena_put(rs, "", 1)) return refuse(rs, 500, "INTERNAL", "out of memory");
    rs->value_off[rs->nhdr] = rs->arena_len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    req_state *rs = p->data;
    if (count_header_bytes(rs, len)) return -1;
    return arena_put(rs, at, len) ? 0 : refuse(rs, 500, "INTERNAL", "out of memory");
}

static int on_header_value_complete(llhttp_t *p)
{
    req_state *rs = p->data;
    if (!arena_put(rs, "", 1)) return refuse(rs, 500, "INTERNAL", "out of memory");
    rs->nhdr++;
    rs->name_off[rs->nhdr] = SIZE_MAX;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    req_state *rs = p->data;
    pylon_conn *c = rs->conn;
    const pylon_http_server_options *o = &c->io->srv->opt;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > o->max_body_bytes)
        return refuse(rs, 413, "PAYLOAD_TOO_LARGE",
                      "Request body is larger than 10 MiB: split it into smaller requests");
    c->phase = PHASE_BODY;
    c->deadline_ms = now_ms(c->io) + o->body_timeout_s * 1000ull;
    /* Clients that ask first (curl does for large bodies) get the go-ahead. */
    bool has_body = (p->flags & F_CONTENT_LENGTH) ? p->content_length > 0 : (p->flags & F_CHUNKED);
    if (has_body) {
        for (size_t i = 0; i < rs->nhdr; i++) {
            if (strcasecmp(rs->arena + rs->name_off[i], "expect") == 0 &&
                strcasecmp(rs->arena + rs->value_off[i], "100-continue") == 0) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                pylon_buf *b = pylon_buf_copy(cont, sizeof cont - 1);
                if (b) pylon_conn_write(c, &b, 1);
            }
        }
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    req_state *rs = p->data;
    pylon_conn *c = rs->conn;
    const pylon_http_server_options *o = &c->io->srv->opt;
    if (rs->body_len + len > o->max_body_bytes)
        return refuse(rs, 413, "PAYLOAD_TOO_LARGE",
                      "Request body is larger than 10 MiB: split it into smaller requests");
    if (rs->body_len + len > rs->body_cap) {
        size_t cap = rs->body_cap ? rs->body_cap : 4096;
        while (cap < rs->body_len + len)
            cap *= 2;
        if (cap > o->max_body_bytes) cap = o->max_body_bytes;
        uint8_t *nb = realloc(rs->body, cap);
        if (!nb) return refuse(rs, 500, "INTERNAL", "out of memory");
        rs->body = nb;
        rs->body_cap = cap;
    }
    memcpy(rs->body + rs->body_len, at, len);
    rs->body_len += len;
    c->deadline_ms =
        now_ms(c->io) + o->body_timeout_s * 1000ull; /* a slow body, not a stalled one */
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    return llhttp_get_upgrade(p) ? 0 : HPE_PAUSED;
}

static void settings_init(void)
{
    llhttp_settings_init(&parser_settings);
    parser_settings.on_message_begin = on_message_begin;
    parser_settings.on_url = on_url;
    parser_settings.on_url_complete = on_url_complete;
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_field_complete = on_header_field_complete;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_header_value_complete = on_header_value_complete;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_message_complete = on_message_complete;
}

static void reset_for_next(req_state *rs)
{
    rs->arena_len = 0;
    rs->url_off = 0;
    rs->nhdr = 0;
    rs->name_off[0] = SIZE_MAX;
    rs->header_bytes = 0;
    rs->body_len = 0;
    rs->error_status = 0;
}

static req_state *req_state_new(pylon_conn *c)
{
    static uv_once_t once = UV_ONCE_INIT;
    uv_once(&once, settings_init);
    req_state *rs = calloc(1, sizeof *rs);
    if (!rs) return NULL;
    llhttp_init(&rs->parser, HTTP_REQUEST, &parser_settings);
    rs->parser.data = rs;
    rs->conn = c;
    reset_for_next(rs);
    return rs;
}

/* ---- dispatch ---------------------------------------------------------------------------- */

static unsigned method_bit(int m)
{
    switch (m) {
    case HTTP_GET:
        return PYLON_M_GET;
    case HTTP_POST:
        return PYLON_M_POST;
    case HTTP_PUT:
        return PYLON_M_PUT;
    case HTTP_PATCH:
        return PYLON_M_PATCH;
    case HTTP_DELETE:
        return PYLON_M_DELETE;
    case HTTP_HEAD:
        return PYLON_M_HEAD | PYLON_M_GET; /* HEAD is served by GET routes */
    default:
        return 0;
    }
}

/* "Allow: GET, POST, OPTIONS\r\n" into out; returns its length. */
static size_t allow_header(unsigned methods, char *out, size_t cap)
{
    static const struct {
        unsigned bit;
        const char *name;
    } m[] = {{PYLON_M_GET, "GET"},     {PYLON_M_POST, "POST"},     {PYLON_M_PUT, "PUT"},
             {PYLON_M_PATCH, "PATCH"}, {PYLON_M_DELETE, "DELETE"}, {PYLON_M_HEAD, "HEAD"}};
    size_t n = (size_t)snprintf(out, cap, "Allow: ");
    bool first = true;
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        if (!(methods & m[i].bit)) continue;
        n += (size_t)snprintf(out + n, cap - n, "%s%s", first ? "" : ", ", m[i].name);
        first = false;
    }
    n += (size_t)snprintf(out + n, cap - n, "%sOPTIONS\r\n", first ? "" : ", ");
    return n;
}

/* Builds the exchange for the request the parser just completed. */
static pylon_http_exchange *exchange_new(pylon_conn *c)
{
    req_state *rs = c->rs;
    pylon_http_exchange *ex = calloc(1, sizeof *ex);
    if (!ex) return NULL;
    ex->conn = c;
    ex->io = c->io;
    ex->rs = rs;
    ex->start_ns = pylon_clock_now_ns();
    ex->keep_alive = llhttp_should_keep_alive(&rs->parser);
    ex->log = true;
    /* Path (without the query) as its own string, then the client IP, in the arena. */
    const char *url = rs->arena + rs->url_off;
    size_t path_len = strcspn(url, "?");
    size_t path_off = rs->arena_len;
    arena_put(rs, url, path_len);
    arena_put(rs, "", 1);
    for (size_t i = 0; i < rs->nhdr; i++) {
        rs->headers[i].name = rs->arena + rs->name_off[i];
        rs->headers[i].value = rs->arena + rs->value_off[i];
    }
    pylon_http_request *req = &ex->req;
    req->method = rs->parser.method;
    req->method_name = llhttp_method_name((llhttp_method_t)rs->parser.method);
    req->url = rs->arena + rs->url_off;
    req->path = rs->arena + path_off;
    req->query = url[path_len] == '?' ? url + path_len + 1 : "";
    req->headers = rs->headers;
    req->nheaders = rs->nhdr;
    req->body = rs->body;
    req->body_len = rs->body_len;
    req->peer_is_loopback = c->peer_loopback;
    req->listener = c->listener;
    static _Thread_local char ip[46]; /* copied into the arena right below */
    pylon_guard_client_ip(c->io->srv->opt.guard, c->peer_ip,
                          pylon_http_header_get(req, "x-forwarded-for"), ip, sizeof ip);
    size_t ip_off = rs->arena_len;
    arena_put(rs, ip, strlen(ip) + 1);
    /* The arena may have moved: point everything at its final place. */
    for (size_t i = 0; i < rs->nhdr; i++) {
        rs->headers[i].name = rs->arena + rs->name_off[i];
        rs->headers[i].value = rs->arena + rs->value_off[i];
    }
    req->url = rs->arena + rs->url_off;
    url = req->url;
    req->path = rs->arena + path_off;
    req->query = url[path_len] == '?' ? url + path_len + 1 : "";
    req->client_ip = rs->arena + ip_off;
    return ex;
}

static bool is_stream_listener(int l)
{
    return l == PYLON_LISTEN_SYNC_WS || l == PYLON_LISTEN_SHARD_WS || l == PYLON_LISTEN_SSE;
}

/* Which transport a request on the main port asks for (DECISIONS.md §1), or -1 for HTTP. */
static int stream_kind_for(const pylon_http_request *req, int listener)
{
    bool upgrade = pylon_ws_wants_upgrade(req);
    switch (listener) {
    case PYLON_LISTEN_SYNC_WS:
        return PYLON_STREAM_SYNC_WS;
    case PYLON_LISTEN_SHARD_WS:
        return PYLON_STREAM_SHARD_WS;
    case PYLON_LISTEN_SSE:
        return PYLON_STREAM_SSE;
    default:
        break;
    }
    if (upgrade) {
        if (strncmp(req->path, "/shard", 6) == 0 && (req->path[6] == '\0' || req->path[6] == '/'))
            return PYLON_STREAM_SHARD_WS;
        if (strncmp(req->query, "shard=", 6) == 0 || strstr(req->query, "&shard="))
            return PYLON_STREAM_SHARD_WS;
        return PYLON_STREAM_SYNC_WS;
    }
    if (req->method == HTTP_GET && strcmp(req->path, "/events") == 0) return PYLON_STREAM_SSE;
    if (req->method == HTTP_GET && strncmp(req->path, "/api/shards/", 12) == 0) {
        size_t n = strlen(req->path);
        if (n > 20 && strcmp(req->path + n - 8, "/connect") == 0) return PYLON_STREAM_SHARD_SSE;
    }
    return -1;
}

static bool rs_http11(const pylon_conn *c)
{
    return c->rs && c->rs->parser.http_major == 1 && c->rs->parser.http_minor == 1;
}

static void dispatch(pylon_conn *c, const uint8_t *rest, size_t rest_len)
{
    io_loop *io = c->io;
    pylon_http_server *srv = io->srv;
    pylon_http_exchange *ex = exchange_new(c);
    if (!ex) {
        pylon_conn_close(c);
        return;
    }
    c->ex = ex;
    c->phase = PHASE_HANDLING;
    c->deadline_ms = 0;
    const pylon_http_request *req = &ex->req;

    /* RFC 9112 §3.2: an HTTP/1.1 request without Host is malformed. */
    if (rs_http11(c) && !pylon_http_header_get(req, "host")) {
        ex->keep_alive = false;
        pylon_http_respond_error(ex, 400, "BAD_REQUEST", "HTTP/1.1 requests need a Host header",
                                 "send Host: <server name>");
        return;
    }

    /* 1-2. The operations fast paths: no rate limit, not logged (backend.md §9). */
    bool get = req->method == HTTP_GET || req->method == HTTP_HEAD;
    if (c->listener == PYLON_LISTEN_MAIN && get &&
        (strcmp(req->path, "/health") == 0 || strcmp(req->path, "/metrics") == 0))
        ex->log = false;
    else {
        /* 3. Per-IP rate limit (OPTIONS exempt). */
        if (req->method != HTTP_OPTIONS) {
            pthread_mutex_lock(&srv->per_ip_lock);
            unsigned wait = pylon_rate_limiter_hit(srv->rate, req->client_ip, loop_now_s(io));
            pthread_mutex_unlock(&srv->per_ip_lock);
            if (wait) {
                char msg[96], hdr[64];
                snprintf(msg, sizeof msg, "Too many requests. Retry after %u seconds.", wait);
                snprintf(hdr, sizeof hdr, "Retry-After: %u\r\n", wait);
                pylon_http_response res = {
                    .status = 429,
                    .headers = hdr,
                    .body = pylon_http_error_body("RATE_LIMITED", msg,
                                                  "slow down, or raise PYLON_RATE_LIMIT_MAX")};
                pylon_http_respond(ex, &res);
                return;
            }
        }
        /* 4. CSRF for cookie-authenticated browser writes. */
        char scratch[256];
        const char *bad = pylon_guard_csrf_check(srv->opt.guard, req, scratch, sizeof scratch);
        if (bad) {
            char msg[320];
            snprintf(msg, sizeof msg, "Origin '%.250s' not allowed", bad);
            pylon_http_respond_error(
                ex, 403, "CSRF_REJECTED", msg,
                "add the origin to PYLON_CSRF_ORIGINS, or authenticate with a Bearer "
                "token");
            return;
        }
    }

    /* Streams: WebSocket upgrades and SSE, by listener or by path on the main port. */
    int kind = stream_kind_for(req, c->listener);
    if (kind >= 0) {
        if (atomic_load(&srv->draining)) {
            pylon_http_respond_error(ex, 503, "SHUTTING_DOWN", "The server is shutting down",
                                     "reconnect to another instance");
            return;
        }
        pylon_stream_begin(c, ex, (pylon_stream_kind)kind, rest, rest_len);
        return;
    }
    if (is_stream_listener(c->listener)) { /* unreachable: every request there is a stream */
        pylon_http_respond_error(ex, 426, "UPGRADE_REQUIRED", "This port only serves WebSocket",
                                 NULL);
        return;
    }

    /* CORS preflight. */
    if (req->method == HTTP_OPTIONS) {
        pylon_http_response res = {.status = 204};
        pylon_http_respond(ex, &res);
        return;
    }

    pylon_router_match(srv->opt.router, method_bit(req->method), req->path, &ex->match);
    if (ex->match.status == 404) {
        char msg[300];
        snprintf(msg, sizeof msg, "No API route matches %.250s", req->path);
        pylon_http_respond_error(ex, 404, "NOT_FOUND", msg,
                                 "see GET /api/transports, /health, /readyz and /metrics");
        return;
    }
    if (ex->match.status == 405) {
        char allow[128], msg[300], hint[160];
        size_t an = allow_header(ex->match.allowed, allow, sizeof allow);
        snprintf(msg, sizeof msg, "%s is not allowed on %.200s", req->method_name, req->path);
        snprintf(hint, sizeof hint, "this path accepts %.*s", (int)(an - 9), allow + 7);
        pylon_http_response res = {.status = 405,
                                   .headers = allow,
                                   .body = pylon_http_error_body("METHOD_NOT_ALLOWED", msg, hint)};
        pylon_http_respond(ex, &res);
        return;
    }
    if (ex->match.fn) {
        ex->match.fn(ex, ex->match.ctx);
        return;
    }
    pylon_http_msg *m = malloc(sizeof *m);
    if (!m) {
        pylon_http_respond_error(ex, 503, "OVERLOADED", "Out of memory", NULL);
        return;
    }
    pylon_msg_init(&m->msg, ex->match.msg_type, NULL);
    m->ex = ex;
    m->ctx = ex->match.ctx;
    pylon_actor_send(ex->match.actor, &m->msg);
}

/* A request the parser refused: answer with the reason and close. */
static void refuse_request(pylon_conn *c, int status, const char *code, const char *msg)
{
    pylon_http_exchange *ex = calloc(1, sizeof *ex);
    if (!ex) {
        pylon_conn_close(c);
        return;
    }
    ex->conn = c;
    ex->io = c->io;
    ex->start_ns = pylon_clock_now_ns();
    ex->keep_alive = false;
    ex->log = true;
    ex->req.method_name = "-";
    ex->req.url = "-";
    ex->req.path = "-";
    ex->req.query = "";
    ex->req.client_ip = c->peer_ip;
    if (c->phase == PHASE_IDLE) c->io->http_busy++; /* balanced by finish_exchange */
    c->ex = ex;
    c->phase = PHASE_HANDLING;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
    const char *hint = status == 400 ? "send a well-formed HTTP/1.1 request" : NULL;
    pylon_http_respond_error(ex, status, code, msg, hint);
}

/* Bytes after the request being handled (pipelined or early): kept for after the answer. Past
 * PIPELINE_MAX, reading stops until the answers catch up. False: out of memory, closed. */
static bool keep_pipelined(pylon_conn *c, const uint8_t *data, size_t len)
{
    uint8_t *p = realloc(c->pending, c->pending_len + len);
    if (!p) {
        pylon_conn_close(c);
        return false;
    }
    memcpy(p + c->pending_len, data, len);
    c->pending = p;
    c->pending_len += len;
    if (c->pending_len >= PIPELINE_MAX && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    return true;
}

static void http_feed(pylon_conn *c, const uint8_t *data, size_t len)
{
    req_state *rs = c->rs;
    llhttp_errno_t err = llhttp_execute(&rs->parser, (const char *)data, len);
    if (err == HPE_OK) return;
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
        const uint8_t *pos = (const uint8_t *)llhttp_get_error_pos(&rs->parser);
        size_t used = pos ? (size_t)(pos - data) : len;
        if (used > len) used = len;
        if (err == HPE_PAUSED_UPGRADE) {
            if (c->reading) {
                uv_read_stop((uv_stream_t *)&c->tcp);
                c->reading = false;
            }
            dispatch(c, data + used, len - used);
            return;
        }
        /* Reading goes on while the request is handled (stopping and restarting it cost two
         * epoll_ctl calls per request handed to an actor); bytes that arrive meanwhile are kept
         * by keep_pipelined, which stops reading once they pass PIPELINE_MAX. */
        if (used < len && !keep_pipelined(c, data + used, len - used)) return;
        dispatch(c, NULL, 0);
        return;
    }
    if (rs->error_status) { /* one of our callbacks refused it (llhttp's code varies by callback) */
        refuse_request(c, rs->error_status, rs->error_code, rs->error_msg);
        return;
    }
    char msg[200];
    snprintf(msg, sizeof msg, "Malformed HTTP request: %s", llhttp_get_error_reason(&rs->parser));
    refuse_request(c, 400, "BAD_REQUEST", msg);
}

/* ---- reading and accepting --------------------------------------------------------------- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    pylon_conn *c = h->data;
    *buf = uv_buf_init((char *)c->io->read_buf, READ_BUF_SIZE);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    pylon_conn *c = s->data;
    bool handling = c->ex && !c->ws; /* a request is being answered; the parser is paused */
    if (nread < 0) {
        if (handling && nread == UV_EOF) {
            /* A half-closed peer still gets its answer; the EOF is seen again afterwards. */
            uv_read_stop(s);
            c->reading = false;
            return;
        }
        pylon_conn_close(c);
        return;
    }
    if (nread == 0) return;
    c->last_recv_s = loop_now_s(c->io);
    if (c->ws) {
        pylon_ws_on_data(c, (const uint8_t *)buf->base, (size_t)nread);
        return;
    }
    if (handling) {
        keep_pipelined(c, (const uint8_t *)buf->base, (size_t)nread);
        return;
    }
    if (!c->rs && !(c->rs = req_state_new(c))) {
        pylon_conn_close(c);
        return;
    }
    http_feed(c, (const uint8_t *)buf->base, (size_t)nread);
}

/* A connection accepted on one loop and handed to another (pylon_conn_accept). */
typedef struct handoff {
    pylon_loop_task task;
    io_loop *to;
    int fd, kind;
} handoff;

static void conn_start(io_loop *io, pylon_conn *c, int kind);

/* On the receiving loop's thread: the socket becomes one of its connections. */
static void adopt(pylon_loop_task *task, pylon_loop *loop)
{
    handoff *h = (handoff *)task;
    io_loop *io = h->to;
    int fd = h->fd, kind = h->kind;
    free(h);
    if (!pylon_loop_on_thread(loop)) { /* the loop stopped first: run by its destroy */
        close(fd);
        return;
    }
    pylon_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->io = io;
    c->listener = (uint8_t)kind;
    uv_tcp_init(pylon_loop_uv(loop), &c->tcp);
    c->tcp.data = c;
    if (uv_tcp_open(&c->tcp, fd) != 0) {
        close(fd);
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    conn_start(io, c, kind);
}

/* Every loop listens on the same socket and the first to wake accepts (libuv then takes all
 * that are pending), so one loop could end up with nearly every connection. With several
 * loops, accepted connections are dealt round-robin instead: one for another loop leaves as
 * a duplicate of its descriptor in a task to that loop. */
void pylon_conn_accept(io_loop *io, uv_stream_t *listener, int kind)
{
    pylon_http_server *srv = io->srv;
    pylon_conn *c = calloc(1, sizeof *c);
    if (!c) return;
    c->io = io;
    c->listener = (uint8_t)kind;
    uv_tcp_init(pylon_loop_uv(io->loop), &c->tcp);
    c->tcp.data = c;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    io_loop *to = io;
    if (srv->nloops > 1) to = &srv->loops[atomic_fetch_add(&srv->next_loop, 1) % srv->nloops];
    if (to == io) {
        conn_start(io, c, kind);
        return;
    }
    uv_os_fd_t fd = -1;
    handoff *h = malloc(sizeof *h);
    int dup_fd =
        h && uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
    uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free); /* closes the original descriptor */
    if (dup_fd < 0) {
        free(h);
        return;
    }
    h->task.run = adopt;
    h->to = to;
    h->fd = dup_fd;
    h->kind = kind;
    pylon_loop_post(to->loop, &h->task);
}

/* An accepted connection on its own loop: per-IP caps, then reading. */
static void conn_start(io_loop *io, pylon_conn *c, int kind)
{
    pylon_http_server *srv = io->srv;
    struct sockaddr_storage ss;
    int sslen = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sslen) == 0) {
        if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer_ip, sizeof c->peer_ip);
        else
            uv_ip4_name((struct sockaddr_in *)&ss, c->peer_ip, sizeof c->peer_ip);
    }
    c->peer_loopback = strncmp(c->peer_ip, "127.", 4) == 0 || strcmp(c->peer_ip, "::1") == 0 ||
                       strncmp(c->peer_ip, "::ffff:127.", 11) == 0;
    /* Per-IP caps (over all loops): excess connections are closed at once, before any byte is
     * read. */
    unsigned cap =
        kind == PYLON_LISTEN_MAIN ? srv->opt.max_conns_per_ip : srv->opt.max_stream_conns_per_ip;
    pthread_mutex_lock(&srv->per_ip_lock);
    ip_slot **bucket = pylon_server_ip_bucket(srv, c->peer_ip), *slot = *bucket;
    while (slot && strcmp(slot->ip, c->peer_ip) != 0)
        slot = slot->next;
    bool refuse = (slot && cap && slot->count[kind] >= cap) || atomic_load(&srv->draining);
    if (!refuse && !slot && (slot = calloc(1, sizeof *slot))) {
        snprintf(slot->ip, sizeof slot->ip, "%s", c->peer_ip);
        slot->next = *bucket;
        *bucket = slot;
    }
    if (!refuse && slot) slot->count[kind]++;
    pthread_mutex_unlock(&srv->per_ip_lock);
    if (refuse || !slot) {
        if (refuse) STAT_ADD(io->stats.rejected_conns, 1);
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    c->ip = slot;
    uv_tcp_nodelay(&c->tcp, 1);
    c->next = io->conns;
    if (io->conns) io->conns->prev = c;
    io->conns = c;
    STAT_ADD(io->stats.open[kind], 1);
    c->phase = PHASE_IDLE;
    /* A new connection must send its first request within the header timeout. */
    c->deadline_ms = now_ms(io) + srv->opt.header_timeout_s * 1000ull;
    c->reading = true;
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
}

/* ---- timeouts and shutdown --------------------------------------------------------------- */

void pylon_conn_sweep(io_loop *io)
{
    loop_now_s(io);
    uint64_t now = now_ms(io);
    pylon_conn *c = io->conns;
    while (c) {
        pylon_conn *next = c->next;
        if (c->lingering) {
            if (now >= c->deadline_ms) pylon_conn_close(c);
        } else if (c->ws) {
            pylon_stream_sweep(c);
        } else if (c->deadline_ms && now >= c->deadline_ms) {
            if (c->phase == PHASE_HEADERS || c->phase == PHASE_BODY) {
                STAT_ADD(io->stats.timeouts, 1);
                refuse_request(c, 408, "REQUEST_TIMEOUT",
                               c->phase == PHASE_HEADERS
                                   ? "The request headers did not arrive in time"
                                   : "The request body stalled");
            } else if (c->phase == PHASE_IDLE) {
                pylon_conn_close(c); /* idle keep-alive */
            }
        }
        c = next;
    }
}

void pylon_conn_shutdown_idle(io_loop *io)
{
    pylon_conn *c = io->conns;
    while (c) {
        pylon_conn *next = c->next;
        if (!c->ws && !c->lingering && c->phase == PHASE_IDLE && c->queued == 0)
            pylon_conn_close(c);
        c = next;
    }
}

void *pylon_conn_read_buf_new(void)
{
    return malloc(READ_BUF_SIZE);
}
