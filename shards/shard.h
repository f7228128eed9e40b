/*
 * shard.h — shards: one actor per running simulation, and the registry that names them.
 *
 * Owns: the tick loop of each shard (a periodic timer with absolute deadlines and capped
 * catch-up, engine/timer.h), its bounded input queue, its subscribers, and the encoding of
 * snapshots into frames [u64 big-endian tick][compact JSON] (protocol.md §4.2). Subscribers
 * that see the same bytes share one encoded frame; a subscriber whose send backlog is full
 * skips frames (the next one supersedes them) and never slows the shard.
 *
 * Encodings per subscriber (the WebSocket subprotocol, shard_api.h): JSON frames as above,
 * msgpack frames [u64 big-endian tick][msgpack] (pylon.msgpack), or text frames with the full
 * snapshot {"tick":n,"snapshot":…} then deltas {"tick":n,"base":m,"delta":…} (pylon.delta,
 * codec.h): one delta per (base, snapshot) pair, nothing when the snapshot did not change, a
 * full frame again after the subscriber's stream skipped one.
 *
 * Checkpoints: a shard whose simulation has save and restore hands its state to the registry's
 * checkpoint sink (the persistence actor) every checkpoint_secs and once more at shutdown; a
 * shard that finishes, goes idle or is removed drops its checkpoint. pylon_shards_restore brings
 * one back at start, continuing from the saved tick.
 *
 * Counters (tick, subscribers, queued inputs) are atomics readable from any thread, so
 * GET /api/shards/<id> never waits for the shard.
 */
#ifndef PYLON_SHARDS_SHARD_H
#define PYLON_SHARDS_SHARD_H

#include "actors/store.h"
#include "engine/runtime.h"
#include "http/stream.h"
#include "pylon/sim.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct pylon_shard pylon_shard;
typedef struct pylon_shards pylon_shards;

typedef struct pylon_shard_config {
    uint32_t tick_rate_hz;               /* default 20; 0 = tick only when inputs arrive */
    uint32_t max_subscribers;            /* default 256; 0 = unlimited */
    uint32_t idle_ticks_before_shutdown; /* default 1800; 0 = never */
    uint32_t max_input_queue;            /* default 10 000 */
    const char *record_path;             /* record inputs for `pylon replay` here; NULL: no */
    int32_t checkpoint_secs; /* -1: the registry's default (PYLON_SHARD_CHECKPOINT_SECS); 0: no */
} pylon_shard_config;

#define PYLON_SHARD_CONFIG_DEFAULT ((pylon_shard_config){20, 256, 1800, 10000, NULL, -1})

/* What a subscriber's frames carry (protocol.md §4.2 and the subprotocols of DECISIONS.md). */
typedef enum {
    PYLON_SHARD_FMT_JSON,    /* binary [u64 BE tick][compact JSON]: the stock clients */
    PYLON_SHARD_FMT_MSGPACK, /* binary [u64 BE tick][msgpack] */
    PYLON_SHARD_FMT_DELTA,   /* text {"tick","snapshot"} then {"tick","base","delta"} */
} pylon_shard_format;

/* Where checkpoints go (main.c wires the persistence actor). Both called from shard actors;
 * `save` copies the row before it returns. */
typedef struct pylon_shard_checkpoints {
    void *ctx;
    void (*save)(void *ctx, const pylon_shard_row *row);
    void (*drop)(void *ctx, const char *id);
    uint32_t default_secs; /* for shards created without checkpoint_secs; 0: none */
} pylon_shard_checkpoints;

/* The longest subscriber id, in bytes: sids are kept inline (inputs, subscribers, players).
 * A longer one is refused where it comes in, never cut (two ids sharing their first 63 bytes
 * would become one player). */
#define PYLON_SHARD_SID_MAX 63

typedef struct pylon_shard_status {
    char id[128];
    char kind[64];
    bool running;
    uint64_t tick;
    uint32_t subscribers, input_queue;
    uint32_t max_subscribers; /* the config's; 0 = unlimited */
    uint64_t inputs_dropped, frames_skipped;
    char record_path[512]; /* "" when not recording */
} pylon_shard_status;

