/* shard.c — see shard.h. */
#include "shards/shard.h"

#include "engine/clock.h"
#include "engine/log.h"
#include "engine/timer.h"
#include "shards/replay.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define MAX_KINDS   32
#define MAX_CATCHUP 2 /* after a stall, at most this many extra ticks are run at once */

const pylon_sim_vtable *pylon_sim_arena(void);
const pylon_sim_vtable *pylon_sim_turns(void);

enum { MSG_TICK = 1, MSG_INPUT, MSG_SUBSCRIBE, MSG_UNSUBSCRIBE };

typedef struct input_msg {
    pylon_msg msg;
    uint64_t client_seq;
    size_t len;
    char sid[64];
    char json[]; /* len bytes + NUL */
} input_msg;

typedef struct sub_msg {
    pylon_msg msg;
    pylon_stream *stream;
    char sid[64];
} sub_msg;

typedef struct subscriber {
    pylon_stream *stream;
    bool sse; /* GET /api/shards/<id>/connect: "id: <tick>\ndata: <json>\n\n" */
    char sid[64];
} subscriber;

const double pylon_shard_tick_bounds[PYLON_SHARD_TICK_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 1e300};

/* Counters shared by every shard (relaxed atomics: a shard adds, /metrics reads). */
typedef struct tick_stats {
    _Atomic uint64_t duration[PYLON_SHARD_TICK_BUCKETS], lateness[PYLON_SHARD_TICK_BUCKETS];
    _Atomic uint64_t count, duration_ns, lateness_ns;
} tick_stats;

struct pylon_shard {
    _Atomic uint32_t refs;
    pylon_actor *actor;
    pylon_timer *timer;
    pylon_shard_config cfg;
    const pylon_sim_vtable *sim;
    void *state;
    char id[128];
    /* actor only */
    input_msg **inputs;
    size_t ninputs, inputs_cap;
    subscriber *subs;
    size_t nsubs, subs_cap;
    uint64_t idle_ticks;
    uint64_t last_tick_ns;
    pylon_sim_out snap; /* reused snapshot buffer */
    tick_stats *stats;  /* the registry's */
    FILE *rec;          /* replay recording (replay.h); stdio-buffered, so ticks rarely block */
    char rec_path[512];
    /* any thread */
    _Atomic uint64_t tick, server_seq, inputs_dropped, frames_skipped, stream_skips;
    _Atomic uint32_t nsubs_atomic, queued;
    atomic_bool running;
};

struct pylon_shards {
    pylon_runtime *rt;
    tick_stats stats;
    pthread_rwlock_t lock;
    pylon_shard **shards;
    size_t n, cap;
    const pylon_sim_vtable *kinds[MAX_KINDS];
    size_t nkinds;
};

/* ---- references -------------------------------------------------------------------------- */

static void shard_free(pylon_shard *s)
{
    /* The actor goes with the last reference to the shard, not before: subscribers and
     * in-flight requests still send to it (a stopped actor just drops what it gets). */
    if (s->actor) pylon_actor_release(s->actor);
    free(s->snap.data);
    free(s->inputs);
    free(s->subs);
    free(s);
}

void pylon_shard_release(pylon_shard *s)
{
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) shard_free(s);
}

