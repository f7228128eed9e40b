/* shard.c — see shard.h. */
#include "shards/shard.h"

#include "engine/clock.h"
#include "engine/fmt.h"
#include "engine/log.h"
#include "engine/timer.h"
#include "shards/codec.h"
#include "shards/replay.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#define MAX_KINDS   32
#define MAX_CATCHUP 2 /* after a stall, at most this many extra ticks are run at once */

const pylon_sim_vtable *pylon_sim_arena(void);
const pylon_sim_vtable *pylon_sim_turns(void);

enum { MSG_TICK = 1, MSG_INPUT, MSG_SUBSCRIBE, MSG_UNSUBSCRIBE, MSG_CHECKPOINT };

/* Why a shard stops: what happens to its checkpoint. */
typedef enum { STOP_FINISHED, STOP_IDLE, STOP_REMOVED, STOP_SHUTDOWN } stop_why;

typedef struct input_msg {
    pylon_msg msg;
    uint64_t client_seq;
    size_t len;
    char sid[PYLON_SHARD_SID_MAX + 1];
    char json[]; /* len bytes + NUL */
} input_msg;

typedef struct sub_msg {
    pylon_msg msg;
    pylon_stream *stream;
    pylon_shard_format fmt;
    char sid[PYLON_SHARD_SID_MAX + 1];
} sub_msg;

typedef struct subscriber {
    pylon_stream *stream;
    bool sse; /* GET /api/shards/<id>/connect: "id: <tick>\ndata: <json>\n\n" */
    pylon_shard_format fmt;
    /* pylon.delta: the client holds the snapshot hashed last_hash, from the frame of
     * last_tick; synced is false until a full frame went out (after attach, after a skip). */
    bool synced;
    uint64_t last_hash, last_tick, seen_skips;
    char sid[PYLON_SHARD_SID_MAX + 1];
} subscriber;

/* A snapshot delta subscribers hold after a tick: the base of the next tick's deltas. */
typedef struct held_snap {
    uint64_t hash;
    json_t *json;
} held_snap;

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
    held_snap *held; /* pylon.delta bases, from the last tick with subscribers */
    size_t nheld;
    pylon_shards *reg;
    char *config_json;       /* as given at creation, for checkpoints */
    pylon_timer *ckpt_timer; /* every cfg.checkpoint_secs; NULL when not checkpointed */
    uint64_t ckpt_tick;      /* the tick of the last checkpoint written */
    bool ckpt_on;            /* set before the actor starts: this shard is checkpointed */
    /* any thread: inputs of a ticking shard wait here for the next tick without a message to
     * the actor each (a wake-up per input was the third cost of the arena benchmark); the
     * tick takes them all at once. Event-driven shards still get one message per input. */
    pthread_mutex_t in_lock;
    input_msg **arrived; /* in_lock */
    size_t narrived, arrived_cap;
    /* any thread */
    _Atomic uint64_t tick, server_seq, inputs_dropped, frames_skipped, stream_skips;
    _Atomic uint32_t nsubs_atomic, queued;
    atomic_bool running, removed;
};

struct pylon_shards {
    pylon_runtime *rt;
    tick_stats stats;
    pthread_rwlock_t lock;
    pylon_shard **shards;
    size_t n, cap;
    const pylon_sim_vtable *kinds[MAX_KINDS];
    size_t nkinds;
    pylon_shard_checkpoints ckpt;
    /* Shard actors whose on_stop has not run yet: pylon_shards_free waits for them, so every
     * final checkpoint is queued before the persistence actor is stopped. */
    pthread_mutex_t live_lock;
    pthread_cond_t live_cond;
    size_t live;
    uint64_t phases; /* shards given a tick phase so far (under lock, written) */
};

uint64_t pylon_shard_tick_phase(uint64_t k, uint64_t interval)
{
    double frac = (double)k * 0.6180339887498949;
    frac -= (double)(uint64_t)frac;
    return (uint64_t)(frac * (double)interval);
}

/* The first tick deadline: the shard's phase on a clock-aligned grid, 0.5 to 1.5 intervals from
 * now (see pylon_shard_tick_phase for why). */
static uint64_t first_deadline(pylon_shards *r, uint64_t interval)
{
    uint64_t now = pylon_clock_now_ns();
    uint64_t at = now - now % interval + pylon_shard_tick_phase(r->phases++, interval);
    while (at < now + interval / 2)
        at += interval;
    return at;
}

