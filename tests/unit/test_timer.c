/* Timers: one-shot, periodic, cancel (before firing, from the callback, from
 * another thread), ownership rules, starts from other threads, and a delay too
 * large for the deadline arithmetic. */
#include "helpers.h"

#include <stdlib.h>

typedef struct tm_state {
    tc_runner r;
    atomic_int fired;
    atomic_int off_loop;  /* callbacks not on the loop thread */
    atomic_uint_fast64_t fired_at;
    atomic_int sentinel;  /* count seen by a later sentinel timer, +1 */
    _Atomic(px_timer *) handle; /* published after px_timer_start returns */
    atomic_int wrong_handle;
} tm_state;

static tm_state *tm;

static void on_loop_check(void)
{
    if (!pthread_equal(pthread_self(), tm->r.loop_tid))
        atomic_fetch_add(&tm->off_loop, 1);
}

static void tm_count(px_timer *t, void *user)
{
    (void)user;
    on_loop_check();
    px_timer *h = atomic_load(&tm->handle);
    if (h != NULL && t != h)
        atomic_fetch_add(&tm->wrong_handle, 1);
    atomic_store(&tm->fired_at, px_now_ms());
    atomic_fetch_add(&tm->fired, 1);
}

static void tm_sentinel(px_timer *t, void *user)
{
    (void)t;
    (void)user;
    on_loop_check();
    atomic_store(&tm->sentinel, atomic_load(&tm->fired) + 1);
}

static px_loop *tm_start(void)
{
    tm = calloc(1, sizeof *tm);
    cr_assert_not_null(tm);
    px_loop *loop = tc_loop_new(PX_EXEC_POOL, NULL);
    tc_runner_start(&tm->r, loop);
    return loop;
}

static void tm_finish(void)
{
    tc_runner_finish(&tm->r);
    cr_assert_eq(atomic_load(&tm->off_loop), 0, "a timer callback ran off the loop thread");
    cr_assert_eq(atomic_load(&tm->wrong_handle), 0);
    free(tm);
}

/* Starts a one-shot sentinel after delay_ms and waits for it: every timer
 * due well before it has had its chance.  Returns fired count it saw. */
static int tm_after(px_loop *loop, unsigned delay_ms)
{
    atomic_store(&tm->sentinel, 0);
    cr_assert_eq(px_timer_start(loop, NULL, delay_ms, 0, tm_sentinel, NULL), 0);
    cr_assert(tc_wait_ge(&tm->sentinel, 1, 10000 + delay_ms), "sentinel timer did not fire");
    return atomic_load(&tm->sentinel) - 1;
}

Test(timer, one_shot_fires_once_after_its_delay, .timeout = 30)
{
    px_loop *loop = tm_start();
    uint64_t t0 = px_now_ms();
    cr_assert_geq(t0 + 1, tc_now_ms(), "px_now_ms is not CLOCK_MONOTONIC ms");
    px_timer *h = NULL;
    cr_assert_eq(px_timer_start(loop, &h, 100, 0, tm_count, NULL), 0);
    cr_assert_not_null(h);
    atomic_store(&tm->handle, h);
    cr_assert(tc_wait_ge(&tm->fired, 1, 10000));
    uint64_t at = atomic_load(&tm->fired_at);
    cr_assert_geq(at - t0, 100, "fired after %llu ms", (unsigned long long)(at - t0));
    cr_assert_leq(at - t0, 5000, "fired after %llu ms", (unsigned long long)(at - t0));
    cr_assert_eq(tm_after(loop, 200), 1, "one-shot fired more than once");
    px_timer_cancel(h); /* owner cancels once, also after firing */
    tm_finish();
}

Test(timer, one_shot_without_handle, .timeout = 30)
{
    px_loop *loop = tm_start();
    cr_assert_eq(px_timer_start(loop, NULL, 10, 0, tm_count, NULL), 0);
    cr_assert(tc_wait_ge(&tm->fired, 1, 10000));
    cr_assert_eq(tm_after(loop, 100), 1);
    tm_finish();
}

Test(timer, periodic_without_handle_is_einval, .timeout = 10)
{
    px_loop *loop = tm_start();
    cr_assert_eq(px_timer_start(loop, NULL, 10, 10, tm_count, NULL), -EINVAL);
    cr_assert_eq(px_timer_start(loop, NULL, 0, 5, tm_count, NULL), -EINVAL);
    cr_assert_eq(tm_after(loop, 100), 0, "a timer that failed to start ran");
    tm_finish();
}

/* Cancels itself from its own callback on the 5th run. */
static void tm_periodic_cancel_at_5(px_timer *t, void *user)
{
    px_loop *loop = user;
    on_loop_check();
    px_timer *h = atomic_load(&tm->handle);
    if (h != NULL && t != h)
        atomic_fetch_add(&tm->wrong_handle, 1);
    if (atomic_fetch_add(&tm->fired, 1) + 1 == 5) {
        px_timer_cancel(t);
        /* well after the next period would have been due */
        TC_CHECK(px_timer_start(loop, NULL, 100, 0, tm_sentinel, NULL) == 0);
    }
}

Test(timer, periodic_stops_when_cancelled_from_its_callback, .timeout = 30)
{
    px_loop *loop = tm_start();
    uint64_t t0 = px_now_ms();
    px_timer *h = NULL;
    cr_assert_eq(px_timer_start(loop, &h, 50, 10, tm_periodic_cancel_at_5, loop), 0);
    atomic_store(&tm->handle, h);
    cr_assert(tc_wait_ge(&tm->sentinel, 1, 10000), "periodic timer did not run 5 times");
    cr_assert_geq(px_now_ms() - t0, 50 + 4 * 10);
    cr_assert_eq(atomic_load(&tm->sentinel) - 1, 5);
    cr_assert_eq(atomic_load(&tm->fired), 5, "callback ran after cancel from the loop thread");
    tc_assert_no_failures();
    tm_finish();
}