static void shard_retain(pylon_shard *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

/* ---- the tick ---------------------------------------------------------------------------- */

/* Sends one frame per distinct snapshot: subscribers whose bytes hash alike share it. */
static void send_snapshots(pylon_shard *s, uint64_t tick)
{
    typedef struct made {
        uint64_t hash;
        pylon_buf *frame, *sse; /* each made on first need */
    } made;
    made local[16], *seen = local;
    size_t nseen = 0, cap = 16;
    for (size_t i = 0; i < s->nsubs; i++) {
        subscriber *sub = &s->subs[i];
        s->snap.len = 0;
        s->sim->snapshot_for(s->state, sub->sid, &s->snap);
        uint64_t h = XXH3_64bits(s->snap.data ? s->snap.data : "", s->snap.len);
        made *mk = NULL;
        for (size_t k = 0; k < nseen; k++)
            if (seen[k].hash == h) mk = &seen[k];
        if (!mk) {
            if (nseen == cap) {
                made *bigger = malloc(cap * 2 * sizeof *bigger);
                if (!bigger) continue;
                memcpy(bigger, seen, nseen * sizeof *seen);
                if (seen != local) free(seen);
                seen = bigger;
                cap *= 2;
            }
            mk = &seen[nseen++];
            *mk = (made){.hash = h};
        }
        if (sub->sse && !mk->sse) {
            char idl[40];
            int il = snprintf(idl, sizeof idl, "id: %llu\ndata: ", (unsigned long long)tick);
            mk->sse = pylon_buf_new((size_t)il + s->snap.len + 2);
            if (mk->sse) {
                memcpy(mk->sse->data, idl, (size_t)il);
                if (s->snap.len) memcpy(mk->sse->data + il, s->snap.data, s->snap.len);
                memcpy(mk->sse->data + il + s->snap.len, "\n\n", 2);
            }
        } else if (!sub->sse && !mk->frame) {
            size_t n = 8 + s->snap.len;
            uint8_t *payload = malloc(n);
            if (payload) {
                for (int b = 0; b < 8; b++)
                    payload[b] = (uint8_t)(tick >> (56 - 8 * b));
                if (s->snap.len) memcpy(payload + 8, s->snap.data, s->snap.len);
                mk->frame = pylon_ws_frame(2, payload, n);
                free(payload);
            }
        }
        pylon_buf *frame = sub->sse ? mk->sse : mk->frame;
        if (!frame || !pylon_stream_send(sub->stream, frame))
            atomic_fetch_add_explicit(&s->frames_skipped, 1, memory_order_relaxed);
    }
    uint64_t skipped = 0; /* frames the I/O loops dropped for slow subscribers */
    for (size_t i = 0; i < s->nsubs; i++)
        skipped += pylon_stream_skipped(s->subs[i].stream);
    atomic_store_explicit(&s->stream_skips, skipped, memory_order_relaxed);
    for (size_t k = 0; k < nseen; k++) {
        if (seen[k].frame) pylon_buf_release(seen[k].frame);
        if (seen[k].sse) pylon_buf_release(seen[k].sse);
    }
    if (seen != local) free(seen);
}

static void stop_shard(pylon_shard *s);

static void bucket(_Atomic uint64_t *b, double secs)
{
    int i = 0;
    while (i < PYLON_SHARD_TICK_BUCKETS - 1 && secs > pylon_shard_tick_bounds[i])
        i++;
    atomic_fetch_add_explicit(&b[i], 1, memory_order_relaxed);
}

static void record_tick(tick_stats *t, uint64_t duration_ns, uint64_t late_ns)
{
    if (!t) return;
    bucket(t->duration, (double)duration_ns / 1e9);
    bucket(t->lateness, (double)late_ns / 1e9);
    atomic_fetch_add_explicit(&t->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->duration_ns, duration_ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->lateness_ns, late_ns, memory_order_relaxed);
}

static void run_tick(pylon_shard *s)
{
    uint64_t tick = atomic_load(&s->tick) + 1;
    atomic_store(&s->tick, tick);
    bool had_inputs = s->ninputs > 0, recorded = false;
    for (size_t i = 0; i < s->ninputs; i++) {
        input_msg *in = s->inputs[i];
        if (!s->sim->apply_input(s->state, in->sid, in->json, in->len, in->client_seq)) {
            atomic_fetch_add_explicit(&s->inputs_dropped, 1, memory_order_relaxed);
        } else if (s->rec) { /* only applied inputs: a dropped one changed nothing */
            json_t *sid = json_string(in->sid);
            char *sid_text = sid ? json_dumps(sid, JSON_ENCODE_ANY) : NULL;
            if (!recorded) fprintf(s->rec, "{\"tick\":%llu,\"inputs\":[", (unsigned long long)tick);
            fprintf(s->rec, "%s[%s,%.*s,%llu]", recorded ? "," : "", sid_text ? sid_text : "\"\"",
                    (int)in->len, in->json, (unsigned long long)in->client_seq);
            free(sid_text);
            json_decref(sid);
            recorded = true;
        }
        free(in);
    }
    if (recorded) fputs("]}\n", s->rec);
    atomic_fetch_sub_explicit(&s->queued, (uint32_t)s->ninputs, memory_order_relaxed);
    s->ninputs = 0;
    uint64_t now = pylon_clock_now_ns();
    double dt = s->last_tick_ns ? (double)(now - s->last_tick_ns) / 1e9 : 0.0;
    if (s->cfg.tick_rate_hz) dt = 1.0 / s->cfg.tick_rate_hz; /* fixed step: deterministic */
    if (tick == 1) dt = 0;
    s->last_tick_ns = now;
    s->sim->tick(s->state, dt);
    if (s->nsubs) send_snapshots(s, tick);
    if (s->sim->is_finished && s->sim->is_finished(s->state)) {
        stop_shard(s);
        return;
    }
    s->idle_ticks = had_inputs || s->nsubs ? 0 : s->idle_ticks + 1;
    if (s->cfg.idle_ticks_before_shutdown && s->idle_ticks >= s->cfg.idle_ticks_before_shutdown)
        stop_shard(s);
}

static void stop_shard(pylon_shard *s)
{
    if (!atomic_exchange(&s->running, false)) return;
    if (s->rec) { /* the end line carries the final state's hash for `pylon replay` */
        fprintf(s->rec, "{\"end\":%llu,\"hash\":\"%016llx\"}\n",
                (unsigned long long)atomic_load(&s->tick),
                (unsigned long long)pylon_sim_state_hash(s->sim, s->state));
        fclose(s->rec);
        s->rec = NULL;
    }
    if (s->timer) {
        pylon_timer_cancel(s->timer);
        s->timer = NULL;
    }
}

static void behaviour(pylon_actor *self, pylon_msg *m)
{
    pylon_shard *s = pylon_actor_state(self);
    switch (m->type) {
    case MSG_TICK: { /* borrowed: not ours to free */
        if (!atomic_load(&s->running)) return;
        uint64_t start = pylon_clock_now_ns();
        uint64_t late =
            start > pylon_tick_of(m)->deadline_ns ? start - pylon_tick_of(m)->deadline_ns : 0;
        uint32_t due = pylon_tick_of(m)->due;
        for (uint32_t i = 0; i < due && atomic_load(&s->running); i++)
            run_tick(s);
        record_tick(s->stats, pylon_clock_now_ns() - start, late);
        return;
    }
    case MSG_INPUT: {
        input_msg *in = (input_msg *)m;
        if (!atomic_load(&s->running)) {
            atomic_fetch_sub_explicit(&s->queued, 1, memory_order_relaxed);
            free(in);
            return;
        }
        if (s->ninputs == s->inputs_cap) {
            size_t cap = s->inputs_cap ? s->inputs_cap * 2 : 64;
            input_msg **ni = realloc(s->inputs, cap * sizeof *ni);
            if (!ni) {
                atomic_fetch_sub_explicit(&s->queued, 1, memory_order_relaxed);
                atomic_fetch_add_explicit(&s->inputs_dropped, 1, memory_order_relaxed);
                free(in);
                return;
            }
            s->inputs = ni;
            s->inputs_cap = cap;
        }
        s->inputs[s->ninputs++] = in; /* applied at the next tick */
        return;
    }
    case MSG_SUBSCRIBE: {
        sub_msg *sm = (sub_msg *)m;
        if (s->nsubs == s->subs_cap) {
            size_t cap = s->subs_cap ? s->subs_cap * 2 : 16;
            subscriber *ns = realloc(s->subs, cap * sizeof *ns);
            if (!ns) {
                pylon_stream_close(sm->stream, 1013, "shard out of memory");
                pylon_stream_release(sm->stream);
                atomic_fetch_sub(&s->nsubs_atomic, 1);
                break;
            }
            s->subs = ns;
            s->subs_cap = cap;
        }
        subscriber *sub = &s->subs[s->nsubs++];
        sub->stream = sm->stream; /* the reference taken at subscribe */
        sub->sse = pylon_stream_kind_of(sm->stream) == PYLON_STREAM_SHARD_SSE;
        snprintf(sub->sid, sizeof sub->sid, "%s", sm->sid);
        break;
    }
    case MSG_UNSUBSCRIBE: {
        sub_msg *sm = (sub_msg *)m;
        for (size_t i = 0; i < s->nsubs; i++) {
            if (s->subs[i].stream != sm->stream) continue;
            pylon_stream_release(s->subs[i].stream);
            s->subs[i] = s->subs[--s->nsubs];
            atomic_fetch_sub(&s->nsubs_atomic, 1);
            break;
        }
        break;
    }
    }
    pylon_msg_free(m);
}

/* Event-driven shards (tick_rate_hz 0) tick once after each run that brought inputs. */
static void on_batch_end(pylon_actor *self)
{
    pylon_shard *s = pylon_actor_state(self);
    if (s->cfg.tick_rate_hz == 0 && s->ninputs && atomic_load(&s->running)) run_tick(s);
}

static void on_stop(pylon_actor *self)
{
    pylon_shard *s = pylon_actor_state(self);
    stop_shard(s);
    for (size_t i = 0; i < s->ninputs; i++)
        free(s->inputs[i]);
    s->ninputs = 0;
    for (size_t i = 0; i < s->nsubs; i++)
        pylon_stream_release(s->subs[i].stream);
    s->nsubs = 0;
    if (s->state) s->sim->destroy(s->state);
    s->state = NULL;
    pylon_shard_release(s); /* the actor's reference */
}

static const pylon_actor_def SHARD_DEF = {
    .name = "shard", .behaviour = behaviour, .on_batch_end = on_batch_end, .on_stop = on_stop};

/* ---- any-thread API ---------------------------------------------------------------------- */

pylon_shard_result pylon_shard_input(pylon_shard *s, const char *sid, const char *input_json,
                                     size_t len, uint64_t client_seq, uint64_t *server_seq)
{
    if (!atomic_load(&s->running)) return PYLON_SHARD_STOPPED;
    uint32_t q = atomic_fetch_add_explicit(&s->queued, 1, memory_order_relaxed);
    if (s->cfg.max_input_queue && q >= s->cfg.max_input_queue) {
        atomic_fetch_sub_explicit(&s->queued, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->inputs_dropped, 1, memory_order_relaxed);
        return PYLON_SHARD_QUEUE_FULL;
    }
    input_msg *in = malloc(sizeof *in + len + 1);
    if (!in) {
        atomic_fetch_sub_explicit(&s->queued, 1, memory_order_relaxed);
        return PYLON_SHARD_QUEUE_FULL;
    }
    pylon_msg_init(&in->msg, MSG_INPUT, NULL);
    in->client_seq = client_seq;
    in->len = len;
    snprintf(in->sid, sizeof in->sid, "%s", sid);
    memcpy(in->json, input_json, len);
    in->json[len] = '\0';
    if (server_seq) *server_seq = atomic_fetch_add(&s->server_seq, 1) + 1;
    pylon_actor_send(s->actor, &in->msg);
    return PYLON_SHARD_OK;
}

pylon_shard_result pylon_shard_subscribe(pylon_shard *s, pylon_stream *st, const char *sid)
{
    if (!atomic_load(&s->running)) return PYLON_SHARD_STOPPED;
    uint32_t n = atomic_fetch_add(&s->nsubs_atomic, 1);
    if (s->cfg.max_subscribers && n >= s->cfg.max_subscribers) {
        atomic_fetch_sub(&s->nsubs_atomic, 1);
        return PYLON_SHARD_FULL;
    }
    sub_msg *m = calloc(1, sizeof *m);
    if (!m) {
        atomic_fetch_sub(&s->nsubs_atomic, 1);
        return PYLON_SHARD_FULL;
    }
    pylon_msg_init(&m->msg, MSG_SUBSCRIBE, NULL);
    pylon_stream_retain(st);
    m->stream = st;
    snprintf(m->sid, sizeof m->sid, "%s", sid);
    pylon_actor_send(s->actor, &m->msg);
    return PYLON_SHARD_OK;
}

void pylon_shard_unsubscribe(pylon_shard *s, pylon_stream *st)
{
    sub_msg *m = calloc(1, sizeof *m);
    if (!m) return; /* the stream stays referenced until the shard stops */
    pylon_msg_init(&m->msg, MSG_UNSUBSCRIBE, NULL);
    m->stream = st;
    pylon_actor_send(s->actor, &m->msg);
}

void pylon_shard_status_get(pylon_shard *s, pylon_shard_status *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->id, sizeof out->id, "%s", s->id);
    snprintf(out->kind, sizeof out->kind, "%s", s->sim->kind);
    out->running = atomic_load(&s->running);
    out->tick = atomic_load(&s->tick);
    out->subscribers = atomic_load(&s->nsubs_atomic);
    out->input_queue = atomic_load(&s->queued);
    out->inputs_dropped = atomic_load(&s->inputs_dropped);
    out->frames_skipped = atomic_load(&s->frames_skipped) + atomic_load(&s->stream_skips);
    snprintf(out->record_path, sizeof out->record_path, "%s", s->rec_path);
}

