/*
 * test_buf.c — reference-counted immutable buffers (engine/buf.h).
 *
 * Proves: pylon_buf_new/copy give a buffer of the right length whose bytes are the ones
 * written/copied (copy does not alias the source) and that starts with one reference; a
 * wrapped buffer calls its free function exactly once, with its own data, length and context,
 * only on the last release — also when 8 threads retain and release it concurrently and the
 * last release happens on any of them.
 */
#include "engine/buf.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "support.h"

Test(buf, new_has_len_inline_data_one_ref)
{
    pylon_buf *b = pylon_buf_new(1000);
    cr_assert_not_null(b);
    cr_assert_eq(b->len, 1000);
    cr_assert_not_null(b->data);
    cr_assert_eq(atomic_load(&b->refs), 1);
    for (size_t i = 0; i < b->len; i++)
        b->data[i] = (uint8_t)(i * 7);
    for (size_t i = 0; i < b->len; i++)
        cr_assert_eq(b->data[i], (uint8_t)(i * 7));
    cr_assert_eq(pylon_buf_retain(b), b);
    cr_assert_eq(atomic_load(&b->refs), 2);
    pylon_buf_release(b);
    cr_assert_eq(atomic_load(&b->refs), 1);
    cr_assert_eq(b->data[999], (uint8_t)(999 * 7)); /* still alive */
    pylon_buf_release(b);                           /* ASan: freed once, no leak */
    assert_no_leaks();
}

Test(buf, copy_has_same_bytes_not_same_memory)
{
    char src[300];
    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (char)('a' + i % 26);
    pylon_buf *b = pylon_buf_copy(src, sizeof src);
    cr_assert_not_null(b);
    cr_assert_eq(b->len, sizeof src);
    cr_assert_eq(atomic_load(&b->refs), 1);
    cr_assert_neq((void *)b->data, (void *)src);
    cr_assert_eq(memcmp(b->data, src, sizeof src), 0);
    memset(src, 0, sizeof src);
    cr_assert_eq(b->data[0], 'a', "copy aliases its source");
    cr_assert_eq(b->data[299], (uint8_t)('a' + 299 % 26));
    pylon_buf_release(b);

    pylon_buf *e = pylon_buf_copy("", 0);
    cr_assert_not_null(e);
    cr_assert_eq(e->len, 0);
    pylon_buf_release(e);
    assert_no_leaks();
}

typedef struct free_rec {
    _Atomic int calls;
    void *data;
    size_t len;
    void *ctx;
    _Atomic int wrong;
} free_rec;

static void counting_free(void *ctx, void *data, size_t len)
{
    free_rec *r = ctx;
    if (data != r->data || len != r->len) atomic_store(&r->wrong, 1);
    atomic_fetch_add(&r->calls, 1);
    free(data);
}

Test(buf, wrap_single_thread_frees_on_last_release)
{
    free_rec r = {0};
    r.len = 64;
    r.data = malloc(r.len);
    memset(r.data, 'x', r.len);
    pylon_buf *b = pylon_buf_wrap(r.data, r.len, counting_free, &r);
    cr_assert_not_null(b);
    cr_assert_eq((void *)b->data, r.data);
    cr_assert_eq(b->len, 64);
    cr_assert_eq(atomic_load(&b->refs), 1);
    pylon_buf_retain(b);
    pylon_buf_retain(b);
    pylon_buf_release(b);
    pylon_buf_release(b);
    cr_assert_eq(atomic_load(&r.calls), 0, "free_fn ran while a reference was held");
    cr_assert_eq(b->data[63], 'x');
    pylon_buf_release(b);
    cr_assert_eq(atomic_load(&r.calls), 1);
    cr_assert_not(atomic_load(&r.wrong), "free_fn got the wrong data or length");
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------- */
/* 8 threads                                                                                 */
/* ---------------------------------------------------------------------------------------- */

#define THREADS   8
#define HAMMER    200000 /* retain/release pairs per thread on the shared buffer */
#define RACE_BUFS 2000   /* buffers whose last release races between the threads */

static pylon_buf *shared_buf;
static pylon_buf *race_bufs[RACE_BUFS];
static free_rec race_recs[RACE_BUFS];
static pthread_barrier_t barrier;

static void *hammer(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < HAMMER; i++) {
        pylon_buf_retain(shared_buf);
        if (i % 3 == 0) { /* nested pair */
            pylon_buf_retain(shared_buf);
            pylon_buf_release(shared_buf);
        }
        pylon_buf_release(shared_buf);
    }
    pylon_buf_release(shared_buf); /* this thread's own reference */
    return NULL;
}

Test(buf, wrap_concurrent_retain_release_frees_once, .timeout = 60)
{
    free_rec r = {0};
    r.len = 4096;
    r.data = malloc(r.len);
    shared_buf = pylon_buf_wrap(r.data, r.len, counting_free, &r);
    cr_assert_not_null(shared_buf);
    for (int t = 0; t < THREADS; t++)
        pylon_buf_retain(shared_buf); /* one per thread */
    pthread_barrier_init(&barrier, NULL, THREADS);
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, hammer, NULL), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&barrier);
    cr_assert_eq(atomic_load(&r.calls), 0, "freed while the test still held a reference");
    cr_assert_eq(atomic_load(&shared_buf->refs), 1);
    pylon_buf_release(shared_buf);
    cr_assert_eq(atomic_load(&r.calls), 1, "free_fn called %d times", atomic_load(&r.calls));
    cr_assert_not(atomic_load(&r.wrong));
    assert_no_leaks();
}

static void *race_last(void *arg)
{
    uintptr_t t = (uintptr_t)arg;
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < RACE_BUFS; i++) {
        /* Threads walk the buffers from different starting points so the last release of
         * each buffer lands on varying threads. */
        pylon_buf *b = race_bufs[(i + (int)t * (RACE_BUFS / THREADS)) % RACE_BUFS];
        pylon_buf_retain(b);
        pylon_buf_release(b);
        pylon_buf_release(b);
    }
    return NULL;
}

Test(buf, wrap_last_release_on_any_thread_frees_once, .timeout = 60)
{
    for (int i = 0; i < RACE_BUFS; i++) {
        race_recs[i].len = (size_t)(i % 97) + 1;
        race_recs[i].data = malloc(race_recs[i].len);
        race_bufs[i] =
            pylon_buf_wrap(race_recs[i].data, race_recs[i].len, counting_free, &race_recs[i]);
        cr_assert_not_null(race_bufs[i]);
        for (int t = 1; t < THREADS; t++)
            pylon_buf_retain(race_bufs[i]); /* THREADS refs */
    }
    pthread_barrier_init(&barrier, NULL, THREADS);
    pthread_t th[THREADS];
    for (uintptr_t t = 0; t < THREADS; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, race_last, (void *)t), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < RACE_BUFS; i++) {
        cr_assert_eq(atomic_load(&race_recs[i].calls), 1, "buffer %d freed %d times", i,
                     atomic_load(&race_recs[i].calls));
        cr_assert_not(atomic_load(&race_recs[i].wrong), "buffer %d: wrong data/len", i);
    }
    assert_no_leaks();
}