/* ---- references -------------------------------------------------------------------------- */

static void shard_free(pylon_shard *s)
{
    /* The actor goes with the last reference to the shard, not before: subscribers and
     * in-flight requests still send to it (a stopped actor just drops what it gets). */
    if (s->actor) pylon_actor_release(s->actor);
    for (size_t i = 0; i < s->nheld; i++)
        json_decref(s->held[i].json);
    free(s->held);
    free(s->config_json);
    free(s->snap.data);
    free(s->inputs);
    for (size_t i = 0; i < s->narrived; i++) /* sent after the actor stopped */
        free(s->arrived[i]);
    free(s->arrived);
    pthread_mutex_destroy(&s->in_lock);
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

/* One distinct snapshot of this tick and its encodings, each made on first need. */
typedef struct made {
    uint64_t hash;
    pylon_buf *frame, *sse, *mp, *full; /* JSON, SSE, msgpack, pylon.delta full frame */
    json_t *json;                       /* parsed, for msgpack and deltas */
    bool held;                          /* a delta subscriber holds it after this tick */
} made;

/* One delta frame of this tick, shared by the subscribers that hold the same base. */
typedef struct delta_made {
    uint64_t from, base_tick, to;
    bool same; /* the bytes differ but the JSON does not: nothing to send */
    pylon_buf *frame;
} delta_made;

static void put_tick(uint8_t *p, uint64_t tick)
{
    for (int b = 0; b < 8; b++)
        p[b] = (uint8_t)(tick >> (56 - 8 * b));
}

/* [u64 BE tick][bytes] as one binary WebSocket frame. */
static pylon_buf *tick_frame(uint64_t tick, const void *bytes, size_t len)
{
    pylon_buf *f = pylon_ws_frame(2, NULL, 8 + len); /* filled in place: one allocation */
    if (!f) return NULL;
    uint8_t *payload = f->data + f->len - (8 + len);
    put_tick(payload, tick);
    if (len) memcpy(payload + 8, bytes, len);
    return f;
}

/* A text frame "<head><body><tail>" (the pylon.delta envelopes around compact JSON). */
static pylon_buf *text_frame(const char *head, const char *body, size_t len, const char *tail)
{
    size_t hl = strlen(head), tl = strlen(tail);
    char *t = malloc(hl + len + tl);
    if (!t) return NULL;
    memcpy(t, head, hl);
    if (len) memcpy(t + hl, body, len);
    memcpy(t + hl + len, tail, tl);
    pylon_buf *f = pylon_ws_frame(1, t, hl + len + tl);
    free(t);
    return f;
}

static const json_t *parsed(pylon_shard *s, made *mk)
{
    if (!mk->json && s->snap.len)
        mk->json = json_loadb(s->snap.data, s->snap.len, JSON_DECODE_ANY, NULL);
    return mk->json;
}

static const json_t *held_json(pylon_shard *s, uint64_t hash)
{
    for (size_t i = 0; i < s->nheld; i++)
        if (s->held[i].hash == hash) return s->held[i].json;
    return NULL;
}

/* The pylon.delta frame for `sub`, or NULL with *nothing set when its snapshot did not
 * change. A subscriber that is not in sync (new, or its stream skipped a frame since the last
 * tick) gets the full snapshot; so does one whose base is no longer held or not an object. */
static pylon_buf *delta_for(pylon_shard *s, subscriber *sub, made *mk, uint64_t tick,
                            delta_made **deltas, size_t *ndeltas, size_t *dcap, bool *nothing)
{
    uint64_t skips = pylon_stream_skipped(sub->stream);
    bool full = !sub->synced || skips != sub->seen_skips;
    sub->seen_skips = skips;
    *nothing = false;
    if (!parsed(s, mk)) return NULL;
    mk->held = true;
    if (!full && mk->hash == sub->last_hash) {
        *nothing = true; /* unchanged: no frame at all */
        return NULL;
    }
    const json_t *base = full ? NULL : held_json(s, sub->last_hash);
    if (base) {
        delta_made *dm = NULL;
        for (size_t k = 0; k < *ndeltas; k++)
            if ((*deltas)[k].from == sub->last_hash && (*deltas)[k].base_tick == sub->last_tick &&
                (*deltas)[k].to == mk->hash)
                dm = &(*deltas)[k];
        if (!dm) {
            json_t *d = NULL;
            pylon_diff_result r = pylon_json_diff(base, mk->json, &d);
            if (r == PYLON_DIFF_WHOLE) goto whole;
            if (*ndeltas == *dcap) {
                size_t cap = *dcap ? *dcap * 2 : 8;
                delta_made *nd = realloc(*deltas, cap * sizeof *nd);
                if (!nd) {
                    json_decref(d);
                    goto whole;
                }
                *deltas = nd;
                *dcap = cap;
            }
            dm = &(*deltas)[(*ndeltas)++];
            *dm = (delta_made){.from = sub->last_hash, .base_tick = sub->last_tick, .to = mk->hash};
            if (r == PYLON_DIFF_SAME) {
                dm->same = true;
            } else {
                char *text = json_dumps(d, JSON_COMPACT);
                char head[64];
                snprintf(head, sizeof head,
                         "{\"tick\":%llu,\"base\":%llu,\"delta\":", (unsigned long long)tick,
                         (unsigned long long)sub->last_tick);
                dm->frame = text ? text_frame(head, text, strlen(text), "}") : NULL;
                /* a stream that drops a frame drops the deltas after it too (stream.h) */
                if (dm->frame) dm->frame->flags |= PYLON_BUF_DEPENDENT;
                free(text);
            }
            json_decref(d);
        }
        if (dm->same) {
            sub->last_hash = mk->hash; /* the client's state already equals this snapshot */
            *nothing = true;
            return NULL;
        }
        return dm->frame;
    }
whole:
    if (!mk->full) {
        char head[48];
        snprintf(head, sizeof head, "{\"tick\":%llu,\"snapshot\":", (unsigned long long)tick);
        mk->full = text_frame(head, s->snap.data, s->snap.len, "}");
    }
    return mk->full;
}

/* Sends one frame per distinct snapshot and encoding: subscribers whose bytes hash alike share
 * it. pylon.delta subscribers share one delta per (base, snapshot) pair. */
static void send_snapshots(pylon_shard *s, uint64_t tick)
{
    made local[16], *seen = local;
    size_t nseen = 0, cap = 16;
    delta_made *deltas = NULL;
    size_t ndeltas = 0, dcap = 0;
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
        pylon_buf *frame = NULL;
        if (sub->sse) {
            if (!mk->sse) {
                char idl[40];
                int il = snprintf(idl, sizeof idl, "id: %llu\ndata: ", (unsigned long long)tick);
                mk->sse = pylon_buf_new((size_t)il + s->snap.len + 2);
                if (mk->sse) {
                    memcpy(mk->sse->data, idl, (size_t)il);
                    if (s->snap.len) memcpy(mk->sse->data + il, s->snap.data, s->snap.len);
                    memcpy(mk->sse->data + il + s->snap.len, "\n\n", 2);
                }
            }
            frame = mk->sse;
        } else if (sub->fmt == PYLON_SHARD_FMT_MSGPACK) {
            char *mp;
            size_t mpl;
            if (!mk->mp && parsed(s, mk) && pylon_json_to_msgpack(mk->json, &mp, &mpl)) {
                mk->mp = tick_frame(tick, mp, mpl);
                free(mp);
            }
            frame = mk->mp;
        } else if (sub->fmt == PYLON_SHARD_FMT_DELTA) {
            /* Its outbox is full (the I/O loop is behind): a new frame would push out the
             * oldest waiting one, the base of the next waiting delta. Skip this tick instead;
             * the chain that waits stays whole, and the next frame is computed against the
             * last one sent (in full when that base is no longer held). */
            if (pylon_stream_would_skip(sub->stream)) {
                atomic_fetch_add_explicit(&s->frames_skipped, 1, memory_order_relaxed);
                continue;
            }
            bool nothing;
            frame = delta_for(s, sub, mk, tick, &deltas, &ndeltas, &dcap, &nothing);
            if (nothing) continue;
            bool sent = frame && pylon_stream_send(sub->stream, frame);
            sub->synced = sent;
            if (sent) {
                sub->last_hash = h;
                sub->last_tick = tick;
            } else {
                atomic_fetch_add_explicit(&s->frames_skipped, 1, memory_order_relaxed);
            }
            continue;
        } else {
            if (!mk->frame) mk->frame = tick_frame(tick, s->snap.data, s->snap.len);
            frame = mk->frame;
        }
        if (!frame || !pylon_stream_send(sub->stream, frame))
            atomic_fetch_add_explicit(&s->frames_skipped, 1, memory_order_relaxed);
    }
    uint64_t skipped = 0; /* frames the I/O loops dropped for slow subscribers */
    for (size_t i = 0; i < s->nsubs; i++)
        skipped += pylon_stream_skipped(s->subs[i].stream);
    atomic_store_explicit(&s->stream_skips, skipped, memory_order_relaxed);
    /* What delta subscribers hold now becomes the base of the next tick's deltas. */
    for (size_t i = 0; i < s->nheld; i++)
        json_decref(s->held[i].json);
    s->nheld = 0;
    size_t nkeep = 0;
    for (size_t k = 0; k < nseen; k++)
        nkeep += seen[k].held && seen[k].json;
    if (nkeep) {
        held_snap *nh = realloc(s->held, nkeep * sizeof *nh);
        if (nh)
            s->held = nh;
        else
            nkeep = 0; /* no bases: the next frames are full ones */
    }
    for (size_t k = 0; k < nseen; k++) {
        if (seen[k].frame) pylon_buf_release(seen[k].frame);
        if (seen[k].sse) pylon_buf_release(seen[k].sse);
        if (seen[k].mp) pylon_buf_release(seen[k].mp);
        if (seen[k].full) pylon_buf_release(seen[k].full);
        if (seen[k].held && seen[k].json && s->held && s->nheld < nkeep)
            s->held[s->nheld++] = (held_snap){seen[k].hash, seen[k].json};
        else
            json_decref(seen[k].json);
    }
    for (size_t k = 0; k < ndeltas; k++)
        if (deltas[k].frame) pylon_buf_release(deltas[k].frame);
    free(deltas);
    if (seen != local) free(seen);
}

