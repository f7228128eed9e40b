/*
 * auth.h — identities and sessions: who a request is, and the session endpoints.
 *
 * Owns: the session store (PYLON_SESSION_DB, table _pylon_sessions) and its in-memory index.
 * Resolution is on the request path (any thread, usually an I/O loop) and only reads the
 * index under a read lock; every change goes through the auth actor, which writes SQLite
 * first and updates the index after the commit, so a token the client holds is always on disk.
 *
 * Order (spec/protocol.md §0.3): Authorization: Bearer wins over the session cookie; the admin
 * token (constant-time compare) → admin; a known, unexpired session token → its user;
 * anything else → anonymous (an unknown token is not an error).
 */
#ifndef PYLON_ACTORS_AUTH_H
#define PYLON_ACTORS_AUTH_H

#include "actors/identity.h"
#include "engine/runtime.h"
#include "http/http.h"
#include "http/router.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct pylon_auth pylon_auth;

typedef struct pylon_auth_options {
    const char *session_db; /* SQLite file, or ":memory:" */
    const char *admin_token;
    bool dev;
    int64_t session_ttl_s;   /* manifest auth.session.expires_in */
    const char *cookie_name; /* NULL: "<app>_session" from app_name */
    const char *app_name;
    const char *cookie_domain; /* NULL: host-only */
    int cookie_samesite;       /* 0 Lax, 1 Strict, 2 None */
    bool cookie_secure;
} pylon_auth_options;

/* An identity with its own copies of the strings (fits in a request message). */
typedef struct pylon_auth_result {
    pylon_identity id;
    char user_id[160];
    char tenant_id[160];
} pylon_auth_result;

pylon_auth *pylon_auth_start(pylon_runtime *rt, const pylon_auth_options *o, char *err,
                             size_t errlen);
/* Stops the auth actor (after the HTTP server drained); pylon_auth_free after the runtime is
 * destroyed frees the store. */
void pylon_auth_stop(pylon_auth *a);
void pylon_auth_free(pylon_auth *a);

/* The request's identity (Bearer, else cookie). Any thread. */
void pylon_auth_resolve(pylon_auth *a, const pylon_http_request *req, pylon_auth_result *out);
/* A bare token as the WebSocket listeners see it: session tokens only (protocol.md §0.3). */
void pylon_auth_resolve_session(pylon_auth *a, const char *token, pylon_auth_result *out);

/* POST /api/auth/guest, POST /api/auth/session, GET /api/auth/me, GET /api/auth/session,
 * POST /api/auth/logout, DELETE /api/auth/session. */
bool pylon_auth_routes(pylon_router *r, pylon_auth *a);

#endif
