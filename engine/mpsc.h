/*
 * mpsc.h — intrusive lock-free multi-producer single-consumer queue.
 *
 * Owns: the queue algorithm only (Dmitry Vyukov's node-based MPSC queue, the one the Pony
 * runtime's message queue follows). The link lives inside the queued object, so pushing never
 * allocates. Producers may be any thread; exactly one thread pops at a time (the caller
 * guarantees that: an actor's mailbox is popped only by the worker running the actor, a loop's
 * task queue only by the loop thread).
 *
 * Invariants: `tail` is touched by the consumer only; `head` is the last pushed node; the stub
 * node is re-inserted whenever the consumer would otherwise take the last real node, so a node
 * returned by pop is no longer referenced by the queue and belongs to the caller.
 *
 * pop() may return NULL while a producer is between its exchange and its link store; the queue
 * is then not empty, only not yet readable. Callers that count messages separately (mailbox.h)
 * simply retry later.
 */
#ifndef PYLON_ENGINE_MPSC_H
#define PYLON_ENGINE_MPSC_H

#include <stdatomic.h>
#include <stddef.h>

typedef struct pylon_mpsc_node {
    _Atomic(struct pylon_mpsc_node *) next;
} pylon_mpsc_node;

typedef struct pylon_mpsc {
    _Atomic(pylon_mpsc_node *) head; /* producers exchange here */
    pylon_mpsc_node *tail;           /* consumer only */
    pylon_mpsc_node stub;
} pylon_mpsc;

static inline void pylon_mpsc_init(pylon_mpsc *q)
{
    atomic_store_explicit(&q->stub.next, NULL, memory_order_relaxed);
    atomic_store_explicit(&q->head, &q->stub, memory_order_relaxed);
    q->tail = &q->stub;
}

/* Any thread. Wait-free: one exchange and one store. */
static inline void pylon_mpsc_push(pylon_mpsc *q, pylon_mpsc_node *n)
{
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    pylon_mpsc_node *prev = atomic_exchange_explicit(&q->head, n, memory_order_acq_rel);
    atomic_store_explicit(&prev->next, n, memory_order_release);
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
     * queue never becomes empty-without-stub, then hand `tail` out. */
    if (tail != atomic_load_explicit(&q->head, memory_order_acquire)) return NULL; /* push in flight */
    pylon_mpsc_push(q, &q->stub);
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (next != NULL) {
        q->tail = next;
        return tail;
    }
    return NULL;
}

/* Consumer only: true when nothing at all is queued and no push is in flight. */
static inline int pylon_mpsc_is_empty(pylon_mpsc *q)
{
    return q->tail == &q->stub &&
           atomic_load_explicit(&q->stub.next, memory_order_acquire) == NULL &&
           atomic_load_explicit(&q->head, memory_order_acquire) == &q->stub;
}

#endif