static void stop_shard(pylon_shard *s, stop_why why);

/* ---- checkpoints ------------------------------------------------------------------------- */

static bool checkpointed(const pylon_shard *s)
{
    return s->ckpt_on;
}

static char *options_json(const pylon_shard_config *c)
{
    json_t *j = json_pack("{s:i,s:i,s:i,s:i,s:i}", "tick_rate_hz", (int)c->tick_rate_hz,
                          "max_subscribers", (int)c->max_subscribers, "idle_ticks_before_shutdown",
                          (int)c->idle_ticks_before_shutdown, "max_input_queue",
                          (int)c->max_input_queue, "checkpoint_secs", (int)c->checkpoint_secs);
    char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return t;
}

/* Actor only: hands the state to the sink (the persistence actor), which copies it. */
static void checkpoint_save(pylon_shard *s)
{
    pylon_shards *r = s->reg;
    uint64_t tick = atomic_load(&s->tick);
    if (!checkpointed(s) || !s->state || tick == s->ckpt_tick) return;
    pylon_sim_out out = {0};
    char *opts = options_json(&s->cfg);
    if (opts && s->sim->save(s->state, &out)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        pylon_shard_row row = {.id = s->id,
                               .kind = s->sim->kind,
                               .config = s->config_json,
                               .options = opts,
                               .tick = tick,
                               .state = out.data ? out.data : "",
                               .len = out.len,
                               .saved_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000};
        r->ckpt.save(r->ckpt.ctx, &row);
        s->ckpt_tick = tick;
    } else {
        pylon_log_warn("shard", "shard %s: no checkpoint at tick %llu (save failed)", s->id,
                       (unsigned long long)tick);
    }
    free(opts);
    free(out.data);
}