pylon_shards *pylon_shards_new(pylon_runtime *rt);
/* Stops every shard, waits until each has stopped (and queued its final checkpoint), and frees
 * the registry (after the HTTP server is down, before the persistence actor stops). */
void pylon_shards_free(pylon_shards *r);
/* Before any shard is created. */
void pylon_shards_set_checkpoints(pylon_shards *r, const pylon_shard_checkpoints *c);
/* Re-creates a checkpointed shard with its simulation's restore, at the saved tick. 0, or an
 * error status with the reason in err (unknown kind, no restore, refused state, id taken). */
int pylon_shards_restore(pylon_shards *r, const pylon_shard_row *row, char *err, size_t errlen);

/* Simulations by kind: the built-ins, then plugins (pylon_shards_add_kind). */
bool pylon_shards_add_kind(pylon_shards *r, const pylon_sim_vtable *sim);
const pylon_sim_vtable *pylon_shards_kind(pylon_shards *r, const char *kind);

/* 0 on success; 409 when the id exists; 400 when the kind is unknown or init refused the
 * config (reason in err). */
int pylon_shards_create(pylon_shards *r, const char *id, const char *kind, const char *config_json,
                        const pylon_shard_config *cfg, char *err, size_t errlen);
/* A new reference (release it), or NULL. */
pylon_shard *pylon_shards_get(pylon_shards *r, const char *id);
bool pylon_shards_remove(pylon_shards *r, const char *id);
/* Every shard's status, malloc'd array (free it); *n entries. */
pylon_shard_status *pylon_shards_list(pylon_shards *r, size_t *n);

/* Process-wide tick timing for /metrics: how long ticks take and how late they start. */
#define PYLON_SHARD_TICK_BUCKETS 10
extern const double pylon_shard_tick_bounds[PYLON_SHARD_TICK_BUCKETS]; /* seconds; last +Inf */
typedef struct pylon_shard_metrics {
    uint64_t duration[PYLON_SHARD_TICK_BUCKETS], lateness[PYLON_SHARD_TICK_BUCKETS];
    uint64_t count;
    double duration_sum_s, lateness_sum_s;
    uint64_t shards;
} pylon_shard_metrics;
void pylon_shards_metrics(pylon_shards *r, pylon_shard_metrics *out);
/* The same as Prometheus text (malloc'd), for /metrics. `shards` is a pylon_shards. */
char *pylon_shards_prometheus(void *shards);

void pylon_shard_release(pylon_shard *s);
void pylon_shard_status_get(pylon_shard *s, pylon_shard_status *out);

typedef enum {
    PYLON_SHARD_OK = 0,
    PYLON_SHARD_STOPPED,
    PYLON_SHARD_FULL,       /* subscribers at max */
    PYLON_SHARD_QUEUE_FULL, /* input queue at max */
} pylon_shard_result;

/* Any thread. Queues an input; *server_seq is its per-shard sequence number (from 1). */
pylon_shard_result pylon_shard_input(pylon_shard *s, const char *sid, const char *input_json,
                                     size_t len, uint64_t client_seq, uint64_t *server_seq);
/* Any thread. Counts an input refused before it reached the queue (e.g. a WebSocket message
 * that is not JSON) in inputs_dropped; nothing is queued, so no tick and no idle reset. */
void pylon_shard_count_dropped(pylon_shard *s);
/* Any thread. The stream receives one frame per tick from the next tick on, in `fmt` (SSE
 * streams get SSE events whatever fmt says). */
pylon_shard_result pylon_shard_subscribe(pylon_shard *s, pylon_stream *st, const char *sid,
                                         pylon_shard_format fmt);
void pylon_shard_unsubscribe(pylon_shard *s, pylon_stream *st);

/* Where in the tick interval the k-th shard created ticks (ns after a multiple of `interval`).
 * Shards created in a burst (the matchmaker, a benchmark, a restart restoring checkpoints) would
 * otherwise tick at the same instant: one burst of work and frames per interval, the last shard
 * of the burst starting late (tick lateness p99 3.7 ms at 1 000 players before, 0.37 ms after).
 * A golden-ratio sequence spreads any number of shards evenly: the first N phases split the
 * interval into gaps of at most three sizes (the three-gap theorem). */
uint64_t pylon_shard_tick_phase(uint64_t k, uint64_t interval);

#endif
