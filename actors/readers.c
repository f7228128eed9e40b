/* readers.c — see readers.h. */
#include "actors/readers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

typedef struct reader {
    pylon_actor *actor;
    pylon_store_conn *conn;
    const pylon_store_backend *b;
    struct pylon_readers *pool;
    const _Atomic uint64_t *writer_commits; /* NULL: a snapshot per read */
    bool in_snapshot;                       /* a read transaction is open */
    uint64_t snapshot_commits;              /* *writer_commits, read before the snapshot began */
} reader;

struct pylon_readers {
    reader *r;
    unsigned n;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned stopped;
};

/* One snapshot serves the requests of a run while the writer commits nothing: a read
 * transaction per request cost two file-lock system calls and the WAL read-mark dance. A
 * request sees every write answered before it was sent: that answer came after the writer
 * counted its commit, so if the count still equals the one read before this snapshot began,
 * the commit precedes the snapshot; if it moved, a new snapshot is taken first. */
static void behaviour(pylon_actor *self, pylon_msg *m)
{
    reader *rd = pylon_actor_state(self);
    pylon_read_req *req = (pylon_read_req *)m;
    if (rd->writer_commits && rd->b->read_begin) {
        uint64_t now = atomic_load_explicit(rd->writer_commits, memory_order_acquire);
        if (rd->in_snapshot && now != rd->snapshot_commits) {
            rd->b->read_end(rd->conn);
            rd->in_snapshot = false;
        }
        if (!rd->in_snapshot) {
            rd->snapshot_commits = now;
            rd->in_snapshot = rd->b->read_begin(rd->conn);
        }
    }
    req->run(req, rd->b, rd->conn);
}

/* The snapshot never outlives a run: an idle reader holds no read transaction (which would
 * keep the WAL from being checkpointed back to its start). */
static void batch_end(pylon_actor *self)
{
    reader *rd = pylon_actor_state(self);
    if (rd->in_snapshot) {
        rd->b->read_end(rd->conn);
        rd->in_snapshot = false;
    }
}

static void on_stop(pylon_actor *self)
{
    reader *rd = pylon_actor_state(self);
    batch_end(self);
    rd->b->close(rd->conn);
    rd->conn = NULL;
    pthread_mutex_lock(&rd->pool->lock);
    rd->pool->stopped++;
    pthread_cond_signal(&rd->pool->cond);
    pthread_mutex_unlock(&rd->pool->lock);
}

static const pylon_actor_def READER_DEF = {.name = "reader",
                                           .behaviour = behaviour,
                                           .on_batch_end = batch_end,
                                           .on_stop = on_stop,
                                           .track_pending = true};

static void undelivered(pylon_msg *m)
{
    pylon_read_req *req = (pylon_read_req *)m;
    if (req->cancelled) {
        req->cancelled(req);
        return;
    }
    if (req->ex)
        pylon_http_respond_error(req->ex, 503, "SHUTTING_DOWN", "The server is shutting down",
                                 "retry on another instance");
    free(req);
}

pylon_readers *pylon_readers_start(pylon_runtime *rt, const pylon_store_backend *b,
                                   const char *target, const pylon_manifest *m, unsigned n,
                                   const _Atomic uint64_t *writer_commits, pylon_store_error *err)
{
    pylon_readers *p = calloc(1, sizeof *p);
    if (!p || !(p->r = calloc(n, sizeof *p->r))) {
        free(p);
        pylon_store_fail(err, 503, "OVERLOADED", "out of memory");
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    for (unsigned i = 0; i < n; i++) {
        reader *rd = &p->r[i];
        rd->b = b;
        rd->pool = p;
        rd->writer_commits = writer_commits;
        rd->conn = b->open(target, false, m, err);
        if (!rd->conn) {
            p->n = i;
            pylon_readers_stop(p);
            return NULL;
        }
        rd->actor = pylon_actor_spawn(rt, &READER_DEF, rd);
        p->n = i + 1;
    }
    return p;
}

void pylon_readers_submit(pylon_readers *p, pylon_read_req *req)
{
    pylon_msg_init(&req->msg, 0, undelivered);
    reader *best = &p->r[0];
    uint32_t least = pylon_actor_pending(best->actor);
    for (unsigned i = 1; i < p->n && least > 0; i++) {
        uint32_t q = pylon_actor_pending(p->r[i].actor);
        if (q < least) {
            least = q;
            best = &p->r[i];
        }
    }
    pylon_actor_send(best->actor, &req->msg);
}

void pylon_readers_stop(pylon_readers *p)
{
    if (!p) return;
    for (unsigned i = 0; i < p->n; i++)
        pylon_actor_stop(p->r[i].actor);
    pthread_mutex_lock(&p->lock);
    while (p->stopped < p->n)
        pthread_cond_wait(&p->cond, &p->lock);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->n; i++)
        pylon_actor_release(p->r[i].actor);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p->r);
    free(p);
}
