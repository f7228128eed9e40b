/*
 * mpsc.h — intrusive lock-free multi-producer single-consumer queue with an idle mark.
 *
 * Owns: the queue algorithm only. It is Dmitry Vyukov's node-based MPSC queue (the link lives
 * inside the queued object, so pushing never allocates) with the Pony runtime's trick for
 * scheduling: the low bit of `head` marks the queue IDLE, i.e. empty with no consumer running.
 *  - push() exchanges `head`; the one push that finds IDLE returns true and must wake (or
 *    schedule) the consumer. Any later push finds the bit already cleared.
 *  - The consumer, when it finds nothing more to do, calls try_idle(): it sets IDLE only if the
 *    queue is really empty, atomically against pushes. If it fails, something arrived: the
 *    consumer keeps running.
 * So exactly one consumer is ever active, and an idle queue costs producers nothing extra.
 *
 * Invariants: `tail` is touched by the consumer only; `head` is the last pushed node and is
 * never marked while a consumer is active; the stub node is re-inserted whenever the consumer
 * would otherwise take the last real node, so a node returned by pop() is no longer referenced
 * by the queue and belongs to the caller (it may be freed or pushed elsewhere at once).
 *
 * pop() may return NULL while a producer is between its exchange and its link store; the queue
 * is then not empty, only not yet readable, and try_idle() fails, so the consumer comes back.
 */
#ifndef PYLON_ENGINE_MPSC_H
#define PYLON_ENGINE_MPSC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pylon_mpsc_node {
    _Atomic(struct pylon_mpsc_node *) next;
} pylon_mpsc_node;

typedef struct pylon_mpsc {
    _Atomic(uintptr_t) head; /* last pushed node | PYLON_MPSC_IDLE */
    pylon_mpsc_node *tail;   /* consumer only */
    pylon_mpsc_node stub;
} pylon_mpsc;

#define PYLON_MPSC_IDLE ((uintptr_t)1)

/* The queue starts IDLE: the first push returns true. */
static inline void pylon_mpsc_init(pylon_mpsc *q)
{
    atomic_store_explicit(&q->stub.next, NULL, memory_order_relaxed);
    atomic_store_explicit(&q->head, (uintptr_t)&q->stub | PYLON_MPSC_IDLE, memory_order_relaxed);
    q->tail = &q->stub;
}

/* Any thread. Wait-free: one exchange and one store. True when the queue was idle: the caller
 * then owns waking the consumer. */
static inline bool pylon_mpsc_push(pylon_mpsc *q, pylon_mpsc_node *n)
{
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    uintptr_t prev = atomic_exchange_explicit(&q->head, (uintptr_t)n, memory_order_acq_rel);
    pylon_mpsc_node *p = (pylon_mpsc_node *)(prev & ~PYLON_MPSC_IDLE);
    atomic_store_explicit(&p->next, n, memory_order_release);
    return (prev & PYLON_MPSC_IDLE) != 0;
}

/* Consumer only. Returns the oldest node, or NULL if nothing is readable yet. */
static inline pylon_mpsc_node *pylon_mpsc_pop(pylon_mpsc *q)
{
    pylon_mpsc_node *tail = q->tail;
    pylon_mpsc_node *next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (tail == &q->stub) {
        if (next == NULL) return NULL;
        q->tail = next;
        tail = next;
        next = atomic_load_explicit(&next->next, memory_order_acquire);
    }
    if (next != NULL) {
        q->tail = next;
        return tail;
    }
    /* `tail` is the last linked node. If it is also the head, put the stub behind it so the
     * list never runs dry, then hand `tail` out. */
    if ((uintptr_t)tail != atomic_load_explicit(&q->head, memory_order_acquire))
        return NULL; /* a push is in flight */
    pylon_mpsc_push(q, &q->stub);
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (next != NULL) {
        q->tail = next;
        return tail;
    }
    return NULL;
}

/* Consumer only: marks the queue IDLE if it is empty with no push in flight. False means
 * there is (or is about to be) something to pop: keep consuming. */
static inline bool pylon_mpsc_try_idle(pylon_mpsc *q)
{
    if (q->tail != &q->stub || atomic_load_explicit(&q->stub.next, memory_order_acquire) != NULL)
        return false;
    uintptr_t expect = (uintptr_t)&q->stub;
    return atomic_compare_exchange_strong_explicit(&q->head, &expect, expect | PYLON_MPSC_IDLE,
                                                   memory_order_seq_cst, memory_order_relaxed);
}

#endif
