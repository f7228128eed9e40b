/*
 * codec.h — the shard WebSocket's alternative encodings (protocol.md §4.2, DECISIONS.md §2):
 * msgpack snapshots and inputs for `pylon.msgpack` clients, and the JSON delta for `pylon.delta`.
 *
 * Owns: the JSON <-> msgpack mapping and the delta rule. Simulations keep producing compact
 * JSON (pylon/sim.h); these functions re-encode what they produce, once per distinct snapshot.
 *
 * JSON -> msgpack: objects become maps with str keys, arrays arrays, strings str, integers int
 * (the smallest encoding), reals float64, true/false/null their msgpack forms.
 * msgpack -> JSON (inputs): the same mapping back; bin becomes a string when it is valid UTF-8
 * (jansson refuses anything else), ext and non-string map keys are refused.
 */
#ifndef PYLON_SHARDS_CODEC_H
#define PYLON_SHARDS_CODEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* The msgpack encoding of `j`, malloc'd into *out (*len bytes); false on exhaustion. */
bool pylon_json_to_msgpack(const json_t *j, char **out, size_t *len);

/* One msgpack value (the whole buffer) as JSON; NULL when it is malformed, has trailing bytes
 * or cannot be represented. */
json_t *pylon_msgpack_to_json(const void *data, size_t len);

typedef enum {
    PYLON_DIFF_SAME,  /* nothing changed: no frame at all */
    PYLON_DIFF_DELTA, /* *out is the delta object */
    PYLON_DIFF_WHOLE, /* the root is not an object on both sides: send the whole snapshot */
} pylon_diff_result;

/* The delta that turns `prev` into `cur`: an object holding only the keys whose values
 * changed, keys that disappeared as null, and for keys that are objects on both sides the
 * delta of those objects (recursively); anything else (arrays, scalars, type changes) is
 * replaced whole. Applying it: for each key, null deletes, an object merges recursively into
 * an existing object, anything else replaces (RFC 7386 JSON Merge Patch semantics, so a value
 * that becomes null reads as removed: clients treat a missing key and null alike). */
pylon_diff_result pylon_json_diff(const json_t *prev, const json_t *cur, json_t **out);

#endif