Test(timer, cancel_before_firing_from_another_thread, .timeout = 30)
{
    px_loop *loop = tm_start();
    px_timer *t = NULL;
    cr_assert_eq(px_timer_start(loop, &t, 200, 0, tm_count, NULL), 0);
    px_timer_cancel(t);
    px_timer *p = NULL;
    cr_assert_eq(px_timer_start(loop, &p, 150, 20, tm_count, NULL), 0);
    px_timer_cancel(p);
    cr_assert_eq(tm_after(loop, 400), 0, "a cancelled timer fired");
    tm_finish();
}

/* On the loop thread: start a timer due now and cancel it at once. */
static void start_and_cancel(void *arg)
{
    px_loop *loop = arg;
    px_timer *t = NULL;
    TC_CHECK(px_timer_start(loop, &t, 0, 0, tm_count, NULL) == 0);
    if (t != NULL)
        px_timer_cancel(t);
    TC_CHECK(px_timer_start(loop, &t, 0, 1, tm_count, NULL) == 0);
    if (t != NULL)
        px_timer_cancel(t);
    TC_CHECK(px_timer_start(loop, NULL, 50, 0, tm_sentinel, NULL) == 0);
}

Test(timer, cancel_on_loop_thread_before_firing, .timeout = 30)
{
    px_loop *loop = tm_start();
    cr_assert_eq(px_loop_post(loop, start_and_cancel, loop), 0);
    cr_assert(tc_wait_ge(&tm->sentinel, 1, 10000));
    cr_assert_eq(atomic_load(&tm->fired), 0, "timer cancelled on the loop thread still fired");
    tc_assert_no_failures();
    tm_finish();
}

/* Periodic, cancelled from another thread while it runs: it stops. */
Test(timer, periodic_cancel_from_another_thread, .timeout = 30)
{
    px_loop *loop = tm_start();
    px_timer *t = NULL;
    cr_assert_eq(px_timer_start(loop, &t, 1, 5, tm_count, NULL), 0);
    cr_assert(tc_wait_ge(&tm->fired, 3, 10000), "periodic timer did not repeat");
    px_timer_cancel(t);
    /* From another thread, a callback already running may finish: at most
     * one more after the cancel returned, then none. */
    int at_cancel = atomic_load(&tm->fired);
    int later = tm_after(loop, 100);
    cr_assert_leq(later, at_cancel + 1, "timer kept firing after cancel (%d -> %d)", at_cancel, later);
    cr_assert_eq(tm_after(loop, 50), later);
    tm_finish();
}

enum { TS_THREADS = 4, TS_PER = 10 };

static void *timer_starter(void *arg)
{
    px_loop *loop = arg;
    for (int i = 0; i < TS_PER; i++)
        TC_CHECK(px_timer_start(loop, NULL, (uint64_t)(i % 5) * 3, 0, tm_count, NULL) == 0);
    return NULL;
}

Test(timer, started_from_other_threads_while_running, .timeout = 30)
{
    px_loop *loop = tm_start();
    pthread_t th[TS_THREADS];
    for (int i = 0; i < TS_THREADS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, timer_starter, loop), 0);
    for (int i = 0; i < TS_THREADS; i++)
        pthread_join(th[i], NULL);
    cr_assert(tc_wait_ge(&tm->fired, TS_THREADS * TS_PER, 10000), "%d of %d timers fired",
              atomic_load(&tm->fired), TS_THREADS * TS_PER);
    cr_assert_eq(tm_after(loop, 50), TS_THREADS * TS_PER);
    tc_assert_no_failures();
    tm_finish();
}

/* A timer started before the loop runs fires once it does. */
Test(timer, started_before_run, .timeout = 30)
{
    tm = calloc(1, sizeof *tm);
    cr_assert_not_null(tm);
    px_loop *loop = tc_loop_new(PX_EXEC_INLINE, NULL);
    cr_assert_eq(px_timer_start(loop, NULL, 20, 0, tm_count, NULL), 0);
    tc_runner_start(&tm->r, loop);
    cr_assert(tc_wait_ge(&tm->fired, 1, 10000));
    tm_finish();
}

/* Regression (review of src/proactor): deadline arithmetic wrapped, so a huge delay
 * fired at once. */

static atomic_int fired_huge, fired_small;

static void huge_fn(px_timer *t, void *user)
{
    (void)t;
    (void)user;
    atomic_fetch_add(&fired_huge, 1);
}

static void small_fn(px_timer *t, void *user)
{
    (void)t;
    (void)user;
    atomic_fetch_add(&fired_small, 1);
}

Test(timer, huge_delay_does_not_fire_early, .timeout = 20)
{
    px_loop *loop = tc_loop_new(PX_EXEC_INLINE, NULL);
    tc_runner r;
    tc_runner_start(&r, loop);
    atomic_store(&fired_huge, 0);
    atomic_store(&fired_small, 0);
    px_timer *huge = NULL, *small = NULL;
    cr_assert_eq(px_timer_start(loop, &huge, UINT64_MAX, 0, huge_fn, NULL), 0);
    cr_assert_eq(px_timer_start(loop, &small, 50, 0, small_fn, NULL), 0);
    cr_assert(tc_wait_ge(&fired_small, 1, 5000));
    cr_expect_eq(atomic_load(&fired_huge), 0,
                 "a timer started with delay UINT64_MAX fired before a 50 ms one");
    px_timer_cancel(huge);
    px_timer_cancel(small);
    tc_runner_finish(&r);
}
