/*
 * test_loop.c — the actor/libuv bridge (engine/loop.h).
 *
 * Proves: 100,000 tasks posted by 4 threads each run exactly once, on the loop thread, and
 * the wake-ups are batched (fewer uv_async callbacks than tasks); tasks may post tasks from
 * the loop thread; destroy runs the tasks still queued, closes handles left open on the loop
 * (a uv_timer and a listening uv_tcp: closed, fd gone, nothing logged about open handles),
 * runs the close callbacks of handles being closed, and returns; a loop that was never
 * started can be destroyed and still runs what was queued; a flood of tasks does not starve
 * the loop's I/O (a timer due meanwhile fires before the flood is through); messages the loop
 * thread sends to actors (held and handed over around each poll) are delivered, also when sent
 * from a timer callback right before the loop blocks in poll.
 */
#include "engine/clock.h"
#include "engine/log.h"
#include "engine/loop.h"
#include "engine/actor.h"
#include "engine/runtime.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include "support.h"

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int wait_u64(_Atomic uint64_t *v, uint64_t want, unsigned timeout_ms)
{
    uint64_t end = pylon_clock_now_ns() + (uint64_t)timeout_ms * PYLON_NS_PER_MS;
    while (atomic_load(v) < want) {
        if (pylon_clock_now_ns() > end) return 0;
        sleep_ms(1);
    }
    return 1;
}

static pylon_loop *make_loop(const char *name)
{
    char err[256] = "";
    pylon_loop *l = pylon_loop_create(name, err, sizeof err);
    cr_assert_not_null(l, "pylon_loop_create: %s", err);
    return l;
}

typedef struct count_task {
    pylon_loop_task task; /* first member */
    _Atomic uint32_t runs;
    uint32_t id;
} count_task;

static _Atomic uint64_t g_ran, g_off_thread, g_wrong_loop;
static pylon_loop *g_loop;

static void count_run(pylon_loop_task *task, pylon_loop *loop)
{
    count_task *ct = (count_task *)task;
    if (loop != g_loop) atomic_fetch_add(&g_wrong_loop, 1);
    if (!pylon_loop_on_thread(loop)) atomic_fetch_add(&g_off_thread, 1);
    atomic_fetch_add(&ct->runs, 1);
    atomic_fetch_add(&g_ran, 1);
}

#define POSTERS 4
#define TASKS   100000u

static count_task *g_tasks;
static _Atomic int g_go;

static void *poster(void *arg)
{
    uint32_t t = (uint32_t)(uintptr_t)arg;
    while (!atomic_load(&g_go)) {
    }
    for (uint32_t i = t; i < TASKS; i += POSTERS)
        pylon_loop_post(g_loop, &g_tasks[i].task);
    return NULL;
}

Test(loop, four_threads_post_100k_tasks_each_runs_once_on_loop_thread, .timeout = 60)
{
    g_loop = make_loop("test-loop");
    cr_assert_str_eq(pylon_loop_name(g_loop), "test-loop");
    cr_assert_not_null(pylon_loop_uv(g_loop));
    cr_assert_eq(pylon_loop_start(g_loop), 0);
    cr_assert_not(pylon_loop_on_thread(g_loop), "the test thread is not the loop thread");

    g_tasks = calloc(TASKS, sizeof *g_tasks);
    for (uint32_t i = 0; i < TASKS; i++) {
        g_tasks[i].task.run = count_run;
        g_tasks[i].id = i;
    }
    pthread_t th[POSTERS];
    for (uintptr_t t = 0; t < POSTERS; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, poster, (void *)t), 0);
    atomic_store(&g_go, 1);
    for (int t = 0; t < POSTERS; t++)
        pthread_join(th[t], NULL);

    cr_assert(wait_u64(&g_ran, TASKS, 30000), "ran %llu of %u tasks",
              (unsigned long long)atomic_load(&g_ran), TASKS);
    sleep_ms(10);
    pylon_loop_stats st;
    pylon_loop_stats_get(g_loop, &st);
    cr_assert_eq(st.tasks_run, TASKS, "stats.tasks_run %llu", (unsigned long long)st.tasks_run);
    cr_assert_geq(st.wakeups, 1);
    cr_assert_lt(st.wakeups, st.tasks_run, "%llu wake-ups for %llu tasks: no batching",
                 (unsigned long long)st.wakeups, (unsigned long long)st.tasks_run);
    pylon_loop_destroy(g_loop);

    cr_assert_eq(atomic_load(&g_ran), TASKS);
    cr_assert_eq(atomic_load(&g_off_thread), 0, "%llu tasks ran off the loop thread",
                 (unsigned long long)atomic_load(&g_off_thread));
    cr_assert_eq(atomic_load(&g_wrong_loop), 0);
    for (uint32_t i = 0; i < TASKS; i++)
        if (atomic_load(&g_tasks[i].runs) != 1)
            cr_assert_fail("task %u ran %u times", i, atomic_load(&g_tasks[i].runs));
    free(g_tasks);
    assert_no_leaks();
}

