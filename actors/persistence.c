/* persistence.c — see persistence.h. */
#include "actors/persistence.h"

#include "actors/change_tail.h"

#include "engine/clock.h"
#include "engine/log.h"
#include "engine/timer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MSG_WRITE = 1, MSG_SHARD_CKPT, MSG_IDLE_LOOK };

/* How often the writer looks whether it has gone idle after writing (see idle_look). */
#define IDLE_LOOK_NS    (250 * PYLON_NS_PER_MS)
#define CHANGE_TAIL_MAX 10000 /* events; the default retention is 100 000 */

/* A shard checkpoint to write (or, with drop, to delete): its own message kind, staged apart
 * from the write requests and committed right after them in the same run. */
typedef struct ckpt_msg {
    pylon_msg msg;
    bool drop;
    pylon_shard_row row; /* its strings and state point into data */
    char data[];
} ckpt_msg;

struct pylon_persistence {
    pylon_actor *actor;
    pylon_persistence_options o;
    pylon_store_conn *conn;
    pylon_write_req **staged; /* collected during one run, committed in on_batch_end */
    size_t nstaged, cap;
    ckpt_msg **ckpts; /* staged shard checkpoints: the latest per shard id */
    size_t nckpts, ckpts_cap;
    pylon_change *changes; /* this transaction's change-log entries, for the listener */
    size_t nchanges, changes_cap;
    _Atomic uint64_t txns, reqs;
    _Atomic uint64_t commits; /* see pylon_persistence_commits */
    _Atomic int64_t head_seq; /* last change-log seq committed */
    pylon_change_tail *tail;  /* the newest events in memory, for pulls (change_tail.h) */
    bool reset_staged;        /* this transaction empties the log (the dev test reset) */
    int64_t trimmed_upto;     /* retention: change-log rows up to here are compacted (0: not
                                 this run) */
    pylon_timer *idle_timer;  /* MSG_IDLE_LOOK every IDLE_LOOK_NS */
    uint64_t commits_seen;    /* `commits` at the previous look */
    bool wal_unchecked;       /* committed since the last idle checkpoint */
    pthread_mutex_t lock;     /* with cond: on_stop reports the final flush */
    pthread_cond_t cond;
    bool stopped;
};

pylon_write_req *pylon_write_req_new(size_t nops)
{
    pylon_write_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->ops = calloc(nops ? nops : 1, sizeof *r->ops);
    if (!r->ops) {
        free(r);
        return NULL;
    }
    r->nops = nops;
    pylon_msg_init(&r->msg, MSG_WRITE, NULL);
    return r;
}

