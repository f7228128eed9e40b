/*
 * actor.h — actors and their messages.
 *
 * An actor is a behaviour function, a state pointer and a mailbox (mpsc.h). Any thread may send;
 * a worker of the runtime (runtime.h) runs the actor over a batch of messages, and the
 * scheduling rule guarantees that one actor is never run by two threads at once, so its state
 * needs no lock.
 *
 * Ownership rules:
 *  - A message is a struct that begins with (or embeds) `pylon_msg`. Sending hands it to the
 *    receiver. The behaviour owns every message it receives: it frees it (pylon_msg_free) or
 *    forwards it. The exception is a message flagged PYLON_MSG_BORROWED (timer ticks, stop
 *    requests): it belongs to its sender and the runtime gives it back after the behaviour
 *    returns, so the behaviour must neither free nor keep it.
 *  - An actor is reference-counted. spawn() returns one reference to the caller; the runtime
 *    holds another until the actor has stopped. Whoever keeps a pointer to send later holds a
 *    reference (retain/release). Memory goes when every reference is gone and nothing is queued.
 *  - stop() is asynchronous: messages already queued are delivered first, then on_stop runs in
 *    the actor's context (free the state there); later messages are released undelivered.
 */
#ifndef PYLON_ENGINE_ACTOR_H
#define PYLON_ENGINE_ACTOR_H

#include "engine/mpsc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pylon_runtime pylon_runtime;
typedef struct pylon_actor pylon_actor;
typedef struct pylon_msg pylon_msg;

enum {
    PYLON_MSG_BORROWED = 1u << 0, /* the runtime calls release() after the behaviour */
    PYLON_MSG_TIMER_ = 1u << 1,   /* internal: a timer tick (timer.h) */
    PYLON_MSG_STOP_ = 1u << 2,    /* internal: the actor's stop request */
    PYLON_MSG_FINAL_ = 1u << 3,   /* internal: the last reference is gone */
};

struct pylon_msg {
    pylon_mpsc_node node;
    uint32_t type;                 /* meaning is up to the receiver */
    uint32_t flags;                /* PYLON_MSG_* */
    void (*release)(pylon_msg *m); /* frees (or gives back) the message; NULL means free(m) */
};

typedef void (*pylon_behaviour_fn)(pylon_actor *self, pylon_msg *msg);

typedef struct pylon_actor_def {
    const char *name;                   /* for logs and metrics */
    pylon_behaviour_fn behaviour;       /* required */
    void (*on_stop)(pylon_actor *self); /* optional; runs once, in the actor's context */
    /* Optional; after every run that delivered at least one message, in the actor's context.
     * This is where an actor that batches (the persistence actor's group commit) acts on
     * everything it collected from its mailbox in this run. */
    void (*on_batch_end)(pylon_actor *self);
    uint32_t batch;     /* messages per run before yielding; 0 = runtime default */
    bool track_pending; /* keep pylon_actor_pending() exact (one more atomic add
                           per send); for actors whose senders enforce a bound */
} pylon_actor_def;

static inline void pylon_msg_init(pylon_msg *m, uint32_t type, void (*release)(pylon_msg *))
{
    m->type = type;
    m->flags = 0;
    m->release = release;
}

/* Frees an owned message through its release function (free() when it has none). */
void pylon_msg_free(pylon_msg *m);

/* `def` must outlive the actor (a static definition is the usual case). Never fails except on
 * memory exhaustion, where it returns NULL. */
pylon_actor *pylon_actor_spawn(pylon_runtime *rt, const pylon_actor_def *def, void *state);

/* Any thread. The message belongs to the actor from here on, even if it has stopped. */
void pylon_actor_send(pylon_actor *a, pylon_msg *m);

/* Asks the actor to stop after the messages already queued. Idempotent; any thread. */
void pylon_actor_stop(pylon_actor *a);

void pylon_actor_retain(pylon_actor *a);
void pylon_actor_release(pylon_actor *a);

void *pylon_actor_state(const pylon_actor *a);
void pylon_actor_set_state(pylon_actor *a, void *state); /* actor context only */
pylon_runtime *pylon_actor_runtime(const pylon_actor *a);
const char *pylon_actor_name(const pylon_actor *a);

/* Messages queued and not yet handled, for actors defined with track_pending (0 otherwise):
 * the figure a sender checks against its own bound before sending (e.g. the persistence queue
 * answers 503 OVERLOADED past it). */
uint32_t pylon_actor_pending(const pylon_actor *a);

#endif
