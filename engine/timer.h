/*
 * timer.h — one-shot and periodic timers that deliver tick messages to an actor.
 *
 * Owns: the timer thread's heap of deadlines. A periodic timer's deadlines are absolute,
 * deadline(n) = first + n × interval, so ticks never drift however late one is handled.
 *
 * Delivery: each timer has one tick message (borrowed, see actor.h). While the actor has not
 * yet handled the previous tick (it is stalled, or the machine was), further deadlines are not
 * queued again; they are counted and reported with the next tick, at the next deadline, as
 * `due` = 1 + the ticks owed. Catch-up is capped: `due` never exceeds 1 + max_catchup and the
 * rest is reported as `skipped`, so a long stall costs a bounded burst, never a pile-up.
 *
 * Cancel: after pylon_timer_cancel() returns, the actor receives no further tick from that
 * timer, provided cancel ran before the actor handles its next message (always true when the
 * actor cancels its own timer). The handle must not be used after cancel.
 */
#ifndef PYLON_ENGINE_TIMER_H
#define PYLON_ENGINE_TIMER_H

#include "engine/actor.h"

#include <stdint.h>

typedef struct pylon_timer pylon_timer;

typedef struct pylon_tick {
    pylon_msg msg; /* type = the msg_type given at start */
    pylon_timer *timer;
    uint64_t user;        /* the value given at start */
    uint64_t seq;         /* index n of the latest deadline this tick stands for */
    uint64_t deadline_ns; /* first + seq × interval (monotonic clock) */
    uint32_t due;         /* ticks to run now: 1 + caught-up ones, at most 1 + max_catchup */
    uint32_t skipped;     /* deadlines dropped by the catch-up cap since the previous tick */
} pylon_tick;

static inline pylon_tick *pylon_tick_of(pylon_msg *m)
{
    return (pylon_tick *)m;
}

/* `first_ns` is an absolute pylon_clock_now_ns() time; `interval_ns` 0 makes a one-shot.
 * The timer holds a reference to `target` until it is cancelled (or, for a one-shot, fired
 * and handled). Returns NULL only on memory exhaustion. */
pylon_timer *pylon_timer_start(pylon_actor *target, uint32_t msg_type, uint64_t first_ns,
                               uint64_t interval_ns, uint32_t max_catchup, uint64_t user);

/* Any thread, once per timer (a fired one-shot too): releases the handle. */
void pylon_timer_cancel(pylon_timer *t);

#endif
