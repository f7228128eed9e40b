/*
 * http.h — what request handlers see: the request, the response, and how to answer.
 *
 * Owns: the handler-facing types only. Sockets, parsing and writing live in server.c/conn.c;
 * routing in router.h; CORS, CSRF and rate limits in guard.h.
 *
 * An exchange is one request and its future response. The connection that received it owns
 * it until a handler answers with pylon_http_respond(), which may be called from any thread
 * (an actor's worker posts the answer back to the connection's loop). Exactly one answer per
 * exchange; after it the exchange must not be touched. If the client went away meanwhile the
 * answer is discarded and nothing leaks.
 */
#ifndef PYLON_HTTP_HTTP_H
#define PYLON_HTTP_HTTP_H

#include "engine/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pylon_http_header {
    const char *name; /* NUL-terminated, as received */
    const char *value;
} pylon_http_header;

typedef struct pylon_http_request {
    int method;              /* llhttp_method_t */
    const char *method_name; /* "GET", ... */
    const char *url;         /* raw target: path and query */
    const char *path;        /* raw path, not percent-decoded */
    const char *query;       /* after '?', or "" */
    pylon_http_header *headers;
    size_t nheaders;
    const uint8_t *body;
    size_t body_len;
    const char *client_ip; /* after PYLON_TRUST_PROXY_HOPS */
    bool peer_is_loopback; /* the socket peer itself (not X-Forwarded-For) */
    int listener;          /* pylon_listener_kind the request came in on */
} pylon_http_request;

typedef struct pylon_http_exchange pylon_http_exchange;

typedef struct pylon_http_response {
    int status;
    const char *content_type; /* NULL: application/json */
    const char *headers;      /* extra "Name: value\r\n" lines (copied), or NULL */
    pylon_buf *body;          /* consumed (released by the server), or NULL */
} pylon_http_response;

const pylon_http_request *pylon_http_request_of(const pylon_http_exchange *ex);

/* Case-insensitive header lookup; NULL when absent. */
const char *pylon_http_header_get(const pylon_http_request *req, const char *name);

/* Any thread, once per exchange. Takes ownership of res->body. */
void pylon_http_respond(pylon_http_exchange *ex, const pylon_http_response *res);

/* Shorthands. `json` is copied. */
void pylon_http_respond_json(pylon_http_exchange *ex, int status, const char *json);
/* The error envelope {"error":{"code","message","hint"?}}; strings are JSON-escaped here. */
void pylon_http_respond_error(pylon_http_exchange *ex, int status, const char *code,
                              const char *message, const char *hint);
/* Same envelope as a buffer, for callers that add headers (e.g. Retry-After). */
pylon_buf *pylon_http_error_body(const char *code, const char *message, const char *hint);

const char *pylon_http_status_text(int status);

#endif
