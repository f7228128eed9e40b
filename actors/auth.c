/* auth.c — see auth.h. */
#include "actors/auth.h"

#include "actors/ids.h"
#include "actors/json_load.h"
#include "actors/reply.h"
#include "engine/hash.h"
#include "engine/log.h"

#include <ctype.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define BUCKETS    4096u
#define ADMIN_USER "__admin__"

typedef struct session {
    struct session *next;
    char token[80];
    char user_id[160];
    char tenant_id[160];
    int64_t expires_at; /* unix seconds; 0 = never */
    int64_t created_at;
} session;

enum { MSG_CREATE = 1, MSG_REVOKE = 2 };

/* A change to the store, done by the actor, then answered on the exchange. */
typedef struct auth_msg {
    pylon_msg msg;
    pylon_http_exchange *ex;
    session s;       /* MSG_CREATE: the new session */
    bool guest;      /* answer shape of /api/auth/guest */
    bool set_cookie; /* the request came from a browser (Origin) */
    char token[80];  /* MSG_REVOKE: the token to drop ("" = none) */
} auth_msg;

struct pylon_auth {
    pylon_auth_options o;
    char cookie_name[96];
    pthread_rwlock_t lock; /* guards the index */
    session *buckets[BUCKETS];
    sqlite3 *db; /* the auth actor's only */
    pylon_actor *actor;
};

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

static uint32_t hash(const char *s)
{
    return pylon_hash_str(s) % BUCKETS;
}

/* ---- the index (lock held by the caller) ------------------------------------------------- */

static session *index_find(pylon_auth *a, const char *token)
{
    for (session *s = a->buckets[hash(token)]; s; s = s->next)
        if (strcmp(s->token, token) == 0) return s;
    return NULL;
}

static void index_put(pylon_auth *a, const session *src)
{
    session *s = malloc(sizeof *s);
    if (!s) return;
    *s = *src;
    uint32_t b = hash(s->token);
    s->next = a->buckets[b];
    a->buckets[b] = s;
}

static void index_drop(pylon_auth *a, const char *token)
{
    session **pp = &a->buckets[hash(token)];
    while (*pp) {
        if (strcmp((*pp)->token, token) == 0) {
            session *dead = *pp;
            *pp = dead->next;
            free(dead);
            return;
        }
        pp = &(*pp)->next;
    }
}

/* ---- resolution -------------------------------------------------------------------------- */

static void anonymous(pylon_auth_result *out)
{
    memset(out, 0, sizeof *out);
}

static bool is_admin_token(const pylon_auth *a, const char *t)
{
    if (!a->o.admin_token) return false;
    size_t n = strlen(a->o.admin_token);
    return strlen(t) == n && CRYPTO_memcmp(t, a->o.admin_token, n) == 0;
}

void pylon_auth_resolve_session(pylon_auth *a, const char *token, pylon_auth_result *out)
{
    anonymous(out);
    if (!token || strncmp(token, "pylon_", 6) != 0) return;
    pthread_rwlock_rdlock(&a->lock);
    session *s = index_find(a, token);
    if (s && (s->expires_at == 0 || now_s() < s->expires_at)) {
        snprintf(out->user_id, sizeof out->user_id, "%s", s->user_id);
        snprintf(out->tenant_id, sizeof out->tenant_id, "%s", s->tenant_id);
        out->id.user_id = out->user_id;
        out->id.tenant_id = out->tenant_id[0] ? out->tenant_id : NULL;
        out->id.is_guest = strncmp(s->user_id, "guest_", 6) == 0;
    }
    pthread_rwlock_unlock(&a->lock);
}

static void cookie_value(const char *cookies, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    out[0] = '\0';
    for (const char *p = cookies; p && *p;) {
        while (*p == ' ' || *p == ';')
            p++;
        const char *e = strchr(p, ';');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            snprintf(out, cap, "%.*s", (int)(len - nl - 1), p + nl + 1);
            return;
        }
        p = e;
    }
}

/* The token the request carries: Bearer first, else the session cookie. */
static void request_token(pylon_auth *a, const pylon_http_request *req, char *out, size_t cap)
{
    const char *auth = pylon_http_header_get(req, "authorization");
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        snprintf(out, cap, "%s", auth + 7);
        return;
    }
    cookie_value(pylon_http_header_get(req, "cookie"), a->cookie_name, out, cap);
}