/* Actor only: a shard that is gone for good takes its checkpoint with it. Sent from the actor,
 * after any save it queued, so the delete always lands last. */
static void checkpoint_drop(pylon_shard *s)
{
    if (s->reg && s->reg->ckpt.drop) s->reg->ckpt.drop(s->reg->ckpt.ctx, s->id);
}

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

/* Actor only: appends the inputs that arrived without a message to s->inputs, in order. */
static void take_arrived(pylon_shard *s)
{
    pthread_mutex_lock(&s->in_lock);
    size_t n = s->narrived;
    if (n && s->ninputs + n > s->inputs_cap) {
        size_t cap = s->inputs_cap ? s->inputs_cap : 64;
        while (cap < s->ninputs + n)
            cap *= 2;
        input_msg **ni = realloc(s->inputs, cap * sizeof *ni);
        if (!ni) { /* they stay queued for the next tick */
            pthread_mutex_unlock(&s->in_lock);
            return;
        }
        s->inputs = ni;
        s->inputs_cap = cap;
    }
    if (n) memcpy(s->inputs + s->ninputs, s->arrived, n * sizeof *s->arrived);
    s->ninputs += n;
    s->narrived = 0;
    pthread_mutex_unlock(&s->in_lock);
}

static void run_tick(pylon_shard *s)
{
    take_arrived(s);
    uint64_t tick = atomic_load(&s->tick) + 1;
    atomic_store(&s->tick, tick);
    bool had_inputs = s->ninputs > 0, recorded = false;
    /* dt first: an event-driven shard's is the time since its last tick, which a replay cannot
     * know, so the recording writes it on every tick line of such a shard (replay.h). */
    uint64_t now = pylon_clock_now_ns();
    double dt = s->last_tick_ns ? (double)(now - s->last_tick_ns) / 1e9 : 0.0;
    if (s->cfg.tick_rate_hz) dt = 1.0 / s->cfg.tick_rate_hz; /* fixed step: deterministic */
    if (tick == 1) dt = 0;
    s->last_tick_ns = now;
    if (s->rec && !s->cfg.tick_rate_hz) {
        fprintf(s->rec, "{\"tick\":%llu,\"dt\":%.17g,\"inputs\":[", (unsigned long long)tick, dt);
        recorded = true; /* the line is open */
    }
    bool first_input = true;
    for (size_t i = 0; i < s->ninputs; i++) {
        input_msg *in = s->inputs[i];
        if (!s->sim->apply_input(s->state, in->sid, in->json, in->len, in->client_seq)) {
            atomic_fetch_add_explicit(&s->inputs_dropped, 1, memory_order_relaxed);
        } else if (s->rec) { /* only applied inputs: a dropped one changed nothing */
            json_t *sid = json_string(in->sid);
            char *sid_text = sid ? json_dumps(sid, JSON_ENCODE_ANY) : NULL;
            if (!recorded) fprintf(s->rec, "{\"tick\":%llu,\"inputs\":[", (unsigned long long)tick);
            fprintf(s->rec, "%s[%s,%.*s,%llu]", first_input ? "" : ",",
                    sid_text ? sid_text : "\"\"", (int)in->len, in->json,
                    (unsigned long long)in->client_seq);
            free(sid_text);
            json_decref(sid);
            recorded = true;
            first_input = false;
        }
        free(in);
    }
    if (recorded) fputs("]}\n", s->rec);
    atomic_fetch_sub_explicit(&s->queued, (uint32_t)s->ninputs, memory_order_relaxed);
    s->ninputs = 0;
    s->sim->tick(s->state, dt);
    if (s->nsubs) {
        send_snapshots(s, tick);
    } else if (s->nheld) { /* nobody holds a base any more */
        for (size_t i = 0; i < s->nheld; i++)
            json_decref(s->held[i].json);
        s->nheld = 0;
    }
    if (s->sim->is_finished && s->sim->is_finished(s->state)) {
        stop_shard(s, STOP_FINISHED);
        return;
    }
    s->idle_ticks = had_inputs || s->nsubs ? 0 : s->idle_ticks + 1;
    if (s->cfg.idle_ticks_before_shutdown && s->idle_ticks >= s->cfg.idle_ticks_before_shutdown)
        stop_shard(s, STOP_IDLE);
}

