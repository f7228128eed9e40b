/*
 * replay.h — recording a shard's inputs, and `pylon replay FILE`.
 *
 * Owns: the replay file format (JSON lines):
 *   {"replay":1,"kind":"arena","id":"m1","tick_rate_hz":20,"config":{…}}
 *   {"tick":12,"inputs":[["<sid>",<input>,<client_seq>],…]}      one line per tick with inputs
 *   {"tick":3,"dt":0.0123,"inputs":[…]}   event-driven shards (tick_rate_hz 0): every tick, with
 *                                         its dt (the time since the previous tick)
 *   {"end":240,"hash":"<xxh3-64 hex of the final state>"}           written when the shard stops
 * The state hash is over the simulation's save() bytes (or its spectator snapshot when it has
 * no save). A replay re-creates the simulation, applies the same inputs at the same ticks with
 * the same dt (fixed, or the recorded one), and compares the final hash: determinism is
 * checked, not assumed.
 */
#ifndef PYLON_SHARDS_REPLAY_H
#define PYLON_SHARDS_REPLAY_H

#include "pylon/sim.h"
#include "shards/shard.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* The fingerprint of a simulation's state. */
uint64_t pylon_sim_state_hash(const pylon_sim_vtable *sim, void *state);

/* `pylon replay FILE`: 0 when the final hash matches, 1 otherwise (reason on stderr). */
int pylon_replay_run(pylon_shards *kinds, const char *path);

#endif
