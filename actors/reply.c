/* reply.c — see reply.h. */
#include "actors/reply.h"

#include <stdlib.h>
#include <string.h>

void pylon_reply_json(pylon_http_exchange *ex, int status, json_t *j, const char *headers)
{
    char *body = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    if (!body) {
        pylon_http_respond_error(ex, 503, "OVERLOADED", "Out of memory", "retry in a moment");
        return;
    }
    pylon_http_response res = {
        .status = status, .headers = headers, .body = pylon_buf_take(body, strlen(body))};
    pylon_http_respond(ex, &res);
}

bool pylon_reply_if_writer_busy(const pylon_persistence *writer, pylon_http_exchange *ex)
{
    if (!pylon_persistence_busy(writer)) return false;
    pylon_http_response res = {
        .status = 503,
        .headers = "Retry-After: 1\r\n",
        .body =
            pylon_http_error_body("OVERLOADED", "Too many writes are queued", "retry in a moment")};
    pylon_http_respond(ex, &res);
    return true;
}