/* ---- the registry ------------------------------------------------------------------------ */

pylon_shards *pylon_shards_new(pylon_runtime *rt)
{
    pylon_shards *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->rt = rt;
    pthread_rwlock_init(&r->lock, NULL);
    pylon_shards_add_kind(r, pylon_sim_arena());
    pylon_shards_add_kind(r, pylon_sim_turns());
    return r;
}

bool pylon_shards_add_kind(pylon_shards *r, const pylon_sim_vtable *sim)
{
    if (r->nkinds == MAX_KINDS || pylon_shards_kind(r, sim->kind)) return false;
    r->kinds[r->nkinds++] = sim;
    return true;
}

const pylon_sim_vtable *pylon_shards_kind(pylon_shards *r, const char *kind)
{
    for (size_t i = 0; i < r->nkinds; i++)
        if (strcmp(r->kinds[i]->kind, kind) == 0) return r->kinds[i];
    return NULL;
}

static pylon_shard *find_locked(pylon_shards *r, const char *id, size_t *at)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->shards[i]->id, id) == 0) {
            if (at) *at = i;
            return r->shards[i];
        }
    return NULL;
}

int pylon_shards_create(pylon_shards *r, const char *id, const char *kind, const char *config_json,
                        const pylon_shard_config *cfg, char *err, size_t errlen)
{
    const pylon_sim_vtable *sim = pylon_shards_kind(r, kind);
    if (!sim) {
        snprintf(err, errlen, "unknown shard kind \"%s\"", kind);
        return 400;
    }
    pylon_shard *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return 503;
    }
    snprintf(s->id, sizeof s->id, "%s", id);
    s->sim = sim;
    s->stats = &r->stats;
    s->cfg = *cfg;
    pylon_sim_ctx ctx = {.shard_id = s->id,
                         .tick_rate_hz = cfg->tick_rate_hz,
                         .config_json = config_json ? config_json : "{}"};
    s->state = sim->init(&ctx, err, errlen);
    if (!s->state) {
        free(s);
        return 400;
    }
    if (cfg->record_path) {
        s->rec = fopen(cfg->record_path, "w");
        if (!s->rec) {
            snprintf(err, errlen, "cannot record to %s: %s", cfg->record_path, strerror(errno));
            sim->destroy(s->state);
            free(s);
            return 400;
        }
        snprintf(s->rec_path, sizeof s->rec_path, "%s", cfg->record_path);
        json_t *cfgj = json_loads(config_json ? config_json : "{}", 0, NULL);
        json_t *head = json_pack("{s:i,s:s,s:s,s:i,s:o}", "replay", 1, "kind", sim->kind, "id",
                                 s->id, "tick_rate_hz", (int)cfg->tick_rate_hz, "config",
                                 cfgj ? cfgj : json_object());
        char *text = head ? json_dumps(head, JSON_COMPACT) : NULL;
        fprintf(s->rec, "%s\n", text ? text : "{}");
        free(text);
        json_decref(head);
    }
    atomic_init(&s->refs, 2); /* the registry's and the actor's */
    atomic_init(&s->running, true);
    pthread_rwlock_wrlock(&r->lock);
    if (find_locked(r, id, NULL)) {
        pthread_rwlock_unlock(&r->lock);
        sim->destroy(s->state);
        if (s->rec) fclose(s->rec);
        free(s);
        snprintf(err, errlen, "a shard with id \"%s\" exists", id);
        return 409;
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        pylon_shard **ns = realloc(r->shards, cap * sizeof *ns);
        if (!ns) {
            pthread_rwlock_unlock(&r->lock);
            sim->destroy(s->state);
            free(s);
            snprintf(err, errlen, "out of memory");
            return 503;
        }
        r->shards = ns;
        r->cap = cap;
    }
    r->shards[r->n++] = s;
    s->actor = pylon_actor_spawn(r->rt, &SHARD_DEF, s);
    if (cfg->tick_rate_hz) {
        uint64_t interval = PYLON_NS_PER_SEC / cfg->tick_rate_hz;
        s->timer = pylon_timer_start(s->actor, MSG_TICK, pylon_clock_now_ns() + interval, interval,
                                     MAX_CATCHUP, 0);
    }
    pthread_rwlock_unlock(&r->lock);
    return 0;
}

