/*
 * reply.h — answering an HTTP exchange with a jansson value (every JSON-speaking handler of
 * actors/ and sync/ answers this way).
 */
#ifndef PYLON_ACTORS_REPLY_H
#define PYLON_ACTORS_REPLY_H

#include "actors/persistence.h"
#include "http/http.h"

#include <jansson.h>

/* Takes the reference to `j` (NULL answers 503: the value could not be built). `headers` as in
 * pylon_http_response (extra "Name: value\r\n" lines, or NULL). Any thread. */
void pylon_reply_json(pylon_http_exchange *ex, int status, json_t *j, const char *headers);

/* The writers' back-pressure: when the persistence queue is full, answers 503 OVERLOADED with
 * Retry-After and returns true (the caller stops); else returns false. */
bool pylon_reply_if_writer_busy(const pylon_persistence *writer, pylon_http_exchange *ex);

#endif