/* Tasks queued before the start run the moment the thread does, while pylon_loop_start may
 * still be storing the thread id: pylon_loop_on_thread must already say yes there, and under
 * ThreadSanitizer the start and those calls must not race (a server's first connection can
 * arrive just as its loop starts). */
static _Atomic uint64_t g_early_ran, g_early_off;

static void early_run(pylon_loop_task *task, pylon_loop *loop)
{
    if (!pylon_loop_on_thread(loop)) atomic_fetch_add(&g_early_off, 1);
    atomic_fetch_add(&g_early_ran, 1);
    free(task);
}

Test(loop, on_thread_is_true_for_tasks_queued_before_start, .timeout = 60)
{
    for (int round = 0; round < 50; round++) {
        pylon_loop *l = make_loop("early");
        for (int i = 0; i < 4; i++) {
            pylon_loop_task *t = calloc(1, sizeof *t);
            t->run = early_run;
            pylon_loop_post(l, t);
        }
        cr_assert_eq(pylon_loop_start(l), 0);
        cr_assert_not(pylon_loop_on_thread(l), "the test thread is not the loop thread");
        cr_assert(wait_u64(&g_early_ran, (uint64_t)(round + 1) * 4, 10000));
        pylon_loop_destroy(l);
    }
    cr_assert_eq(atomic_load(&g_early_off), 0, "%llu early tasks were told they ran off the loop",
                 (unsigned long long)atomic_load(&g_early_off));
    assert_no_leaks();
}

/* A task that posts the next one from the loop thread, 1000 deep. */
typedef struct chain_task {
    pylon_loop_task task;
    uint32_t left;
} chain_task;

static _Atomic uint64_t g_chain_runs;

static void chain_run(pylon_loop_task *task, pylon_loop *loop)
{
    chain_task *c = (chain_task *)task;
    if (!pylon_loop_on_thread(loop)) atomic_fetch_add(&g_off_thread, 1);
    atomic_fetch_add(&g_chain_runs, 1);
    if (c->left-- > 0)
        pylon_loop_post(loop, task); /* run() owns the task: it may post it again */
    else
        free(c);
}

