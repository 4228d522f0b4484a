/* px_loop_post: exactly once, on the loop thread, in order per poster. */
#include "helpers.h"

#include <stdlib.h>

enum { PT_THREADS = 8, PT_PER = 1000 };

typedef struct post_item {
    int thread;
    int seq;
    int runs; /* written on the loop thread only */
} post_item;

typedef struct post_state {
    tc_runner r;
    px_loop *loop;
    post_item items[PT_THREADS][PT_PER];
    int last_seq[PT_THREADS]; /* loop thread only */
    int out_of_order;         /* loop thread only */
    int off_loop;             /* loop thread only (counts its own misses) */
    atomic_int total;
    atomic_int failed_posts;
} post_state;

static post_state *ps;

static void post_fn(void *arg)
{
    post_item *it = arg;
    if (!pthread_equal(pthread_self(), ps->r.loop_tid))
        ps->off_loop++;
    if (it->seq != ps->last_seq[it->thread] + 1)
        ps->out_of_order++;
    ps->last_seq[it->thread] = it->seq;
    it->runs++;
    atomic_fetch_add(&ps->total, 1);
}

static void *poster(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int i = 0; i < PT_PER; i++) {
        post_item *it = &ps->items[t][i];
        it->thread = t;
        it->seq = i;
        if (px_loop_post(ps->loop, post_fn, it) != 0)
            atomic_fetch_add(&ps->failed_posts, 1);
    }
    return NULL;
}

TC_EXEC_PARAMS(post, many_threads_exactly_once_in_order)

ParameterizedTest(px_executor *ex, post, many_threads_exactly_once_in_order, .timeout = 30)
{
    ps = calloc(1, sizeof *ps);
    cr_assert_not_null(ps);
    for (int t = 0; t < PT_THREADS; t++)
        ps->last_seq[t] = -1;
    ps->loop = tc_loop_new(*ex, NULL);
    tc_runner_start(&ps->r, ps->loop);

    pthread_t th[PT_THREADS];
    for (int t = 0; t < PT_THREADS; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, poster, (void *)(intptr_t)t), 0);
    for (int t = 0; t < PT_THREADS; t++)
        pthread_join(th[t], NULL);
    cr_assert_eq(atomic_load(&ps->failed_posts), 0);
    cr_assert(tc_wait_ge(&ps->total, PT_THREADS * PT_PER, 20000), "%d of %d posts ran",
              atomic_load(&ps->total), PT_THREADS * PT_PER);
    tc_runner_finish(&ps->r); /* join: the loop thread's writes are visible */

    cr_assert_eq(atomic_load(&ps->total), PT_THREADS * PT_PER);
    cr_assert_eq(ps->off_loop, 0, "posts ran off the loop thread");
    cr_assert_eq(ps->out_of_order, 0, "%d posts ran out of their poster's order", ps->out_of_order);
    for (int t = 0; t < PT_THREADS; t++) {
        cr_assert_eq(ps->last_seq[t], PT_PER - 1);
        for (int i = 0; i < PT_PER; i++)
            cr_assert_eq(ps->items[t][i].runs, 1, "post %d/%d ran %d times", t, i, ps->items[t][i].runs);
    }
    free(ps);
}

/* Posts made before run run when it runs; posts pending at destroy run
 * during destroy. */
static atomic_int simple_runs;

static void simple_fn(void *arg)
{
    (void)arg;
    atomic_fetch_add(&simple_runs, 1);
}

Test(post, before_run_and_at_destroy, .timeout = 30)
{
    px_loop *loop = tc_loop_new(PX_EXEC_POOL, NULL);
    cr_assert_eq(px_loop_post(loop, simple_fn, NULL), 0);
    cr_assert_eq(atomic_load(&simple_runs), 0, "post ran inside px_loop_post");
    tc_runner r;
    tc_runner_start(&r, loop);
    cr_assert(tc_wait_ge(&simple_runs, 1, 10000), "post made before run never ran");
    tc_runner_stop(&r);

    for (int i = 0; i < 5; i++)
        cr_assert_eq(px_loop_post(loop, simple_fn, NULL), 0);
    px_loop_destroy(loop);
    cr_assert_eq(atomic_load(&simple_runs), 6, "pending posts must run during destroy");
}
