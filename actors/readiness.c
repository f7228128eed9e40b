/* readiness.c — see readiness.h. */
#include "actors/readiness.h"

#include "engine/log.h"
#include "http/router.h"

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MSG_READYZ = 1, MSG_FLUSH = 2 };

struct pylon_readiness {
    pylon_actor *actor;
    sqlite3 *writer, *reader;
    atomic_bool draining;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool flushed;
};

static bool probe(sqlite3 *db, char *why, size_t cap)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT 1", -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW) return true;
    snprintf(why, cap, "database did not answer: %s", sqlite3_errmsg(db));
    return false;
}

static void behaviour(pylon_actor *self, pylon_msg *m)
{
    pylon_readiness *r = pylon_actor_state(self);
    if (m->type == MSG_FLUSH) {
        int logged = 0, ckpt = 0;
        int rc = sqlite3_wal_checkpoint_v2(r->writer, NULL, SQLITE_CHECKPOINT_TRUNCATE, &logged,
                                           &ckpt);
        if (rc != SQLITE_OK)
            pylon_log_warn("db", "WAL checkpoint failed: %s", sqlite3_errmsg(r->writer));
        sqlite3_close(r->reader);
        sqlite3_close(r->writer);
        r->reader = r->writer = NULL;
        pthread_mutex_lock(&r->lock);
        r->flushed = true;
        pthread_cond_signal(&r->cond);
        pthread_mutex_unlock(&r->lock);
        pylon_msg_free(m);
        return;
    }
    pylon_http_msg *hm = (pylon_http_msg *)m;
    char why[256];
    if (atomic_load(&r->draining))
        pylon_http_respond_json(hm->ex, 503,
                                "{\"status\":\"unavailable\",\"reason\":\"shutting down\"}");
    else if (!r->writer || !probe(r->writer, why, sizeof why) || !probe(r->reader, why, sizeof why)) {
        if (!r->writer) snprintf(why, sizeof why, "database closed");
        json_t *j = json_pack("{s:s,s:s}", "status", "unavailable", "reason", why);
        char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
        pylon_http_respond_json(hm->ex, 503, body ? body : "{\"status\":\"unavailable\"}");
        free(body);
        json_decref(j);
    } else {
        pylon_http_respond_json(hm->ex, 200, "{\"status\":\"ready\"}");
    }
    pylon_msg_free(m);
}

static const pylon_actor_def READINESS = {.name = "readiness", .behaviour = behaviour};

static sqlite3 *open_db(const char *path, int flags, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open the database PYLON_DB_PATH=%s: %s", path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 1000); /* /readyz answers within about a second */
    return db;
}

pylon_readiness *pylon_readiness_start(pylon_runtime *rt, const char *db_path, char *err,
                                       size_t errlen)
{
    pylon_readiness *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->writer = open_db(db_path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, err, errlen);
    if (!r->writer) {
        free(r);
        return NULL;
    }
    char *msg = NULL;
    if (sqlite3_exec(r->writer, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL,
                     &msg) != SQLITE_OK) {
        snprintf(err, errlen, "cannot switch %s to WAL mode: %s", db_path, msg ? msg : "?");
        sqlite3_free(msg);
        sqlite3_close(r->writer);
        free(r);
        return NULL;
    }
    r->reader = open_db(db_path, SQLITE_OPEN_READONLY, err, errlen);
    if (!r->reader) {
        sqlite3_close(r->writer);
        free(r);
        return NULL;
    }
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    r->actor = pylon_actor_spawn(rt, &READINESS, r);
    return r;
}

pylon_actor *pylon_readiness_actor(pylon_readiness *r)
{
    return r->actor;
}

void pylon_readiness_set_draining(pylon_readiness *r)
{
    atomic_store(&r->draining, true);
}

void pylon_readiness_stop(pylon_readiness *r)
{
    if (!r) return;
    pylon_msg *m = malloc(sizeof *m);
    if (m) {
        pylon_msg_init(m, MSG_FLUSH, NULL);
        pylon_actor_send(r->actor, m);
        pthread_mutex_lock(&r->lock);
        while (!r->flushed) pthread_cond_wait(&r->cond, &r->lock);
        pthread_mutex_unlock(&r->lock);
    }
    pylon_actor_stop(r->actor);
    pylon_actor_release(r->actor);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    free(r);
}