Test(loop, tasks_post_tasks_from_the_loop_thread, .timeout = 30)
{
    g_loop = make_loop("chain");
    cr_assert_eq(pylon_loop_start(g_loop), 0);
    chain_task *c = malloc(sizeof *c);
    c->task.run = chain_run;
    c->left = 999;
    pylon_loop_post(g_loop, &c->task);
    cr_assert(wait_u64(&g_chain_runs, 1000, 10000), "chain ran %llu of 1000",
              (unsigned long long)atomic_load(&g_chain_runs));
    pylon_loop_destroy(g_loop);
    cr_assert_eq(atomic_load(&g_chain_runs), 1000);
    cr_assert_eq(atomic_load(&g_off_thread), 0);
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------- */
/* destroy                                                                                   */
/* ---------------------------------------------------------------------------------------- */

static void slow_run(pylon_loop_task *task, pylon_loop *loop)
{
    sleep_ms(50); /* keeps the loop busy while the test posts more and calls destroy */
    count_run(task, loop);
}

Test(loop, destroy_runs_remaining_tasks, .timeout = 30)
{
    enum { N = 1000 };
    g_loop = make_loop("drain");
    cr_assert_eq(pylon_loop_start(g_loop), 0);
    count_task *tasks = calloc(N + 1, sizeof *tasks);
    tasks[0].task.run = slow_run;
    pylon_loop_post(g_loop, &tasks[0].task);
    for (int i = 1; i <= N; i++) {
        tasks[i].task.run = count_run;
        pylon_loop_post(g_loop, &tasks[i].task);
    }
    pylon_loop_destroy(g_loop); /* returns only after everything above ran */
    cr_assert_eq(atomic_load(&g_ran), N + 1, "destroy left %llu tasks unrun",
                 (unsigned long long)(N + 1 - atomic_load(&g_ran)));
    for (int i = 0; i <= N; i++)
        cr_assert_eq(atomic_load(&tasks[i].runs), 1, "task %d", i);
    cr_assert_eq(atomic_load(&g_off_thread), 0);
    free(tasks);
    assert_no_leaks();
}

/* Handles left open: the owner never calls uv_close, so there is no owner's callback to run;
 * what destroy owes is to close them (their fds go, their state says closed) so that the loop
 * itself closes cleanly. The handles' memory is the test's, so it can be inspected after. */
static _Atomic int g_timer_fired, g_opened;
static uv_timer_t g_timer;
static uv_tcp_t g_tcp;
static uv_os_fd_t g_tcp_fd = -1;

static void timer_cb(uv_timer_t *h)
{
    (void)h;
    atomic_fetch_add(&g_timer_fired, 1);
}

static void on_conn(uv_stream_t *s, int status)
{
    (void)s;
    (void)status;
}

static void open_handles(pylon_loop_task *task, pylon_loop *loop)
{
    uv_loop_t *uv = pylon_loop_uv(loop);
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    int ok = uv_timer_init(uv, &g_timer) == 0 && uv_timer_start(&g_timer, timer_cb, 1, 1) == 0 &&
             uv_tcp_init(uv, &g_tcp) == 0 &&
             uv_tcp_bind(&g_tcp, (const struct sockaddr *)&addr, 0) == 0 &&
             uv_listen((uv_stream_t *)&g_tcp, 16, on_conn) == 0 &&
             uv_fileno((uv_handle_t *)&g_tcp, &g_tcp_fd) == 0;
    atomic_store(&g_opened, ok ? 1 : -1);
}

Test(loop, destroy_closes_handles_left_open, .timeout = 30)
{
    int logp[2];
    cr_assert_eq(pipe2(logp, O_NONBLOCK), 0);
    pylon_log_configure(PYLON_LOG_TEXT, PYLON_LOG_WARN, logp[1]);

    g_loop = make_loop("handles");
    cr_assert_eq(pylon_loop_start(g_loop), 0);
    pylon_loop_task t = {.run = open_handles};
    pylon_loop_post(g_loop, &t);
    for (int i = 0; i < 5000 && atomic_load(&g_opened) == 0; i++)
        sleep_ms(1);
    cr_assert_eq(atomic_load(&g_opened), 1, "could not open the handles");
    for (int i = 0; i < 5000 && atomic_load(&g_timer_fired) == 0; i++)
        sleep_ms(1);
    cr_assert_gt(atomic_load(&g_timer_fired), 0, "the uv_timer never fired: loop not running");
    cr_assert_neq(fcntl(g_tcp_fd, F_GETFD), -1, "listening socket not open");

    pylon_loop_destroy(g_loop);

    cr_assert(uv_is_closing((uv_handle_t *)&g_timer), "uv_timer left open by destroy");
    cr_assert(uv_is_closing((uv_handle_t *)&g_tcp), "uv_tcp left open by destroy");
    errno = 0;
    cr_assert(fcntl(g_tcp_fd, F_GETFD) == -1 && errno == EBADF,
              "the listening socket's fd %d is still open after destroy", g_tcp_fd);
    char buf[512];
    ssize_t n = read(logp[0], buf, sizeof buf - 1);
    if (n > 0) buf[n] = 0;
    cr_assert_leq(n, 0, "destroy logged: %s", n > 0 ? buf : "");
    close(logp[0]);
    close(logp[1]);
    assert_no_leaks();
}

/* A task queued just before destroy that closes its handle with a callback: destroy runs
 * the task and the close callback before it returns. */
static uv_timer_t g_closing_timer;
static _Atomic int g_close_cb_runs, g_closing_ready;

static void closing_cb(uv_handle_t *h)
{
    (void)h;
    atomic_fetch_add(&g_close_cb_runs, 1);
}

static void init_closing_timer(pylon_loop_task *task, pylon_loop *loop)
{
    int ok = uv_timer_init(pylon_loop_uv(loop), &g_closing_timer) == 0 &&
             uv_timer_start(&g_closing_timer, timer_cb, 100000, 100000) == 0;
    atomic_store(&g_closing_ready, ok ? 1 : -1);
}

static void close_timer_task(pylon_loop_task *task, pylon_loop *loop)
{
    sleep_ms(20); /* destroy is surely waiting by now */
    uv_close((uv_handle_t *)&g_closing_timer, closing_cb);
}

Test(loop, destroy_runs_close_callbacks_of_closing_handles, .timeout = 30)
{
    g_loop = make_loop("closing");
    cr_assert_eq(pylon_loop_start(g_loop), 0);
    pylon_loop_task init = {.run = init_closing_timer}, close_it = {.run = close_timer_task};
    pylon_loop_post(g_loop, &init);
    for (int i = 0; i < 5000 && atomic_load(&g_closing_ready) == 0; i++)
        sleep_ms(1);
    cr_assert_eq(atomic_load(&g_closing_ready), 1);
    pylon_loop_post(g_loop, &close_it);
    pylon_loop_destroy(g_loop);
    cr_assert_eq(atomic_load(&g_close_cb_runs), 1, "close callback ran %d times",
                 atomic_load(&g_close_cb_runs));
    assert_no_leaks();
}

Test(loop, destroy_without_start_runs_queued_tasks, .timeout = 10)
{
    g_loop = make_loop("never-started");
    cr_assert_not(pylon_loop_on_thread(g_loop));
    count_task t = {.task.run = count_run};
    pylon_loop_post(g_loop, &t.task);
    pylon_loop_destroy(g_loop);
    cr_assert_eq(atomic_load(&t.runs), 1, "queued task ran %u times", atomic_load(&t.runs));
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------- */
/* a flood of tasks is run in bounded batches                                               */
/* ---------------------------------------------------------------------------------------- */

enum { FLOOD = 20000 };
static uv_timer_t g_flood_timer;
static _Atomic uint64_t g_ran_when_timer_fired = UINT64_MAX;

static void flood_timer_cb(uv_timer_t *t)
{
    atomic_store(&g_ran_when_timer_fired, atomic_load(&g_ran));
    uv_close((uv_handle_t *)t, NULL);
}

static void arm_timer_run(pylon_loop_task *task, pylon_loop *loop)
{
    (void)task;
    uv_timer_init(pylon_loop_uv(loop), &g_flood_timer);
    uv_timer_start(&g_flood_timer, flood_timer_cb, 0, 0); /* due at once */
}

Test(loop, a_flood_of_tasks_lets_the_loop_serve_io_in_between, .timeout = 30)
{
    g_loop = make_loop("flood");
    /* Everything is queued before the loop runs: one wake-up finds all of it. The first task
     * arms a timer that is due at once; an unbounded drain would run the whole flood first. */
    pylon_loop_task arm = {.run = arm_timer_run};
    pylon_loop_post(g_loop, &arm);
    count_task *tasks = calloc(FLOOD, sizeof *tasks);
    for (uint32_t i = 0; i < FLOOD; i++) {
        tasks[i].task.run = count_run;
        pylon_loop_post(g_loop, &tasks[i].task);
    }
    cr_assert_eq(pylon_loop_start(g_loop), 0);
    cr_assert(wait_u64(&g_ran, FLOOD, 20000), "ran %llu of %d",
              (unsigned long long)atomic_load(&g_ran), FLOOD);
    pylon_loop_destroy(g_loop);
    uint64_t at = atomic_load(&g_ran_when_timer_fired);
    cr_assert_lt(at, (uint64_t)FLOOD, "the timer fired only after the whole flood (%llu tasks)",
                 (unsigned long long)at);
    for (uint32_t i = 0; i < FLOOD; i++)
        cr_assert_eq(atomic_load(&tasks[i].runs), 1, "task %u ran %u times", i,
                     atomic_load(&tasks[i].runs));
    cr_assert_eq(atomic_load(&g_off_thread), 0);
    free(tasks);
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------- */
/* messages to actors sent on the loop thread                                                */
/* ---------------------------------------------------------------------------------------- */

/* The loop batches the actors it readies (pylon_runtime_defer) and hands them over around each
 * poll: a message sent from a task or from a timer callback, after which the loop blocks in
 * poll with nothing else to do, must still be delivered. */
static _Atomic uint64_t g_actor_got;
static pylon_actor *g_target;
static uv_timer_t g_send_timer;

static void got_behaviour(pylon_actor *self, pylon_msg *m)
{
    (void)self;
    atomic_fetch_add(&g_actor_got, 1);
    pylon_msg_free(m);
}

static const pylon_actor_def got_def = {.name = "got", .behaviour = got_behaviour};

static void send_one(void)
{
    pylon_msg *m = malloc(sizeof *m);
    pylon_msg_init(m, 1, NULL);
    pylon_actor_send(g_target, m);
}

static void timer_send(uv_timer_t *t)
{
    (void)t;
    send_one(); /* from the timer phase, then the loop polls with nothing to do */
}

static void start_sending(pylon_loop_task *task, pylon_loop *loop)
{
    free(task);
    send_one();
    uv_timer_init(pylon_loop_uv(loop), &g_send_timer);
    uv_timer_start(&g_send_timer, timer_send, 20, 0);
}

Test(loop, actor_messages_sent_on_the_loop_thread_are_delivered, .timeout = 30)
{
    char err[256] = "";
    pylon_runtime_options opt = {.workers = 2};
    pylon_runtime *rt = pylon_runtime_create(&opt, err, sizeof err);
    cr_assert_not_null(rt, "%s", err);
    g_target = pylon_actor_spawn(rt, &got_def, NULL);
    g_loop = make_loop("sends");
    cr_assert_eq(pylon_loop_start(g_loop), 0);
    pylon_loop_task *t = malloc(sizeof *t);
    t->run = start_sending;
    pylon_loop_post(g_loop, t);
    cr_assert(wait_u64(&g_actor_got, 2, 5000), "delivered %llu of 2",
              (unsigned long long)atomic_load(&g_actor_got));
    pylon_loop_destroy(g_loop);
    pylon_actor_stop(g_target);
    pylon_actor_release(g_target);
    pylon_runtime_destroy(rt);
    assert_no_leaks();
}
