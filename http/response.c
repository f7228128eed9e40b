/* response.c — answering an exchange from any thread, and the JSON error envelope. */
#include "http/server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const pylon_http_request *pylon_http_request_of(const pylon_http_exchange *ex)
{
    return &ex->req;
}

const char *pylon_http_header_get(const pylon_http_request *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->headers[i].name, name) == 0) return req->headers[i].value;
    return NULL;
}

static int hexval(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

size_t pylon_http_pct_decode(const char *in, size_t len, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < cap; i++) {
        int h, l;
        if (in[i] == '%' && i + 2 < len && (h = hexval((unsigned char)in[i + 1])) >= 0 &&
            (l = hexval((unsigned char)in[i + 2])) >= 0) {
            out[n++] = (char)(h * 16 + l);
            i += 2;
        } else {
            out[n++] = in[i];
        }
    }
    out[n] = '\0';
    return n;
}

bool pylon_http_param(const pylon_http_exchange *ex, size_t i, char *out, size_t cap)
{
    if (i >= ex->match.nparams || cap == 0) return false;
    /* Decoded after the path was split, so an id holding "%2F" stays one segment. */
    pylon_http_pct_decode(ex->match.params[i].start, ex->match.params[i].len, out, cap);
    return true;
}

static void exchange_free_orphan(pylon_http_exchange *ex)
{
    if (ex->res.body) pylon_buf_release(ex->res.body);
    if (ex->rs) {
        /* The connection closed while the handler ran and left the request memory to us. */
        pylon_req_state_free_(ex->rs);
    }
    free(ex->res_headers);
    free(ex);
}

static void deliver(pylon_http_exchange *ex)
{
    if (ex->conn)
        pylon_conn_finish_exchange(ex->conn, ex);
    else
        exchange_free_orphan(ex);
}

static void run_answer(pylon_loop_task *task, pylon_loop *loop)
{
    (void)loop;
    deliver((pylon_http_exchange *)task);
}

void pylon_http_respond(pylon_http_exchange *ex, const pylon_http_response *res)
{
    ex->res = *res;
    if (ex->res.status == 0) ex->res.status = 200;
    ex->res.headers = NULL;
    ex->res_headers = res->headers ? strdup(res->headers) : NULL;
    if (pylon_loop_on_thread(ex->io->loop)) {
        deliver(ex);
        return;
    }
    ex->task.run = run_answer;
    pylon_loop_post(ex->io->loop, &ex->task);
}

void pylon_http_respond_json(pylon_http_exchange *ex, int status, const char *json)
{
    pylon_http_response res = {.status = status, .body = pylon_buf_copy(json, strlen(json))};
    pylon_http_respond(ex, &res);
}

/* Appends `s` as a JSON string body (without quotes) to out; returns the new length. */
static size_t json_escape(char *out, size_t n, size_t cap, const char *s)
{
    for (; *s && n + 7 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[n++] = '\\';
            out[n++] = (char)ch;
        } else if (ch < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
        } else {
            out[n++] = (char)ch;
        }
    }
    return n;
}

pylon_buf *pylon_http_error_body(const char *code, const char *message, const char *hint)
{
    char buf[2048];
    size_t n = (size_t)snprintf(buf, sizeof buf, "{\"error\":{\"code\":\"");
    n = json_escape(buf, n, sizeof buf - 64, code);
    n += (size_t)snprintf(buf + n, sizeof buf - n, "\",\"message\":\"");
    n = json_escape(buf, n, sizeof buf - 64, message ? message : "");
    if (hint) {
        n += (size_t)snprintf(buf + n, sizeof buf - n, "\",\"hint\":\"");
        n = json_escape(buf, n, sizeof buf - 8, hint);
    }
    n += (size_t)snprintf(buf + n, sizeof buf - n, "\"}}");
    return pylon_buf_copy(buf, n);
}

void pylon_http_respond_error(pylon_http_exchange *ex, int status, const char *code,
                              const char *message, const char *hint)
{
    pylon_http_response res = {.status = status,
                               .body = pylon_http_error_body(code, message, hint)};
    pylon_http_respond(ex, &res);
}

const char *pylon_http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 413:
        return "Payload Too Large";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}