/* Actor only: closes every subscriber's stream and drops the shard's reference to it. A
 * stopped shard sends nothing more, and a client left on a silent socket would never know to
 * reconnect or move on. The close goes through the stream's outbox (after any frame already
 * sent); the connection's on_close then finds no subscriber, which is fine. */
static void close_subscribers(pylon_shard *s, uint16_t code, const char *reason)
{
    for (size_t i = 0; i < s->nsubs; i++) {
        if (pylon_stream_is_open(s->subs[i].stream))
            pylon_stream_close(s->subs[i].stream, code, reason);
        pylon_stream_release(s->subs[i].stream);
    }
    atomic_fetch_sub(&s->nsubs_atomic, (uint32_t)s->nsubs);
    s->nsubs = 0;
}

/* Finished, idle and removed shards are gone for good (a restart does not bring them back);
 * at shutdown the state is saved one last time and comes back with the next start. */
static void stop_shard(pylon_shard *s, stop_why why)
{
    if (!atomic_exchange(&s->running, false)) return;
    /* Not at shutdown: the server has closed every stream with 1001 already, and its loops
     * may be gone by the time the shards stop. */
    if (why == STOP_REMOVED) close_subscribers(s, 1001, "shard deleted");
    if (why == STOP_FINISHED) close_subscribers(s, 1000, "shard finished");
    if (why == STOP_IDLE) close_subscribers(s, 1001, "shard stopped (idle)");
    if (why == STOP_SHUTDOWN)
        checkpoint_save(s);
    else
        checkpoint_drop(s);
    if (s->ckpt_timer) {
        pylon_timer_cancel(s->ckpt_timer);
        s->ckpt_timer = NULL;
    }
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
    case MSG_CHECKPOINT: /* borrowed, like MSG_TICK */
        if (atomic_load(&s->running)) checkpoint_save(s);
        return;
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
        if (!atomic_load(&s->running)) { /* it raced the stop: refused as if it came after */
            pylon_stream_close(sm->stream, 1013, "shard is stopped");
            pylon_stream_release(sm->stream);
            sm->stream = NULL;
            atomic_fetch_sub(&s->nsubs_atomic, 1);
            break;
        }
        if (s->nsubs == s->subs_cap) {
            size_t cap = s->subs_cap ? s->subs_cap * 2 : 16;
            subscriber *ns = realloc(s->subs, cap * sizeof *ns);
            if (!ns) {
                pylon_stream_close(sm->stream, 1013, "shard out of memory");
                pylon_stream_release(sm->stream);
                sm->stream = NULL;
                atomic_fetch_sub(&s->nsubs_atomic, 1);
                break;
            }
            s->subs = ns;
            s->subs_cap = cap;
        }
        subscriber *sub = &s->subs[s->nsubs++];
        sub->stream = sm->stream; /* the reference taken at subscribe */
        sub->sse = pylon_stream_kind_of(sm->stream) == PYLON_STREAM_SHARD_SSE;
        sub->fmt = sm->fmt;
        sub->synced = false; /* a delta subscriber's first frame is a full one */
        sub->last_hash = sub->last_tick = 0;
        sub->seen_skips = pylon_stream_skipped(sm->stream);
        pylon_fmt_copy(sub->sid, sizeof sub->sid, sm->sid);
        sm->stream = NULL; /* the subscriber holds the reference now */
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

static void shards_actor_gone(pylon_shards *r)
{
    pthread_mutex_lock(&r->live_lock);
    r->live--;
    pthread_cond_broadcast(&r->live_cond);
    pthread_mutex_unlock(&r->live_lock);
}

static void on_stop(pylon_actor *self)
{
    pylon_shard *s = pylon_actor_state(self);
    pylon_shards *r = s->reg;
    stop_shard(s, atomic_load(&s->removed) ? STOP_REMOVED : STOP_SHUTDOWN);
    take_arrived(s);
    for (size_t i = 0; i < s->ninputs; i++)
        free(s->inputs[i]);
    s->ninputs = 0;
    for (size_t i = 0; i < s->nsubs; i++)
        pylon_stream_release(s->subs[i].stream);
    s->nsubs = 0;
    if (s->state) s->sim->destroy(s->state);
    s->state = NULL;
    pylon_shard_release(s); /* the actor's reference */
    shards_actor_gone(r);   /* last: the registry may be freed right after */
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
    pylon_fmt_copy(in->sid, sizeof in->sid, sid); /* per input: no printf */
    memcpy(in->json, input_json, len);
    in->json[len] = '\0';
    if (server_seq) *server_seq = atomic_fetch_add(&s->server_seq, 1) + 1;
    if (s->cfg.tick_rate_hz == 0) { /* event-driven: the input is what makes it tick */
        pylon_actor_send(s->actor, &in->msg);
        return PYLON_SHARD_OK;
    }
    /* The bound is `queued`, checked above, so the array grows at most to max_input_queue. */
    pthread_mutex_lock(&s->in_lock);
    if (s->narrived == s->arrived_cap) {
        size_t cap = s->arrived_cap ? s->arrived_cap * 2 : 64;
        input_msg **na = realloc(s->arrived, cap * sizeof *na);
        if (!na) {
            pthread_mutex_unlock(&s->in_lock);
            atomic_fetch_sub_explicit(&s->queued, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&s->inputs_dropped, 1, memory_order_relaxed);
            free(in);
            return PYLON_SHARD_QUEUE_FULL;
        }
        s->arrived = na;
        s->arrived_cap = cap;
    }
    s->arrived[s->narrived++] = in;
    pthread_mutex_unlock(&s->in_lock);
    return PYLON_SHARD_OK;
}

void pylon_shard_count_dropped(pylon_shard *s)
{
    atomic_fetch_add_explicit(&s->inputs_dropped, 1, memory_order_relaxed);
}

/* A MSG_SUBSCRIBE holds a stream reference until the behaviour takes it; one that is never
 * delivered (the actor stopped before it) releases it here, or the stream would leak. */
static void sub_msg_release(pylon_msg *m)
{
    sub_msg *sm = (sub_msg *)m;
    if (sm->stream) pylon_stream_release(sm->stream);
    free(sm);
}

pylon_shard_result pylon_shard_subscribe(pylon_shard *s, pylon_stream *st, const char *sid,
                                         pylon_shard_format fmt)
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
    pylon_msg_init(&m->msg, MSG_SUBSCRIBE, sub_msg_release);
    pylon_stream_retain(st);
    m->stream = st;
    m->fmt = fmt;
    pylon_fmt_copy(m->sid, sizeof m->sid, sid);
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
    out->max_subscribers = s->cfg.max_subscribers;
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
    pthread_mutex_init(&r->live_lock, NULL);
    pthread_cond_init(&r->live_cond, NULL);
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

static bool options_parse(const char *text, pylon_shard_config *cfg)
{
    json_t *j = json_loads(text ? text : "{}", 0, NULL);
    bool ok = json_is_object(j);
    struct {
        const char *key;
        uint32_t *to;
    } f[] = {{"tick_rate_hz", &cfg->tick_rate_hz},
             {"max_subscribers", &cfg->max_subscribers},
             {"idle_ticks_before_shutdown", &cfg->idle_ticks_before_shutdown},
             {"max_input_queue", &cfg->max_input_queue}};
    for (size_t i = 0; ok && i < sizeof f / sizeof f[0]; i++) {
        json_t *v = json_object_get(j, f[i].key);
        if (!v) continue;
        ok = json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= 1000000;
        if (ok) *f[i].to = (uint32_t)json_integer_value(v);
    }
    json_t *cs = json_object_get(j, "checkpoint_secs");
    if (ok && json_is_integer(cs)) cfg->checkpoint_secs = (int32_t)json_integer_value(cs);
    json_decref(j);
    return ok && cfg->tick_rate_hz <= 1000;
}

/* Creates (from == NULL) or restores a shard from its checkpoint. */
static int make_shard(pylon_shards *r, const char *id, const char *kind, const char *config_json,
                      const pylon_shard_config *cfg, const pylon_shard_row *from, char *err,
                      size_t errlen)
{
    const pylon_sim_vtable *sim = pylon_shards_kind(r, kind);
    if (!sim) {
        snprintf(err, errlen, "unknown shard kind \"%s\"", kind);
        return 400;
    }
    if (from && !sim->restore) {
        snprintf(err, errlen, "the \"%s\" simulation cannot restore a checkpoint", kind);
        return 400;
    }
    pylon_shard *s = calloc(1, sizeof *s);
    if (s) s->config_json = strdup(config_json ? config_json : "{}");
    if (!s || !s->config_json) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return 503;
    }
    snprintf(s->id, sizeof s->id, "%s", id);
    pthread_mutex_init(&s->in_lock, NULL);
    s->sim = sim;
    s->stats = &r->stats;
    s->reg = r;
    s->cfg = *cfg;
    s->cfg.record_path = NULL;
    if (s->cfg.checkpoint_secs < 0) s->cfg.checkpoint_secs = (int32_t)r->ckpt.default_secs;
    pylon_sim_ctx ctx = {
        .shard_id = s->id, .tick_rate_hz = cfg->tick_rate_hz, .config_json = s->config_json};
    if (from) {
        s->state = sim->restore(&ctx, from->state, from->len);
        if (!s->state) snprintf(err, errlen, "the \"%s\" simulation refused the state", kind);
        atomic_init(&s->tick, from->tick);
        s->ckpt_tick = from->tick; /* it is what the checkpoint holds */
    } else {
        s->state = sim->init(&ctx, err, errlen);
        s->ckpt_tick = UINT64_MAX; /* the first checkpoint is written even at tick 0 */
    }
    if (!s->state) {
        free(s->config_json);
        free(s);
        return 400;
    }
    if (cfg->record_path) {
        s->rec = fopen(cfg->record_path, "w");
        if (!s->rec) {
            snprintf(err, errlen, "cannot record to %s: %s", cfg->record_path, strerror(errno));
            sim->destroy(s->state);
            free(s->config_json);
            free(s);
            return 400;
        }
        snprintf(s->rec_path, sizeof s->rec_path, "%s", cfg->record_path);
        json_t *cfgj = json_loads(s->config_json, 0, NULL);
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
        free(s->config_json);
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
            if (s->rec) fclose(s->rec);
            free(s->config_json);
            free(s);
            snprintf(err, errlen, "out of memory");
            return 503;
        }
        r->shards = ns;
        r->cap = cap;
    }
    r->shards[r->n++] = s;
    /* Only a simulation that can come back (save and restore) is checkpointed. */
    s->ckpt_on = s->cfg.checkpoint_secs > 0 && sim->save && sim->restore && r->ckpt.save;
    pthread_mutex_lock(&r->live_lock);
    r->live++;
    pthread_mutex_unlock(&r->live_lock);
    s->actor = pylon_actor_spawn(r->rt, &SHARD_DEF, s);
    if (cfg->tick_rate_hz) {
        uint64_t interval = PYLON_NS_PER_SEC / cfg->tick_rate_hz;
        s->timer = pylon_timer_start(s->actor, MSG_TICK, first_deadline(r, interval), interval,
                                     MAX_CATCHUP, 0);
    }
    if (s->ckpt_on) {
        uint64_t every = (uint64_t)s->cfg.checkpoint_secs * PYLON_NS_PER_SEC;
        s->ckpt_timer =
            pylon_timer_start(s->actor, MSG_CHECKPOINT, pylon_clock_now_ns() + every, every, 0, 0);
    }
    pthread_rwlock_unlock(&r->lock);
    return 0;
}

