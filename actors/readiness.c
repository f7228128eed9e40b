/* readiness.c — see readiness.h. */
#include "actors/readiness.h"

#include "engine/clock.h"
#include "engine/timer.h"
#include "http/router.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROBE_TIMEOUT_NS (1000 * PYLON_NS_PER_MS)
#define MAX_PROBES       64

enum { MSG_HTTP = 0, MSG_WRITER = 1, MSG_READER = 2, MSG_TIMEOUT = 3 };

typedef struct probe {
    uint64_t id; /* 0: free slot */
    pylon_http_exchange *ex;
    pylon_timer *timer;
    bool writer_ok, reader_ok;
} probe;

struct pylon_readiness {
    pylon_actor *actor;
    pylon_persistence *writer;
    pylon_readers *readers;
    atomic_bool draining;
    probe probes[MAX_PROBES];
    uint64_t next_id;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stopped;
};

/* A probe's answer coming back to the actor. */
typedef struct reply {
    pylon_msg msg;
    uint64_t id;
    bool ok;
    char reason[200];
} reply;

static void send_reply(pylon_readiness *r, int type, uint64_t id, bool ok, const char *reason)
{
    reply *m = calloc(1, sizeof *m);
    if (!m) return; /* the timeout answers instead */
    pylon_msg_init(&m->msg, (uint32_t)type, NULL);
    m->id = id;
    m->ok = ok;
    snprintf(m->reason, sizeof m->reason, "%s", reason ? reason : "");
    pylon_actor_send(r->actor, &m->msg);
}

static void answer(probe *p, int status, const char *reason)
{
    if (status == 200) {
        pylon_http_respond_json(p->ex, 200, "{\"status\":\"ready\"}");
    } else {
        json_t *j = json_pack("{s:s,s:s}", "status", "unavailable", "reason", reason);
        char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        pylon_http_respond_json(p->ex, 503, body ? body : "{\"status\":\"unavailable\"}");
        free(body);
    }
    if (p->timer) pylon_timer_cancel(p->timer);
    memset(p, 0, sizeof *p);
}

static probe *find(pylon_readiness *r, uint64_t id)
{
    for (size_t i = 0; i < MAX_PROBES; i++)
        if (r->probes[i].id == id) return &r->probes[i];
    return NULL;
}

/* ---- the probes themselves --------------------------------------------------------------- */

typedef struct write_probe {
    pylon_readiness *r;
    uint64_t id;
} write_probe;

static void writer_done(pylon_write_req *req)
{
    write_probe *w = req->ctx;
    send_reply(w->r, MSG_WRITER, w->id, req->committed,
               req->committed ? NULL : "the writer could not commit");
    free(w);
    pylon_write_req_free(req);
}

typedef struct read_probe {
    pylon_read_req req;
    pylon_readiness *r;
    uint64_t id;
} read_probe;

static void reader_run(pylon_read_req *req, const pylon_store_backend *b, pylon_store_conn *c)
{
    read_probe *p = (read_probe *)req;
    pylon_store_error err = {0};
    bool ok = b->ping(c, &err);
    send_reply(p->r, MSG_READER, p->id, ok, ok ? NULL : err.message);
    free(p);
}

static void reader_cancelled(pylon_read_req *req)
{
    read_probe *p = (read_probe *)req;
    send_reply(p->r, MSG_READER, p->id, false, "the read pool is stopping");
    free(p);
}

static void start_probe(pylon_readiness *r, pylon_http_exchange *ex)
{
    probe *p = find(r, 0);
    if (!p) { /* a flood of probes: no need to queue more work behind the others */
        pylon_http_respond_json(ex, 503,
                                "{\"status\":\"unavailable\",\"reason\":\"too many "
                                "readiness probes at once\"}");
        return;
    }
    p->id = ++r->next_id;
    p->ex = ex;
    p->timer = pylon_timer_start(r->actor, MSG_TIMEOUT, pylon_clock_now_ns() + PROBE_TIMEOUT_NS, 0,
                                 0, p->id);
    pylon_write_req *w = pylon_write_req_new(0);
    write_probe *wp = malloc(sizeof *wp);
    read_probe *rp = calloc(1, sizeof *rp);
    if (!w || !wp || !rp || !p->timer) {
        pylon_write_req_free(w);
        free(wp);
        free(rp);
        answer(p, 503, "out of memory");
        return;
    }
    wp->r = r;
    wp->id = p->id;
    w->ctx = wp;
    w->done = writer_done;
    pylon_persistence_submit(r->writer, w);
    rp->req.run = reader_run;
    rp->req.cancelled = reader_cancelled;
    rp->r = r;
    rp->id = p->id;
    pylon_readers_submit(r->readers, &rp->req);
}

static void behaviour(pylon_actor *self, pylon_msg *m)
{
    pylon_readiness *r = pylon_actor_state(self);
    if (m->type == MSG_HTTP) {
        pylon_http_msg *hm = (pylon_http_msg *)m;
        if (atomic_load(&r->draining))
            pylon_http_respond_json(hm->ex, 503,
                                    "{\"status\":\"unavailable\",\"reason\":\"shutting down\"}");
        else
            start_probe(r, hm->ex);
        pylon_msg_free(m);
        return;
    }
    if (m->type == MSG_TIMEOUT) { /* a borrowed tick: not ours to free */
        probe *p = find(r, pylon_tick_of(m)->user);
        if (p) {
            char why[120];
            snprintf(why, sizeof why, "database did not answer within 1 s (%s)",
                     !p->writer_ok && !p->reader_ok ? "writer and reader"
                     : !p->writer_ok                ? "writer"
                                                    : "reader");
            answer(p, 503, why);
        }
        return;
    }
    reply *rep = (reply *)m;
    probe *p = find(r, rep->id);
    if (p) { /* else it already timed out */
        if (!rep->ok)
            answer(p, 503, rep->reason);
        else {
            if (m->type == MSG_WRITER) p->writer_ok = true;
            if (m->type == MSG_READER) p->reader_ok = true;
            if (p->writer_ok && p->reader_ok) answer(p, 200, NULL);
        }
    }
    pylon_msg_free(m);
}

static void on_stop(pylon_actor *self)
{
    pylon_readiness *r = pylon_actor_state(self);
    for (size_t i = 0; i < MAX_PROBES; i++)
        if (r->probes[i].id) answer(&r->probes[i], 503, "shutting down");
    pthread_mutex_lock(&r->lock);
    r->stopped = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

static const pylon_actor_def READINESS = {
    .name = "readiness", .behaviour = behaviour, .on_stop = on_stop};

pylon_readiness *pylon_readiness_start(pylon_runtime *rt, pylon_persistence *writer,
                                       pylon_readers *readers)
{
    pylon_readiness *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->writer = writer;
    r->readers = readers;
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
    if (r) atomic_store(&r->draining, true);
}

void pylon_readiness_stop(pylon_readiness *r)
{
    if (!r) return;
    pylon_actor_stop(r->actor);
    pthread_mutex_lock(&r->lock);
    while (!r->stopped)
        pthread_cond_wait(&r->cond, &r->lock);
    pthread_mutex_unlock(&r->lock);
    pylon_actor_release(r->actor);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    free(r);
}