void pylon_auth_resolve(pylon_auth *a, const pylon_http_request *req, pylon_auth_result *out)
{
    char token[256];
    request_token(a, req, token, sizeof token);
    anonymous(out);
    if (!token[0]) return;
    if (is_admin_token(a, token)) {
        static const char *const admin_roles[] = {"admin"};
        snprintf(out->user_id, sizeof out->user_id, ADMIN_USER);
        out->id.user_id = out->user_id;
        out->id.is_admin = true;
        out->id.roles = admin_roles;
        out->id.nroles = 1;
        return;
    }
    pylon_auth_resolve_session(a, token, out);
}

/* ---- answers ----------------------------------------------------------------------------- */

static const char *const SAMESITE[] = {"Lax", "Strict", "None"};

/* Set-Cookie per backend.md §5.7; an empty token clears the cookie. */
static void cookie_header(const pylon_auth *a, const char *token, char *out, size_t cap)
{
    char domain[200] = "";
    if (a->o.cookie_domain) snprintf(domain, sizeof domain, "; Domain=%s", a->o.cookie_domain);
    snprintf(out, cap, "Set-Cookie: %s=%s; Path=/%s; HttpOnly%s; SameSite=%s; Max-Age=%lld\r\n",
             a->cookie_name, token, domain, a->o.cookie_secure ? "; Secure" : "",
             SAMESITE[a->o.cookie_samesite], token[0] ? (long long)a->o.session_ttl_s : 0LL);
}

/* ---- the actor: the only writer of the session store ------------------------------------ */

static bool store_session(pylon_auth *a, const session *s)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(a->db,
                                "INSERT INTO _pylon_sessions (token, user_id, expires_at, "
                                "created_at, device, tenant_id) VALUES (?, ?, ?, ?, NULL, ?)",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, s->token, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, s->user_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, s->expires_at);
        sqlite3_bind_int64(st, 4, s->created_at);
        if (s->tenant_id[0]) sqlite3_bind_text(st, 5, s->tenant_id, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE;
}

static void behaviour(pylon_actor *self, pylon_msg *m)
{
    pylon_auth *a = pylon_actor_state(self);
    auth_msg *am = (auth_msg *)m;
    if (m->type == MSG_CREATE) {
        if (!store_session(a, &am->s)) {
            pylon_log_error("auth", "cannot store a session: %s", sqlite3_errmsg(a->db));
            pylon_http_respond_error(am->ex, 503, "SESSION_STORE_FAILED",
                                     "The session could not be saved", "retry shortly");
            pylon_msg_free(m);
            return;
        }
        pthread_rwlock_wrlock(&a->lock);
        index_put(a, &am->s);
        pthread_rwlock_unlock(&a->lock);
        char cookie[512] = "";
        if (am->set_cookie) cookie_header(a, am->s.token, cookie, sizeof cookie);
        json_t *j = am->guest
                        ? json_pack("{s:s,s:s,s:b}", "token", am->s.token, "user_id", am->s.user_id,
                                    "guest", 1)
                        : json_pack("{s:s,s:s}", "token", am->s.token, "user_id", am->s.user_id);
        pylon_reply_json(am->ex, 201, j, cookie[0] ? cookie : NULL);
    } else {
        if (am->token[0]) {
            sqlite3_stmt *st = NULL;
            if (sqlite3_prepare_v2(a->db, "DELETE FROM _pylon_sessions WHERE token = ?", -1, &st,
                                   NULL) == SQLITE_OK) {
                sqlite3_bind_text(st, 1, am->token, -1, SQLITE_STATIC);
                sqlite3_step(st);
            }
            sqlite3_finalize(st);
            pthread_rwlock_wrlock(&a->lock);
            index_drop(a, am->token);
            pthread_rwlock_unlock(&a->lock);
        }
        char cookie[512];
        cookie_header(a, "", cookie, sizeof cookie);
        pylon_reply_json(am->ex, 200, json_pack("{s:b}", "revoked", 1), cookie);
    }
    pylon_msg_free(m);
}

static const pylon_actor_def AUTH_DEF = {.name = "auth", .behaviour = behaviour};

/* ---- endpoints (inline on the loop; changes go to the actor) ----------------------------- */

