/* Where handlers run: a new thread per event, a bounded pool, or the loop
 * thread itself. */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { EX_MAX_TIDS = 4096 };

typedef struct ex_state {
    tc_runner *r;
    pthread_mutex_t mu;
    pid_t tids[EX_MAX_TIDS];
    int ntids;          /* distinct */
    atomic_int events;
    atomic_int on_loop; /* handlers that ran on the loop thread */
    atomic_int reused;  /* handlers that found this thread's mark set */
    tc_sink sinks[8];
} ex_state;

static ex_state *ex_st;
static _Thread_local int tls_mark; /* zero in every new thread */

static void ex_record(void)
{
    pid_t me = gettid();
    if (pthread_equal(pthread_self(), ex_st->r->loop_tid) || me == ex_st->r->loop_ktid)
        atomic_fetch_add(&ex_st->on_loop, 1);
    if (tls_mark)
        atomic_fetch_add(&ex_st->reused, 1);
    tls_mark = 1;
    pthread_mutex_lock(&ex_st->mu);
    int i;
    for (i = 0; i < ex_st->ntids; i++)
        if (ex_st->tids[i] == me)
            break;
    if (i == ex_st->ntids && i < EX_MAX_TIDS)
        ex_st->tids[ex_st->ntids++] = me;
    pthread_mutex_unlock(&ex_st->mu);
    atomic_fetch_add(&ex_st->events, 1);
}

static void ex_data(px_stream *s, const char *bytes, size_t len, void *user)
{
    (void)s;
    (void)bytes;
    tc_sink *k = user;
    ex_record();
    atomic_fetch_add(&k->bytes, len);
}

static const px_stream_handlers ex_handlers = {.on_data = ex_data, .on_close = tc_sink_close};

/* Opens nstreams socketpairs, then sends rounds × one byte to each, waiting
 * for every byte before the next so each is its own event. */
static void ex_run(px_loop *loop, tc_runner *r, int nstreams, int rounds)
{
    ex_st = calloc(1, sizeof *ex_st);
    cr_assert_not_null(ex_st);
    pthread_mutex_init(&ex_st->mu, NULL);
    ex_st->r = r;
    tc_runner_start(r, loop);
    int peer[8];
    for (int i = 0; i < nstreams; i++) {
        int sv[2];
        tc_socketpair(sv);
        tc_sink_init(&ex_st->sinks[i]);
        px_stream *s = NULL;
        cr_assert_eq(px_stream_open(loop, &s, sv[0], &ex_handlers, &ex_st->sinks[i], NULL), 0);
        peer[i] = sv[1];
    }
    for (int k = 0; k < rounds; k++) {
        for (int i = 0; i < nstreams; i++)
            cr_assert_eq(tc_write_all(peer[i], "e", 1), 0);
        for (int i = 0; i < nstreams; i++)
            cr_assert(tc_wait_ge_size(&ex_st->sinks[i].bytes, (size_t)k + 1, 10000),
                      "stream %d: byte %d not delivered", i, k);
    }
    for (int i = 0; i < nstreams; i++) {
        close(peer[i]);
        cr_assert(tc_wait_ge(&ex_st->sinks[i].closes, 1, 10000));
    }
    tc_runner_finish(r);
}

static void ex_free(void)
{
    pthread_mutex_destroy(&ex_st->mu);
    free(ex_st);
}

Test(executor, thread_runs_each_event_on_a_new_thread, .timeout = 30)
{
    px_loop *loop = tc_loop_new(PX_EXEC_THREAD, NULL);
    cr_assert_eq(px_loop_threads(loop), 0);
    tc_runner r;
    ex_run(loop, &r, 1, 10);
    cr_assert_eq(atomic_load(&ex_st->events), 10, "each one-byte write waited for should be one event");
    cr_assert_eq(atomic_load(&ex_st->on_loop), 0, "thread executor ran a handler on the loop thread");
    cr_assert_eq(atomic_load(&ex_st->reused), 0, "thread executor reused a thread for another event");
    cr_assert_eq(ex_st->ntids, 10, "10 events ran on %d distinct threads", ex_st->ntids);
    ex_free();
}

Test(executor, pool_uses_at_most_its_threads, .timeout = 30)
{
    px_loop *loop = tc_loop_new(PX_EXEC_POOL, &(px_loop_opts){.threads = 3});
    cr_assert_eq(px_loop_threads(loop), 3);
    tc_runner r;
    ex_run(loop, &r, 8, 25);
    cr_assert_geq(atomic_load(&ex_st->events), 8 * 25);
    cr_assert_eq(atomic_load(&ex_st->on_loop), 0, "pool ran a handler on the loop thread");
    cr_assert_geq(ex_st->ntids, 1);
    cr_assert_leq(ex_st->ntids, 3, "pool of 3 ran handlers on %d threads", ex_st->ntids);
    ex_free();
}

Test(executor, pool_default_size_is_online_cpus, .timeout = 10)
{
    px_loop *loop = tc_loop_new(PX_EXEC_POOL, NULL);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    cr_assert_eq(px_loop_threads(loop), (unsigned)cpus, "pool has %u threads, %ld CPUs online",
                 px_loop_threads(loop), cpus);
    cr_assert_neq(px_loop_backend(loop), PX_BACKEND_AUTO);
    px_loop_destroy(loop);
}

Test(executor, inline_runs_on_the_loop_thread, .timeout = 30)
{
    px_loop *loop = tc_loop_new(PX_EXEC_INLINE, NULL);
    cr_assert_eq(px_loop_threads(loop), 0);
    tc_runner r;
    ex_run(loop, &r, 4, 10);
    int ev = atomic_load(&ex_st->events);
    cr_assert_geq(ev, 40);
    cr_assert_eq(atomic_load(&ex_st->on_loop), ev, "%d of %d inline handlers ran off the loop thread",
                 ev - atomic_load(&ex_st->on_loop), ev);
    cr_assert_eq(ex_st->ntids, 1);
    ex_free();
}
