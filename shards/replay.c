/* replay.c — see replay.h. */
#include "shards/replay.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

uint64_t pylon_sim_state_hash(const pylon_sim_vtable *sim, void *state)
{
    pylon_sim_out out = {0};
    if (sim->save)
        sim->save(state, &out);
    else
        sim->snapshot_for(state, "", &out);
    uint64_t h = XXH3_64bits(out.data ? out.data : "", out.len);
    free(out.data);
    return h;
}

int pylon_replay_run(pylon_shards *kinds, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    const pylon_sim_vtable *sim = NULL;
    void *state = NULL;
    uint64_t tick = 0, end = 0, want = 0;
    double dt = 0.05;
    bool ended = false;
    int rc = 1;
    while ((n = getline(&line, &cap, f)) > 0) {
        json_error_t jerr;
        json_t *j = json_loadb(line, (size_t)n, 0, &jerr);
        if (!j) {
            fprintf(stderr, "pylon replay: %s: line is not JSON: %s\n", path, jerr.text);
            goto out;
        }
        if (json_object_get(j, "replay")) {
            const char *kind = json_string_value(json_object_get(j, "kind"));
            sim = kind ? pylon_shards_kind(kinds, kind) : NULL;
            if (!sim) {
                fprintf(stderr,
                        "pylon replay: %s: unknown simulation kind \"%s\" (plugins come "
                        "from PYLON_SHARD_PLUGINS)\n",
                        path, kind ? kind : "");
                json_decref(j);
                goto out;
            }
            json_int_t hz = json_integer_value(json_object_get(j, "tick_rate_hz"));
            dt = hz > 0 ? 1.0 / (double)hz : 0;
            char *cfg = json_dumps(json_object_get(j, "config") ? json_object_get(j, "config")
                                                                : json_object(),
                                   JSON_COMPACT);
            pylon_sim_ctx ctx = {.shard_id = json_string_value(json_object_get(j, "id")),
                                 .tick_rate_hz = (uint32_t)hz,
                                 .config_json = cfg};
            char err[200];
            state = sim->init(&ctx, err, sizeof err);
            free(cfg);
            if (!state) {
                fprintf(stderr, "pylon replay: %s: init refused the config: %s\n", path, err);
                json_decref(j);
                goto out;
            }
        } else if (state && json_object_get(j, "tick")) {
            uint64_t at = (uint64_t)json_integer_value(json_object_get(j, "tick"));
            while (tick + 1 < at)
                sim->tick(state, ++tick == 1 ? 0 : dt); /* quiet ticks */
            size_t i;
            json_t *in;
            json_array_foreach(json_object_get(j, "inputs"), i, in)
            {
                char *text = json_dumps(json_array_get(in, 1), JSON_COMPACT | JSON_ENCODE_ANY);
                if (text)
                    sim->apply_input(state, json_string_value(json_array_get(in, 0)), text,
                                     strlen(text),
                                     (uint64_t)json_integer_value(json_array_get(in, 2)));
                free(text);
            }
            tick = at;
            /* an event-driven shard's line carries its dt (the time since its last tick) */
            json_t *line_dt = json_object_get(j, "dt");
            sim->tick(state, at == 1 ? 0 : line_dt ? json_number_value(line_dt) : dt);
        } else if (state && json_object_get(j, "end")) {
            end = (uint64_t)json_integer_value(json_object_get(j, "end"));
            want = strtoull(json_string_value(json_object_get(j, "hash"))
                                ? json_string_value(json_object_get(j, "hash"))
                                : "0",
                            NULL, 16);
            while (tick < end)
                sim->tick(state, ++tick == 1 ? 0 : dt);
            ended = true;
        }
        json_decref(j);
    }
    if (!ended) {
        fprintf(stderr,
                "pylon replay: %s: no end line (the shard was still running, or the file "
                "is cut short)\n",
                path);
        goto out;
    }
    uint64_t got = pylon_sim_state_hash(sim, state);
    if (got == want) {
        printf("replay OK: %llu ticks, final state hash %016llx matches\n", (unsigned long long)end,
               (unsigned long long)got);
        rc = 0;
    } else {
        fprintf(stderr,
                "replay MISMATCH: final state hash %016llx, recorded %016llx (the "
                "simulation is not deterministic)\n",
                (unsigned long long)got, (unsigned long long)want);
    }
out:
    if (state) sim->destroy(state);
    free(line);
    fclose(f);
    return rc;
}
