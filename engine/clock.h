/* clock.h — the monotonic clock every deadline in the engine is measured on. */
#ifndef PYLON_ENGINE_CLOCK_H
#define PYLON_ENGINE_CLOCK_H

#include <stdint.h>
#include <time.h>

#define PYLON_NS_PER_MS  1000000ull
#define PYLON_NS_PER_SEC 1000000000ull

static inline uint64_t pylon_clock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * PYLON_NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

#endif