static void send_create(pylon_auth *a, pylon_http_exchange *ex, const char *user_id, bool guest)
{
    auth_msg *am = calloc(1, sizeof *am);
    if (!am || !pylon_token_new("pylon_", 32, am->s.token, sizeof am->s.token)) {
        free(am);
        pylon_http_respond_error(ex, 503, "OVERLOADED", "Cannot create a session now", NULL);
        return;
    }
    pylon_msg_init(&am->msg, MSG_CREATE, NULL);
    am->ex = ex;
    am->guest = guest;
    /* Only a guest session is the browser's own: a minted one (admin for u1) must not switch
     * the caller's browser to u1. */
    am->set_cookie = guest && pylon_http_header_get(pylon_http_request_of(ex), "origin") != NULL;
    snprintf(am->s.user_id, sizeof am->s.user_id, "%s", user_id);
    am->s.created_at = now_s();
    am->s.expires_at = a->o.session_ttl_s > 0 ? am->s.created_at + a->o.session_ttl_s : 0;
    pylon_actor_send(a->actor, &am->msg);
}

static void guest(pylon_http_exchange *ex, void *ctx)
{
    char uid[64];
    if (!pylon_token_new("guest_", 16, uid, sizeof uid)) {
        pylon_http_respond_error(ex, 503, "OVERLOADED", "Cannot create a session now", NULL);
        return;
    }
    send_create(ctx, ex, uid, true);
}

static void mint_session(pylon_http_exchange *ex, void *ctx)
{
    pylon_auth *a = ctx;
    const pylon_http_request *req = pylon_http_request_of(ex);
    pylon_auth_result who;
    pylon_auth_resolve(a, req, &who);
    if (!a->o.dev && !who.id.is_admin) {
        pylon_http_respond_error(ex, 403, "FORBIDDEN",
                                 "this endpoint requires admin auth (PYLON_ADMIN_TOKEN)",
                                 "outside dev mode, sessions are minted by your backend with "
                                 "the admin token");
        return;
    }
    json_error_t jerr;
    json_t *body = pylon_json_loadb((const char *)req->body, req->body_len, 0, &jerr);
    if (!body) {
        pylon_http_respond_error(ex, 400, "INVALID_JSON", "Invalid request body", jerr.text);
        return;
    }
    json_t *uid = json_object_get(body, "user_id");
    if (!json_is_string(uid) || json_string_length(uid) == 0 || json_string_length(uid) > 150) {
        json_decref(body);
        pylon_http_respond_error(ex, 400, "MISSING_USER_ID",
                                 "user_id is required (a non-empty string of at most 150 bytes)",
                                 "send {\"user_id\":\"u_1\"}");
        return;
    }
    send_create(a, ex, json_string_value(uid), false);
    json_decref(body);
}

static json_t *identity_json(const pylon_identity *id)
{
    json_t *roles = json_array();
    for (size_t i = 0; i < id->nroles; i++)
        json_array_append_new(roles, json_string(id->roles[i]));
    json_t *j =
        json_pack("{s:o,s:b,s:o}", "user_id", id->user_id ? json_string(id->user_id) : json_null(),
                  "is_admin", id->is_admin, "roles", roles);
    if (id->tenant_id) json_object_set_new(j, "tenant_id", json_string(id->tenant_id));
    if (id->is_guest) json_object_set_new(j, "is_guest", json_true());
    return j;
}

static void me(pylon_http_exchange *ex, void *ctx)
{
    pylon_auth_result who;
    pylon_auth_resolve(ctx, pylon_http_request_of(ex), &who);
    pylon_reply_json(ex, 200, identity_json(&who.id), NULL);
}

static void session_info(pylon_http_exchange *ex, void *ctx)
{
    pylon_auth_result who;
    pylon_auth_resolve(ctx, pylon_http_request_of(ex), &who);
    pylon_reply_json(ex, 200, json_pack("{s:o,s:n}", "session", identity_json(&who.id), "user"),
                     NULL);
}

static void logout(pylon_http_exchange *ex, void *ctx)
{
    pylon_auth *a = ctx;
    auth_msg *am = calloc(1, sizeof *am);
    if (!am) {
        pylon_http_respond_error(ex, 503, "OVERLOADED", "Out of memory", NULL);
        return;
    }
    pylon_msg_init(&am->msg, MSG_REVOKE, NULL);
    am->ex = ex;
    request_token(a, pylon_http_request_of(ex), am->token, sizeof am->token);
    if (is_admin_token(a, am->token) || strncmp(am->token, "pylon_", 6) != 0) am->token[0] = '\0';
    pylon_actor_send(a->actor, &am->msg);
}

