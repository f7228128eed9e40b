/*
 * actor.c — spawning, sending, stopping and running one actor's batch.
 *
 * See runtime_internal.h for the combined reference/queue counter that makes scheduling and
 * freeing race-free with one atomic operation per send.
 */
#include "engine/runtime_internal.h"
#include "engine/log.h"

#include <stdlib.h>

void pylon_msg_free(pylon_msg *m)
{
    if (m->release)
        m->release(m);
    else
        free(m);
}

static void actor_free(pylon_actor *a)
{
    pylon_runtime *rt = a->rt;
    free(a);
    pylon_runtime_actor_freed_(rt);
}

pylon_actor *pylon_actor_spawn(pylon_runtime *rt, const pylon_actor_def *def, void *state)
{
    pylon_actor *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    pylon_mpsc_init(&a->mailbox);
    /* Two references: the caller's handle and the runtime's, held until the actor stops. */
    atomic_init(&a->rc, 2 * PYLON_RC_REF);
    a->rt = rt;
    a->def = def;
    a->state = state;
    a->batch = def->batch ? def->batch : pylon_runtime_default_batch_(rt);
    atomic_init(&a->stop_requested, false);
    pylon_msg_init(&a->stop_msg, 0, NULL);
    a->stop_msg.flags = PYLON_MSG_BORROWED | PYLON_MSG_STOP_;
    pylon_runtime_actor_born_(rt);
    return a;
}

void pylon_actor_send(pylon_actor *a, pylon_msg *m)
{
    /* Count first, then link: the consumer only ever pops counted messages, so the queued
     * count can never go below zero; the push that takes it from 0 schedules the actor. */
    uint64_t old = atomic_fetch_add_explicit(&a->rc, 1, memory_order_acq_rel);
    pylon_mpsc_push(&a->mailbox, &m->node);
    if ((old & PYLON_RC_QUEUED_MASK) == 0) pylon_runtime_schedule_(a->rt, a);
}

void pylon_actor_stop(pylon_actor *a)
{
    if (atomic_exchange_explicit(&a->stop_requested, true, memory_order_acq_rel)) return;
    pylon_actor_send(a, &a->stop_msg);
}

void pylon_actor_retain(pylon_actor *a)
{
    atomic_fetch_add_explicit(&a->rc, PYLON_RC_REF, memory_order_relaxed);
}

void pylon_actor_release(pylon_actor *a)
{
    uint64_t old = atomic_fetch_sub_explicit(&a->rc, PYLON_RC_REF, memory_order_acq_rel);
    if (old == PYLON_RC_REF) actor_free(a); /* last reference, nothing queued */
}

void *pylon_actor_state(const pylon_actor *a)
{
    return a->state;
}

void pylon_actor_set_state(pylon_actor *a, void *state)
{
    a->state = state;
}

pylon_runtime *pylon_actor_runtime(const pylon_actor *a)
{
    return a->rt;
}

const char *pylon_actor_name(const pylon_actor *a)
{
    return a->def->name ? a->def->name : "actor";
}

uint32_t pylon_actor_pending(const pylon_actor *a)
{
    return (uint32_t)(atomic_load_explicit(&a->rc, memory_order_relaxed) & PYLON_RC_QUEUED_MASK);
}

/* Gives a message back without delivering it (the actor has stopped). */
static void drop_undelivered(pylon_msg *m)
{
    if (m->flags & PYLON_MSG_TIMER_)
        pylon_timer_returned_(m);
    else if (m->flags & PYLON_MSG_STOP_)
        return;
    else
        pylon_msg_free(m); /* borrowed or owned: release() gives it back either way */
}

static void deliver(pylon_actor *a, pylon_msg *m)
{
    if (m->flags & PYLON_MSG_STOP_) {
        if (a->stopped) return;
        a->stopped = true;
        if (a->def->on_stop) a->def->on_stop(a);
        a->state = NULL;
        /* Drop the runtime's life reference. Cannot free here: this message is still counted
         * as queued until the batch ends. */
        atomic_fetch_sub_explicit(&a->rc, PYLON_RC_REF, memory_order_acq_rel);
        return;
    }
    if (a->stopped) {
        drop_undelivered(m);
        return;
    }
    if (m->flags & PYLON_MSG_TIMER_) {
        if (pylon_timer_deliverable_(m)) a->def->behaviour(a, m);
        pylon_timer_returned_(m);
        return;
    }
    a->def->behaviour(a, m);
    if (m->flags & PYLON_MSG_BORROWED) m->release(m);
}

bool pylon_actor_run_(pylon_actor *a, uint32_t *delivered)
{
    uint32_t n = 0;
    while (n < a->batch) {
        pylon_mpsc_node *node = pylon_mpsc_pop(&a->mailbox);
        if (!node) break; /* empty, or a producer is mid-push: it is counted, so we come back */
        n++;
        deliver(a, (pylon_msg *)node);
    }
    *delivered = n;
    uint64_t left = atomic_fetch_sub_explicit(&a->rc, n, memory_order_acq_rel) - n;
    if (left & PYLON_RC_QUEUED_MASK) return true;
    if (left == 0) actor_free(a);
    return false;
}