void pylon_write_req_free(pylon_write_req *req)
{
    if (!req) return;
    for (size_t i = 0; i < req->nops; i++) {
        free(req->ops[i].id);
        free(req->ops[i].op_id);
        json_decref(req->ops[i].data);
        json_decref(req->ops[i].row);
        free(req->ops[i].row_text);
    }
    free(req->ops);
    free(req);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool commit(pylon_persistence *p, pylon_store_error *err)
{
    if (!p->o.backend->commit(p->conn, err)) return false;
    atomic_fetch_add_explicit(&p->commits, 1, memory_order_release);
    p->wal_unchecked = true;
    return true;
}

static bool note_change(pylon_persistence *p, pylon_write_op *op, json_t *fields)
{
    const pylon_store_backend *b = p->o.backend;
    pylon_change ch = {.entity = op->entity->name,
                       .row_id = op->id,
                       .kind = op->kind,
                       .fields = fields,
                       .data = op->row,
                       .data_text = op->row_text,
                       .data_len = op->row_len,
                       .ts_ms = now_ms(),
                       .op_id = op->op_id};
    if (!b->log_change(p->conn, &ch, &op->err)) return false;
    op->seq = ch.seq;
    if (p->nchanges == p->changes_cap) {
        size_t cap = p->changes_cap ? p->changes_cap * 2 : 64;
        pylon_change *nc = realloc(p->changes, cap * sizeof *nc);
        if (!nc) return pylon_store_fail(&op->err, 503, "OVERLOADED", "out of memory");
        p->changes = nc;
        p->changes_cap = cap;
    }
    ch.fields = fields ? json_incref(fields) : NULL;
    p->changes[p->nchanges++] = ch;
    return true;
}

/* One operation inside the open transaction. */
static bool run_op(pylon_persistence *p, pylon_write_req *req, pylon_write_op *op)
{
    const pylon_store_backend *b = p->o.backend;
    pylon_store_conn *c = p->conn;
    if (op->op_id) { /* sync push: an op applied before is acknowledged, not repeated */
        bool seen = false;
        if (!b->op_seen(c, op->op_id, &seen, &op->err)) return false;
        if (seen) return op->deduped = true;
    }
    if (op->kind == PYLON_CHANGE_INSERT) {
        if (!b->insert(c, op->entity, op->id, op->data, &op->row_text, &op->row_len, &op->err))
            return false;
        return note_change(p, op, NULL);
    }
    json_t *existing = NULL;
    if (!b->get(c, op->entity, op->id, &existing, &op->err)) return false;
    if (!existing)
        return pylon_store_fail(&op->err, 404, "NOT_FOUND", "%s with id \"%s\" not found",
                                op->entity->name, op->id);
    bool allowed = !req->authorize || req->authorize(req, op, existing, &op->err);
    if (allowed && op->kind == PYLON_CHANGE_DELETE) {
        /* The change log keeps the deleted row (never sent: delete events carry no data), so
         * read policies can decide who may see the delete. */
        json_decref(op->row);
        op->row = existing;
        existing = NULL;
    }
    json_decref(existing);
    if (!allowed) return false;
    if (op->kind == PYLON_CHANGE_UPDATE) {
        if (!b->update(c, op->entity, op->id, op->data, &op->row, &op->err)) return false;
        if (!op->row)
            return pylon_store_fail(&op->err, 404, "NOT_FOUND", "%s with id \"%s\" not found",
                                    op->entity->name, op->id);
        json_t *fields = json_array();
        const char *key;
        json_t *v;
        json_object_foreach(op->data, key, v) if (strcmp(key, "id") != 0)
            json_array_append_new(fields, json_string(key));
        bool ok = note_change(p, op, fields);
        json_decref(fields);
        return ok;
    }
    bool found = false;
    if (!b->remove(c, op->entity, op->id, &found, &op->err)) return false;
    if (!found)
        return pylon_store_fail(&op->err, 404, "NOT_FOUND", "%s with id \"%s\" not found",
                                op->entity->name, op->id);
    return note_change(p, op, NULL);
}

static void drop_changes_since(pylon_persistence *p, size_t mark)
{
    while (p->nchanges > mark)
        json_decref(p->changes[--p->nchanges].fields);
}

/* One request inside the group's transaction. In the fast pass (`careful` false) the ops of a
 * non-atomic request run without a savepoint each, and the first failure returns false: the
 * caller then rolls the whole group back and runs it again carefully, with a savepoint around
 * every op so one failure undoes only that op. Failures are rare under load, and two cached
 * statements per op (SAVEPOINT, RELEASE) were a tenth of the writer's time. */
static bool run_request(pylon_persistence *p, pylon_write_req *req, bool careful)
{
    const pylon_store_backend *b = p->o.backend;
    if (req->reset) { /* one op slot carries the outcome */
        req->ops[0].ok = b->reset(p->conn, &req->ops[0].err);
        p->reset_staged |= req->ops[0].ok;
        return true;
    }
    if (req->atomic) { /* all or nothing by itself, in either pass */
        pylon_store_error err;
        if (!b->savepoint(p->conn, &err)) {
            for (size_t i = 0; i < req->nops; i++)
                req->ops[i].err = err;
            return true;
        }
        size_t mark = p->nchanges;
        for (size_t i = 0; i < req->nops; i++) {
            if (!(req->ops[i].ok = run_op(p, req, &req->ops[i]))) {
                b->savepoint_rollback(p->conn);
                for (size_t j = 0; j < i; j++)
                    req->ops[j].ok = false; /* undone with it */
                drop_changes_since(p, mark);
                return true;
            }
        }
        b->savepoint_release(p->conn);
        return true;
    }
    for (size_t i = 0; i < req->nops; i++) {
        pylon_write_op *op = &req->ops[i];
        if (!careful) {
            if (!(op->ok = run_op(p, req, op))) return false;
            continue;
        }
        size_t mark = p->nchanges;
        if (!b->savepoint(p->conn, &op->err)) continue;
        if ((op->ok = run_op(p, req, op))) {
            b->savepoint_release(p->conn);
        } else {
            b->savepoint_rollback(p->conn);
            drop_changes_since(p, mark);
            if (req->stop_on_error) return true; /* the rest stay not run: ok false, no error */
        }
    }
    return true;
}

/* Forgets what a rolled-back pass left in the staged requests' results. */
static void clear_results(pylon_persistence *p)
{
    drop_changes_since(p, 0);
    for (size_t i = 0; i < p->nstaged; i++)
        for (size_t j = 0; j < p->staged[i]->nops; j++) {
            pylon_write_op *op = &p->staged[i]->ops[j];
            json_decref(op->row);
            op->row = NULL;
            free(op->row_text);
            op->row_text = NULL;
            op->ok = op->deduped = false;
            op->seq = 0;
            memset(&op->err, 0, sizeof op->err);
        }
}

/* Runs every staged request in the open transaction: the fast pass, and if an op failed in it,
 * a rollback and the careful pass in a new transaction. */
static bool run_staged(pylon_persistence *p, pylon_store_error *err)
{
    const pylon_store_backend *b = p->o.backend;
    bool fast_ok = true;
    for (size_t i = 0; i < p->nstaged && fast_ok; i++)
        fast_ok = run_request(p, p->staged[i], false);
    if (fast_ok) return true;
    b->rollback(p->conn);
    clear_results(p);
    if (!b->begin(p->conn, err)) return false;
    for (size_t i = 0; i < p->nstaged; i++)
        run_request(p, p->staged[i], true);
    return true;
}

/* Retention, in its own small transaction now and then (every ~1% of the window). */
static void trim_changes(pylon_persistence *p, int64_t head)
{
    if (head - p->trimmed_upto <= p->o.retain + p->o.retain / 100 + 1) return;
    const pylon_store_backend *b = p->o.backend;
    pylon_store_error err;
    int64_t upto = head - p->o.retain;
    bool began = b->begin(p->conn, &err);
    if (began && b->trim_changes(p->conn, p->trimmed_upto, upto, &err) && commit(p, &err)) {
        p->trimmed_upto = upto;
    } else {
        if (began) b->rollback(p->conn); /* a failed COMMIT has rolled back already */
        pylon_log_warn("db", "change-log retention failed: %s", err.message);
    }
}

/* Group commit: everything staged during this run in one transaction. */
static void commit_staged(pylon_persistence *p)
{
    if (p->nstaged == 0) return;
    const pylon_store_backend *b = p->o.backend;
    pylon_store_error err = {0};
    bool committed = false;
    p->nchanges = 0;
    if (b->begin(p->conn, &err) && run_staged(p, &err)) committed = commit(p, &err);
    if (!committed) {
        pylon_log_error("db", "write transaction failed: %s", err.message);
        for (size_t i = 0; i < p->nstaged; i++)
            for (size_t j = 0; j < p->staged[i]->nops; j++) {
                pylon_write_op *op = &p->staged[i]->ops[j];
                if (op->ok || !op->err.code) op->err = err;
                op->ok = false;
            }
    }
    int64_t head = 0;
    if (committed && p->reset_staged && p->tail)
        pylon_change_tail_clear(p->tail, atomic_load_explicit(&p->head_seq, memory_order_relaxed));
    p->reset_staged = false;
    if (committed && p->nchanges) {
        head = p->changes[p->nchanges - 1].seq;
        atomic_store_explicit(&p->head_seq, head, memory_order_relaxed);
        if (p->tail) pylon_change_tail_append(p->tail, p->changes, p->nchanges);
        if (p->o.on_changes) p->o.on_changes(p->o.listener_ctx, p->changes, p->nchanges);
    }
    for (size_t i = 0; i < p->nchanges; i++)
        json_decref(p->changes[i].fields);
    p->nchanges = 0;
    atomic_fetch_add_explicit(&p->txns, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->reqs, p->nstaged, memory_order_relaxed);
    /* Answer only now: every acknowledged write is in the committed WAL. */
    for (size_t i = 0; i < p->nstaged; i++) {
        pylon_write_req *req = p->staged[i];
        req->committed = committed;
        if (req->done)
            req->done(req);
        else
            pylon_write_req_free(req);
    }
    p->nstaged = 0;
    if (head) trim_changes(p, head); /* after the answers: nobody waits for it */
}

/* Shard checkpoints in one transaction of their own: they are never part of a write request's
 * answer, and a failure here must not fail the requests. */
static void commit_checkpoints(pylon_persistence *p)
{
    if (p->nckpts == 0) return;
    const pylon_store_backend *b = p->o.backend;
    pylon_store_error err = {0};
    bool ok = b->begin(p->conn, &err);
    for (size_t i = 0; ok && i < p->nckpts; i++) {
        ckpt_msg *c = p->ckpts[i];
        ok = c->drop ? b->shard_drop(p->conn, c->row.id, &err)
                     : b->shard_put(p->conn, &c->row, &err);
    }
    if (ok)
        ok = commit(p, &err);
    else if (err.code)
        b->rollback(p->conn);
    if (!ok) pylon_log_error("db", "shard checkpoints not written: %s", err.message);
    for (size_t i = 0; i < p->nckpts; i++)
        free(p->ckpts[i]);
    p->nckpts = 0;
}

static void stage_checkpoint(pylon_persistence *p, ckpt_msg *c)
{
    for (size_t i = 0; i < p->nckpts; i++)
        if (strcmp(p->ckpts[i]->row.id, c->row.id) == 0) { /* superseded */
            free(p->ckpts[i]);
            p->ckpts[i] = c;
            return;
        }
    if (p->nckpts == p->ckpts_cap) {
        size_t cap = p->ckpts_cap ? p->ckpts_cap * 2 : 16;
        ckpt_msg **nc = realloc(p->ckpts, cap * sizeof *nc);
        if (!nc) {
            pylon_log_error("db", "shard %s: checkpoint dropped (out of memory)", c->row.id);
            free(c);
            return;
        }
        p->ckpts = nc;
        p->ckpts_cap = cap;
    }
    p->ckpts[p->nckpts++] = c;
}

/* A writer that committed before the previous look but not since has paused: it checkpoints
 * once. While writes keep coming, SQLite's automatic checkpoint (every 1000 pages) is enough;
 * after they stop, the WAL would otherwise keep up to that many pages that every read has to
 * look up in the WAL index — reads after a burst of writes cost ~10 % more (callgrind). */
static void idle_look(pylon_persistence *p)
{
    uint64_t commits = atomic_load_explicit(&p->commits, memory_order_relaxed);
    if (commits == p->commits_seen && p->wal_unchecked) {
        p->o.backend->checkpoint(p->conn, true);
        p->wal_unchecked = false;
    }
    p->commits_seen = commits;
}

static void behaviour(pylon_actor *self, pylon_msg *m)
{
    pylon_persistence *p = pylon_actor_state(self);
    if (m->type == MSG_IDLE_LOOK) {
        idle_look(p);
        return;
    }
    if (m->type == MSG_SHARD_CKPT) {
        stage_checkpoint(p, (ckpt_msg *)m);
        return;
    }
    pylon_write_req *req = (pylon_write_req *)m;
    if (p->nstaged == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        pylon_write_req **ns = realloc(p->staged, cap * sizeof *ns);
        if (!ns) {
            for (size_t i = 0; i < req->nops; i++)
                pylon_store_fail(&req->ops[i].err, 503, "OVERLOADED", "out of memory");
            req->done ? req->done(req) : pylon_write_req_free(req);
            return;
        }
        p->staged = ns;
        p->cap = cap;
    }
    p->staged[p->nstaged++] = req;
}

static void on_batch_end(pylon_actor *self)
{
    commit_staged(pylon_actor_state(self));
    commit_checkpoints(pylon_actor_state(self));
}

/* The shutdown flush: what is staged commits, the WAL is checkpointed (TRUNCATE) and the
 * connection closes. Runs after every message queued before the stop. */
static void on_stop(pylon_actor *self)
{
    pylon_persistence *p = pylon_actor_state(self);
    if (p->idle_timer) pylon_timer_cancel(p->idle_timer);
    commit_staged(p);
    commit_checkpoints(p);
    p->o.backend->checkpoint(p->conn, false);
    p->o.backend->close(p->conn);
    p->conn = NULL;
    pthread_mutex_lock(&p->lock);
    p->stopped = true;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

/* Up to 512 requests per transaction: large enough to amortise the commit, small enough that
 * the first request in a burst is not kept waiting long. */
static const pylon_actor_def PERSISTENCE_DEF = {.name = "persistence",
                                                .behaviour = behaviour,
                                                .on_batch_end = on_batch_end,
                                                .on_stop = on_stop,
                                                .batch = 512,
                                                .track_pending = true};

pylon_persistence *pylon_persistence_start(pylon_runtime *rt, const pylon_persistence_options *o,
                                           pylon_store_error *err)
{
    pylon_persistence *p = calloc(1, sizeof *p);
    if (!p) {
        pylon_store_fail(err, 503, "OVERLOADED", "out of memory");
        return NULL;
    }
    p->o = *o;
    if (!p->o.queue_max) p->o.queue_max = 10000;
    if (p->o.retain <= 0) p->o.retain = 100000;
    p->conn = o->backend->open(o->target, true, o->manifest, err);
    if (!p->conn) {
        free(p);
        return NULL;
    }
    int64_t head = 0;
    if (!o->backend->head_seq(p->conn, &head, err)) {
        o->backend->close(p->conn);
        free(p);
        return NULL;
    }
    atomic_init(&p->head_seq, head);
    /* Kept within the retention, so nothing in the tail is ever compacted (change_tail.h).
     * Without it (out of memory) every pull reads the database. */
    p->tail = pylon_change_tail_new(
        (size_t)(p->o.retain < CHANGE_TAIL_MAX ? p->o.retain : CHANGE_TAIL_MAX), head);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->actor = pylon_actor_spawn(rt, &PERSISTENCE_DEF, p);
    /* Without the timer (out of memory) only the idle checkpoint is lost. */
    p->idle_timer = pylon_timer_start(p->actor, MSG_IDLE_LOOK, pylon_clock_now_ns() + IDLE_LOOK_NS,
                                      IDLE_LOOK_NS, 0, 0);
    return p;
}

/* A request that reached the actor after it stopped is answered, not lost. */
static void undelivered(pylon_msg *m)
{
    pylon_write_req *req = (pylon_write_req *)m;
    for (size_t i = 0; i < req->nops; i++) {
        req->ops[i].ok = false;
        pylon_store_fail(&req->ops[i].err, 503, "SHUTTING_DOWN",
                         "The server is shutting down: retry on another instance");
    }
    if (req->done)
        req->done(req);
    else
        pylon_write_req_free(req);
}

void pylon_persistence_submit(pylon_persistence *p, pylon_write_req *req)
{
    pylon_msg_init(&req->msg, MSG_WRITE, undelivered);
    pylon_actor_send(p->actor, &req->msg);
}

bool pylon_persistence_busy(const pylon_persistence *p)
{
    return pylon_actor_pending(p->actor) >= p->o.queue_max;
}

unsigned pylon_persistence_queue_depth(const pylon_persistence *p)
{
    return pylon_actor_pending(p->actor);
}

double pylon_persistence_mean_batch(const pylon_persistence *p)
{
    uint64_t t = atomic_load_explicit(&((pylon_persistence *)p)->txns, memory_order_relaxed);
    uint64_t r = atomic_load_explicit(&((pylon_persistence *)p)->reqs, memory_order_relaxed);
    return t ? (double)r / (double)t : 0.0;
}

const _Atomic uint64_t *pylon_persistence_commits(const pylon_persistence *p)
{
    return &p->commits;
}

pylon_change_tail *pylon_persistence_tail(const pylon_persistence *p)
{
    return p->tail;
}

int64_t pylon_persistence_head_seq(const pylon_persistence *p)
{
    return atomic_load_explicit(&((pylon_persistence *)p)->head_seq, memory_order_relaxed);
}

void pylon_persistence_stop(pylon_persistence *p)
{
    if (!p) return;
    /* Writes queued after this point find a stopped actor and are released undelivered;
     * callers stop submitting first (the HTTP server has drained). */
    pylon_actor_stop(p->actor);
    pthread_mutex_lock(&p->lock);
    while (!p->stopped)
        pthread_cond_wait(&p->cond, &p->lock);
    pthread_mutex_unlock(&p->lock);
    pylon_actor_release(p->actor);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p->staged);
    free(p->ckpts);
    free(p->changes);
    pylon_change_tail_free(p->tail);
    free(p);
}

/* One allocation holding the row and copies of everything it points to. */
static void send_checkpoint(pylon_persistence *p, const pylon_shard_row *row, bool drop)
{
    size_t il = strlen(row->id) + 1, kl = row->kind ? strlen(row->kind) + 1 : 1;
    size_t cl = row->config ? strlen(row->config) + 1 : 1;
    size_t ol = row->options ? strlen(row->options) + 1 : 1;
    ckpt_msg *c = malloc(sizeof *c + il + kl + cl + ol + row->len);
    if (!c) {
        pylon_log_error("db", "shard %s: checkpoint dropped (out of memory)", row->id);
        return;
    }
    char *d = c->data;
    c->drop = drop;
    c->row = *row;
    c->row.id = memcpy(d, row->id, il);
    c->row.kind = memcpy(d += il, row->kind ? row->kind : "", kl);
    c->row.config = memcpy(d += kl, row->config ? row->config : "", cl);
    c->row.options = memcpy(d += cl, row->options ? row->options : "", ol);
    c->row.state = row->len ? memcpy(d += ol, row->state, row->len) : NULL;
    pylon_msg_init(&c->msg, MSG_SHARD_CKPT, NULL); /* undelivered after the stop: just freed */
    pylon_actor_send(p->actor, &c->msg);
}

void pylon_persistence_shard_save(pylon_persistence *p, const pylon_shard_row *row)
{
    send_checkpoint(p, row, false);
}

void pylon_persistence_shard_drop(pylon_persistence *p, const char *id)
{
    send_checkpoint(p, &(pylon_shard_row){.id = id}, true);
}