pylon_shard *pylon_shards_get(pylon_shards *r, const char *id)
{
    pthread_rwlock_rdlock(&r->lock);
    pylon_shard *s = find_locked(r, id, NULL);
    if (s) shard_retain(s);
    pthread_rwlock_unlock(&r->lock);
    return s;
}

/* Stops the actor (the timer is cancelled in its context) and drops the registry's ref. */
static void retire(pylon_shard *s)
{
    pylon_actor_stop(s->actor); /* on_stop cancels the timer and drops the subscribers */
    pylon_shard_release(s);
}

bool pylon_shards_remove(pylon_shards *r, const char *id)
{
    size_t at;
    pthread_rwlock_wrlock(&r->lock);
    pylon_shard *s = find_locked(r, id, &at);
    if (s) r->shards[at] = r->shards[--r->n];
    pthread_rwlock_unlock(&r->lock);
    if (s) retire(s);
    return s != NULL;
}

void pylon_shards_metrics(pylon_shards *r, pylon_shard_metrics *out)
{
    memset(out, 0, sizeof *out);
    if (!r) return;
    for (int i = 0; i < PYLON_SHARD_TICK_BUCKETS; i++) {
        out->duration[i] = atomic_load_explicit(&r->stats.duration[i], memory_order_relaxed);
        out->lateness[i] = atomic_load_explicit(&r->stats.lateness[i], memory_order_relaxed);
    }
    out->count = atomic_load_explicit(&r->stats.count, memory_order_relaxed);
    out->duration_sum_s =
        (double)atomic_load_explicit(&r->stats.duration_ns, memory_order_relaxed) / 1e9;
    out->lateness_sum_s =
        (double)atomic_load_explicit(&r->stats.lateness_ns, memory_order_relaxed) / 1e9;
    pthread_rwlock_rdlock(&r->lock);
    out->shards = r->n;
    pthread_rwlock_unlock(&r->lock);
}