int pylon_shards_create(pylon_shards *r, const char *id, const char *kind, const char *config_json,
                        const pylon_shard_config *cfg, char *err, size_t errlen)
{
    return make_shard(r, id, kind, config_json, cfg, NULL, err, errlen);
}

int pylon_shards_restore(pylon_shards *r, const pylon_shard_row *row, char *err, size_t errlen)
{
    pylon_shard_config cfg = PYLON_SHARD_CONFIG_DEFAULT;
    if (!options_parse(row->options, &cfg)) {
        snprintf(err, errlen, "its options are not valid JSON (%.60s)",
                 row->options ? row->options : "");
        return 400;
    }
    json_t *config = json_loads(row->config ? row->config : "{}", 0, NULL);
    bool ok = json_is_object(config);
    json_decref(config);
    if (!ok) {
        snprintf(err, errlen, "its config is not a JSON object");
        return 400;
    }
    return make_shard(r, row->id, row->kind, row->config, &cfg, row, err, errlen);
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
    if (s) {
        atomic_store(&s->removed, true); /* on_stop drops the checkpoint */
        retire(s);
    }
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
    pthread_mutex_lock(&r->live_lock); /* every on_stop has run: final checkpoints are queued */
    while (r->live)
        pthread_cond_wait(&r->live_cond, &r->live_lock);
    pthread_mutex_unlock(&r->live_lock);
    free(r->shards);
    pthread_rwlock_destroy(&r->lock);
    pthread_mutex_destroy(&r->live_lock);
    pthread_cond_destroy(&r->live_cond);
    free(r);
}

void pylon_shards_set_checkpoints(pylon_shards *r, const pylon_shard_checkpoints *c)
{
    r->ckpt = *c;
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
