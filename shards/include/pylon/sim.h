/*
 * pylon/sim.h — the SimState API: what a game simulation implements to run as a pylon shard.
 *
 * This is the one public header for game authors. A simulation is a vtable of plain C
 * functions over an opaque state pointer the simulation owns. The shard (a pylon actor) calls
 * them from one thread at a time, so the state needs no lock, and never from an I/O thread:
 *   init          once, when the shard is created (config = the JSON object given at creation)
 *   apply_input   for each queued input, in arrival order, at the start of a tick
 *   tick          once per tick with dt in seconds (0 on the first tick)
 *   snapshot_for  per subscriber after the tick: what that subscriber sees, as compact JSON
 *                 (subscribers that get the same bytes share one encoded frame)
 *   is_finished   after each tick; true stops the shard
 *   save/restore  optional, for checkpoints: the state as bytes, and back (restore gets the
 *                 same ctx as init, config included; NULL refuses bytes it cannot read). Only
 *                 a simulation with both is checkpointed and comes back after a restart
 *   destroy       once, when the shard stops
 *
 * A simulation built as a shared object exports `const pylon_sim_vtable *pylon_sim_plugin(void)`
 * and sets abi_version to PYLON_SIM_ABI_VERSION; the server refuses a plugin built against
 * another version.
 */
#ifndef PYLON_SIM_H
#define PYLON_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PYLON_SIM_ABI_VERSION 1

typedef struct pylon_sim_ctx {
    const char *shard_id;
    uint32_t tick_rate_hz;   /* 0: event-driven (ticks only when inputs arrive) */
    const char *config_json; /* the "config" object given when the shard was created, or "{}" */
} pylon_sim_ctx;

/* A growable output buffer for snapshot_for / save. */
typedef struct pylon_sim_out {
    char *data;
    size_t len, cap;
} pylon_sim_out;

/* Appends bytes; false on exhaustion. */
bool pylon_sim_out_put(pylon_sim_out *o, const void *bytes, size_t n);
/* printf-style append. */
bool pylon_sim_out_printf(pylon_sim_out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends `s` escaped for the inside of a JSON string (quotes, backslashes and control
 * characters; UTF-8 passes as is), without the surrounding quotes. For names that come from
 * users, such as sids, in hand-written snapshot JSON. */
bool pylon_sim_out_json_escaped(pylon_sim_out *o, const char *s);

typedef struct pylon_sim_vtable {
    uint32_t abi_version; /* PYLON_SIM_ABI_VERSION */
    const char *kind;     /* the name used in POST /api/shards {"kind": ...} */
    /* NULL with a reason in err when the config is not acceptable. */
    void *(*init)(const pylon_sim_ctx *ctx, char *err, size_t errlen);
    /* `input_json` is the client's "input" value (compact JSON); false drops it (counted). */
    bool (*apply_input)(void *state, const char *sid, const char *input_json, size_t len,
                        uint64_t client_seq);
    void (*tick)(void *state, double dt);
    /* Writes what `sid` sees (compact JSON) into out. */
    void (*snapshot_for)(void *state, const char *sid, pylon_sim_out *out);
    bool (*is_finished)(void *state);
    bool (*save)(void *state, pylon_sim_out *out);                             /* optional */
    void *(*restore)(const pylon_sim_ctx *ctx, const char *bytes, size_t len); /* optional */
    void (*destroy)(void *state);
} pylon_sim_vtable;

/* ---- area-of-interest helpers (membership tests; the filtering is the game's) ------------- */

typedef struct pylon_aoi_sphere {
    double x, y, z, radius;
} pylon_aoi_sphere;
typedef struct pylon_aoi_box {
    double min_x, min_y, min_z, max_x, max_y, max_z;
} pylon_aoi_box;
/* A square grid on x/z: cells of cell_size; a point is visible within radius_cells cells. */
typedef struct pylon_aoi_grid {
    double cell_size;
    int radius_cells;
} pylon_aoi_grid;

static inline bool pylon_aoi_sphere_contains(const pylon_aoi_sphere *s, double x, double y,
                                             double z)
{
    double dx = x - s->x, dy = y - s->y, dz = z - s->z;
    return dx * dx + dy * dy + dz * dz <= s->radius * s->radius;
}

static inline bool pylon_aoi_box_contains(const pylon_aoi_box *b, double x, double y, double z)
{
    return x >= b->min_x && x <= b->max_x && y >= b->min_y && y <= b->max_y && z >= b->min_z &&
           z <= b->max_z;
}

static inline long pylon_aoi_grid_cell(const pylon_aoi_grid *g, double v)
{
    double c = v / g->cell_size;
    long i = (long)c; /* truncates toward zero: floor is one less for a negative fraction */
    if ((double)i > c) i--;
    return i;
}

/* Whether (x2, z2) is within the grid radius of (x1, z1). */
static inline bool pylon_aoi_grid_near(const pylon_aoi_grid *g, double x1, double z1, double x2,
                                       double z2)
{
    long dx = pylon_aoi_grid_cell(g, x1) - pylon_aoi_grid_cell(g, x2);
    long dz = pylon_aoi_grid_cell(g, z1) - pylon_aoi_grid_cell(g, z2);
    return dx <= g->radius_cells && dx >= -g->radius_cells && dz <= g->radius_cells &&
           dz >= -g->radius_cells;
}

#endif