bool pylon_auth_routes(pylon_router *r, pylon_auth *a)
{
    return pylon_router_add_inline(r, PYLON_M_POST, "/api/auth/guest", guest, a) &&
           pylon_router_add_inline(r, PYLON_M_POST, "/api/auth/session", mint_session, a) &&
           pylon_router_add_inline(r, PYLON_M_GET, "/api/auth/session", session_info, a) &&
           pylon_router_add_inline(r, PYLON_M_DELETE, "/api/auth/session", logout, a) &&
           pylon_router_add_inline(r, PYLON_M_POST, "/api/auth/logout", logout, a) &&
           pylon_router_add_inline(r, PYLON_M_GET, "/api/auth/me", me, a);
}

/* ---- lifecycle --------------------------------------------------------------------------- */

pylon_auth *pylon_auth_start(pylon_runtime *rt, const pylon_auth_options *o, char *err,
                             size_t errlen)
{
    pylon_auth *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->o = *o;
    if (o->cookie_name) {
        snprintf(a->cookie_name, sizeof a->cookie_name, "%s", o->cookie_name);
    } else { /* "<app>_session", with anything outside [A-Za-z0-9_-] made '_' */
        const char *app = o->app_name && *o->app_name ? o->app_name : "pylon";
        size_t n = 0;
        for (; app[n] && n < sizeof a->cookie_name - 9; n++)
            a->cookie_name[n] = isalnum((unsigned char)app[n]) || app[n] == '-' ? app[n] : '_';
        snprintf(a->cookie_name + n, sizeof a->cookie_name - n, "_session");
    }
    pthread_rwlock_init(&a->lock, NULL);
    char *msg = NULL;
    if (sqlite3_open_v2(o->session_db, &a->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK ||
        sqlite3_exec(a->db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;"
                     "CREATE TABLE IF NOT EXISTS _pylon_sessions (token TEXT PRIMARY KEY, "
                     "user_id TEXT, expires_at INTEGER, created_at INTEGER, device TEXT, "
                     "tenant_id TEXT);"
                     "CREATE INDEX IF NOT EXISTS _pylon_sessions_user ON _pylon_sessions(user_id);"
                     "CREATE INDEX IF NOT EXISTS _pylon_sessions_exp ON "
                     "_pylon_sessions(expires_at);",
                     NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open the session store PYLON_SESSION_DB=%s: %s",
                 o->session_db, msg ? msg : (a->db ? sqlite3_errmsg(a->db) : "out of memory"));
        sqlite3_free(msg);
        sqlite3_close(a->db);
        free(a);
        return NULL;
    }
    /* Load the live sessions; expired ones are dropped from disk on the way. */
    sqlite3_exec(a->db,
                 "DELETE FROM _pylon_sessions WHERE expires_at > 0 AND expires_at <= "
                 "CAST(strftime('%s','now') AS INTEGER)",
                 NULL, NULL, NULL);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(a->db,
                           "SELECT token, user_id, expires_at, created_at, tenant_id FROM "
                           "_pylon_sessions",
                           -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            session s = {0};
            snprintf(s.token, sizeof s.token, "%s", (const char *)sqlite3_column_text(st, 0));
            const unsigned char *u = sqlite3_column_text(st, 1);
            snprintf(s.user_id, sizeof s.user_id, "%s", u ? (const char *)u : "");
            s.expires_at = sqlite3_column_int64(st, 2);
            s.created_at = sqlite3_column_int64(st, 3);
            const unsigned char *t = sqlite3_column_text(st, 4);
            if (t) snprintf(s.tenant_id, sizeof s.tenant_id, "%s", (const char *)t);
            index_put(a, &s);
        }
    }
    sqlite3_finalize(st);
    a->actor = pylon_actor_spawn(rt, &AUTH_DEF, a);
    return a;
}

void pylon_auth_stop(pylon_auth *a)
{
    if (!a) return;
    /* Called after the HTTP server drained: no request can reach the actor any more. The
     * actor's state is `a`, freed only once the runtime has run the stop (main destroys the
     * runtime, which waits for the workers, after this call). */
    pylon_actor_stop(a->actor);
    pylon_actor_release(a->actor);
}

void pylon_auth_free(pylon_auth *a)
{
    if (!a) return;
    for (size_t i = 0; i < BUCKETS; i++) {
        session *s = a->buckets[i];
        while (s) {
            session *n = s->next;
            free(s);
            s = n;
        }
    }
    sqlite3_close(a->db);
    pthread_rwlock_destroy(&a->lock);
    free(a);
}