pylon_shard_status *pylon_shards_list(pylon_shards *r, size_t *n)
{
    pthread_rwlock_rdlock(&r->lock);
    pylon_shard_status *out = calloc(r->n ? r->n : 1, sizeof *out);
    *n = out ? r->n : 0;
    for (size_t i = 0; out && i < r->n; i++)
        pylon_shard_status_get(r->shards[i], &out[i]);
    pthread_rwlock_unlock(&r->lock);
    return out;
}

void pylon_shards_free(pylon_shards *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n; i++)
        retire(r->shards[i]);
    free(r->shards);
    pthread_rwlock_destroy(&r->lock);
    free(r);
}

char *pylon_shards_prometheus(void *shards)
{
    pylon_shard_metrics sm;
    pylon_shards_metrics(shards, &sm);
    size_t cap = 4096, n = 0;
    char *t = malloc(cap);
    if (!t) return NULL;
#define PUT(...) n += (size_t)snprintf(t + n, n < cap ? cap - n : 0, __VA_ARGS__)
    PUT("# HELP pylon_shards Shards in the registry\n# TYPE pylon_shards gauge\npylon_shards "
        "%llu\n",
        (unsigned long long)sm.shards);
    static const char *const name[2] = {"pylon_shard_tick_duration_seconds",
                                        "pylon_shard_tick_lateness_seconds"};
    static const char *const help[2] = {
        "Time a shard takes per timer tick (inputs, simulation, snapshots)",
        "How late each tick started after its deadline"};
    for (int k = 0; k < 2; k++) {
        PUT("# HELP %s %s\n# TYPE %s histogram\n", name[k], help[k], name[k]);
        uint64_t cum = 0;
        for (int i = 0; i < PYLON_SHARD_TICK_BUCKETS; i++) {
            cum += k ? sm.lateness[i] : sm.duration[i];
            if (i < PYLON_SHARD_TICK_BUCKETS - 1)
                PUT("%s_bucket{le=\"%g\"} %llu\n", name[k], pylon_shard_tick_bounds[i],
                    (unsigned long long)cum);
            else
                PUT("%s_bucket{le=\"+Inf\"} %llu\n", name[k], (unsigned long long)cum);
        }
        PUT("%s_sum %.6f\n%s_count %llu\n", name[k], k ? sm.lateness_sum_s : sm.duration_sum_s,
            name[k], (unsigned long long)sm.count);
    }
#undef PUT
    if (n >= cap) t[cap - 1] = '\0'; /* 4 KiB always fits these lines; never overflow anyway */
    return t;
}
