/*
 * loop.h — the bridge between actors and libuv.
 *
 * Owns: one I/O thread running one uv_loop, and the queue through which any other thread posts
 * work to it. Sockets belong to a loop and are touched only on its thread; actors answer by
 * posting tasks (a write, a close). Posting is lock-free and the loop is woken with one
 * uv_async_send per batch: only the post that finds no wake-up pending sends one.
 *
 * Tasks are intrusive (no allocation by the bridge); the poster owns the task until its run()
 * starts on the loop thread, and run() owns it from then on.
 */
#ifndef PYLON_ENGINE_LOOP_H
#define PYLON_ENGINE_LOOP_H

#include "engine/mpsc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct pylon_loop pylon_loop;
typedef struct pylon_loop_task pylon_loop_task;

struct pylon_loop_task {
    pylon_mpsc_node node;
    void (*run)(pylon_loop_task *task, pylon_loop *loop); /* on the loop thread */
};

typedef struct pylon_loop_stats {
    uint64_t tasks_run;
    uint64_t wakeups; /* uv_async callbacks: at most one per batch of posts */
} pylon_loop_stats;

/* Creates the loop (not yet running). NULL with a reason in `err` on failure. */
pylon_loop *pylon_loop_create(const char *name, char *err, size_t errlen);

/* Starts the I/O thread. 0, or a negative libuv/errno code. */
int pylon_loop_start(pylon_loop *loop);

/* Any thread. */
void pylon_loop_post(pylon_loop *loop, pylon_loop_task *task);

/* Runs the tasks still queued, closes every handle left on the loop, joins the thread and
 * frees the loop. Owners should close their handles first (their close callbacks then run and
 * free their memory); a handle left open is closed without a callback. Tasks posted while the
 * handles close run on the calling thread after the join. Not from the loop thread. */
void pylon_loop_destroy(pylon_loop *loop);

/* The uv_loop, for use on the loop thread (or before start). */
uv_loop_t *pylon_loop_uv(pylon_loop *loop);
bool pylon_loop_on_thread(const pylon_loop *loop);
const char *pylon_loop_name(const pylon_loop *loop);
void pylon_loop_stats_get(pylon_loop *loop, pylon_loop_stats *out);

#endif
