/*
 * hash.h — the string hash the in-memory tables share: 32-bit FNV-1a over a NUL-terminated
 * string. Small, no set-up, good enough spread for the bucket tables it serves (sessions,
 * rate-limit entries, per-IP slots, cached statements, arena players). The arena's spawn points
 * come from it too, so its values must not change (recorded replays depend on them).
 */
#ifndef PYLON_ENGINE_HASH_H
#define PYLON_ENGINE_HASH_H

#include <stdint.h>

static inline uint32_t pylon_hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

#endif
