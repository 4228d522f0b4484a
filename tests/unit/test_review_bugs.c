/*
 * Review reproductions: each test here demonstrates a bug found while
 * reviewing src/proactor (see the review report).  They fail (or crash under
 * ASan) against the code as reviewed; they should pass once fixed.
 */
#include "helpers.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- a loop barrier: returns once the loop has gone round n times ---- */

typedef struct rv_sync {
    px_loop *loop;
    int left;
    atomic_bool done;
} rv_sync;

static void rv_sync_step(void *arg)
{
    rv_sync *y = arg;
    if (--y->left > 0)
        px_loop_post(y->loop, rv_sync_step, y); /* on the loop: next pass */
    else
        atomic_store(&y->done, true);
}

/* Every post is run at the top of a pass; reposting from the loop thread
 * forces another pass, so after n steps everything scheduled n-1 passes ago
 * (reads re-armed after a handler, and so on) has been processed. */
static void rv_loop_sync(px_loop *loop, int passes)
{
    rv_sync y = {.loop = loop, .left = passes};
    atomic_init(&y.done, false);
    cr_assert_eq(px_loop_post(loop, rv_sync_step, &y), 0);
    cr_assert(tc_wait_flag(&y.done, 5000), "loop did not go round");
}

/* ---- a post that holds the loop until the test opens a gate ---- */

typedef struct rv_block {
    tc_gate gate;
    atomic_bool entered;
} rv_block;

static void rv_block_fn(void *arg)
{
    rv_block *b = arg;
    atomic_store(&b->entered, true);
    TC_CHECK(tc_gate_wait(&b->gate, 10000));
}

static void rv_block_loop(px_loop *loop, rv_block *b)
{
    tc_gate_init(&b->gate);
    atomic_init(&b->entered, false);
    cr_assert_eq(px_loop_post(loop, rv_block_fn, b), 0);
    cr_assert(tc_wait_flag(&b->entered, 5000), "loop did not run the blocking post");
}

/* ======================================================================== */
/* 1. A descriptor with another reference (dup, fork) stays in the epoll set
 *    after the stream closes it: its events then point at a freed stream.   */

Test(review_fd, dup_keeps_epoll_registration, .timeout = 20)
{
    px_loop *loop = tc_loop_new(PX_EXEC_INLINE, NULL);
    tc_runner r;
    tc_runner_start(&r, loop);
    int sv[2];
    tc_socketpair(sv);
    int other = dup(sv[0]); /* e.g. inherited by a child, or kept by the app */
    cr_assert_geq(other, 0);
    tc_sink k;
    tc_sink_init(&k);
    px_stream *s = NULL;
    cr_assert_eq(px_stream_open(loop, &s, sv[0], &tc_sink_handlers, &k, NULL), 0);
    rv_loop_sync(loop, 3);
    px_stream_abort(s);
    cr_assert(tc_wait_ge(&k.closes, 1, 5000));
    rv_loop_sync(loop, 3); /* the stream is freed by now (inline on_close) */

    /* The open file description is still alive through `other`, so close()
     * did not remove it from the epoll set: this wakes the loop with a
     * pointer to the freed px_stream (heap-use-after-free under ASan). */
    cr_assert_eq(tc_write_all(sv[1], "boom", 4), 0);
    rv_loop_sync(loop, 3);

    close(other);
    close(sv[1]);
    tc_runner_finish(&r);
    cr_assert_eq(atomic_load(&k.closes), 1);
}

/* ======================================================================== */
/* 2. px_listener_close() from an inline handler frees the listener while
 *    ep_wait is still using it (accept loop, or a later event in the batch). */

static px_listener *rv_listener;
static atomic_int rv_opens;

static void rv_open_close_listener(px_stream *s, void *user)
{
    (void)s;
    (void)user;
    if (atomic_fetch_add(&rv_opens, 1) == 0)
        px_listener_close(rv_listener); /* "accept one, then stop listening" */
}

static void rv_close_noop(px_stream *s, int cause, void *user)
{
    (void)s;
    (void)cause;
    (void)user;
}

static void rv_data_noop(px_stream *s, const char *b, size_t n, void *user)
{
    (void)s;
    (void)b;
    (void)n;
    (void)user;
}

Test(review_listener, close_from_inline_on_open, .timeout = 20)
{
    px_loop *loop = tc_loop_new(PX_EXEC_INLINE, NULL);
    tc_runner r;
    tc_runner_start(&r, loop);
    atomic_store(&rv_opens, 0);
    px_listen_opts o = {
        .host = "127.0.0.1",
        .handlers = {.on_open = rv_open_close_listener, .on_data = rv_data_noop,
                     .on_close = rv_close_noop},
    };
    cr_assert_eq(px_listen(loop, &rv_listener, &o), 0);
    uint16_t port = px_listener_port(rv_listener);
    rv_loop_sync(loop, 2);
    /* on_open runs inside ep_wait's accept loop, which then reads l->active
     * from the listener px_listener_close() just freed. */
    int c = tc_tcp_connect(AF_INET, port);
    cr_assert_geq(c, 0);
    cr_assert(tc_wait_ge(&rv_opens, 1, 5000));
    rv_loop_sync(loop, 2);
    close(c);
    tc_runner_finish(&r);
}

static void rv_data_close_listener(px_stream *s, const char *b, size_t n, void *user)
{
    (void)s;
    (void)b;
    (void)n;
    (void)user;
    px_listener_close(rv_listener); /* e.g. an admin "stop accepting" command */
}

Test(review_listener, close_from_inline_on_data_same_batch, .timeout = 20)
{
    px_loop *loop = tc_loop_new(PX_EXEC_INLINE, NULL);
    tc_runner r;
    tc_runner_start(&r, loop);
    px_listen_opts o = {
        .host = "127.0.0.1",
        .handlers = {.on_data = rv_data_noop, .on_close = rv_close_noop},
    };
    cr_assert_eq(px_listen(loop, &rv_listener, &o), 0);
    uint16_t port = px_listener_port(rv_listener);
    int sv[2];
    tc_socketpair(sv);
    px_stream *s;
    px_stream_handlers h = {.on_data = rv_data_close_listener, .on_close = rv_close_noop};
    cr_assert_eq(px_stream_open(loop, &s, sv[0], &h, NULL, NULL), 0);
    rv_loop_sync(loop, 3); /* stream armed (EAGAIN seen), listener registered */

    rv_block b;
    rv_block_loop(loop, &b);
    /* Both become ready while the loop is held: one epoll batch, stream first. */
    cr_assert_eq(tc_write_all(sv[1], "x", 1), 0);
    int c = tc_tcp_connect(AF_INET, port);
    cr_assert_geq(c, 0);
    tc_gate_open(&b.gate);
    rv_loop_sync(loop, 3);

    close(c);
    close(sv[1]);
    tc_runner_finish(&r);
    tc_gate_destroy(&b.gate);
    tc_assert_no_failures();
}

/* ======================================================================== */
/* 3. Handlers run inside px_stream_open() when it is called on the loop
 *    thread (a post, a timer, an inline handler) with the inline executor;
 *    for a descriptor that cannot be polled, on_close runs and the stream is
 *    freed before px_stream_open() returns 0 with *out pointing at it.      */

static atomic_bool rv_inside_open;
static atomic_int rv_called_inside;
static atomic_int rv_handlers_run;

static void rv_note_open(px_stream *s, void *user)
{
    (void)s;
    (void)user;
    atomic_fetch_add(&rv_handlers_run, 1);
    if (atomic_load(&rv_inside_open))
        atomic_fetch_add(&rv_called_inside, 1);
}

static void rv_note_close(px_stream *s, int cause, void *user)
{
    (void)s;
    (void)cause;
    (void)user;
    atomic_fetch_add(&rv_handlers_run, 1);
    if (atomic_load(&rv_inside_open))
        atomic_fetch_add(&rv_called_inside, 1);
}

typedef struct rv_open_arg {
    int fd;
    px_loop *loop;
    int rc;
    atomic_bool done;
} rv_open_arg;

static void rv_open_on_loop(void *arg)
{
    rv_open_arg *a = arg;
    px_stream_handlers h = {.on_open = rv_note_open, .on_data = rv_data_noop,
                            .on_close = rv_note_close};
    px_stream *s = NULL;
    atomic_store(&rv_inside_open, true);
    a->rc = px_stream_open(a->loop, &s, a->fd, &h, NULL, NULL);
    atomic_store(&rv_inside_open, false);
    atomic_store(&a->done, true);
}

Test(review_contract, no_handler_inside_stream_open, .timeout = 20)
{
    px_loop *loop = tc_loop_new(PX_EXEC_INLINE, NULL);
    tc_runner r;
    tc_runner_start(&r, loop);
    atomic_store(&rv_called_inside, 0);
    atomic_store(&rv_handlers_run, 0);
    int sv[2];
    tc_socketpair(sv);
    rv_open_arg a = {.fd = sv[0], .loop = loop};
    cr_assert_eq(px_loop_post(loop, rv_open_on_loop, &a), 0);
    cr_assert(tc_wait_flag(&a.done, 5000));
    cr_assert_eq(a.rc, 0);
    cr_assert(tc_wait_ge(&rv_handlers_run, 1, 5000));
    cr_expect_eq(atomic_load(&rv_called_inside), 0,
                 "on_open ran inside px_stream_open (header: handlers are never called "
                 "from inside the call that caused them)");
    close(sv[1]);
    tc_runner_finish(&r);
}

Test(review_contract, unpollable_fd_on_loop_thread, .timeout = 20)
{
    px_loop *loop = tc_loop_new(PX_EXEC_INLINE, NULL);
    tc_runner r;
    tc_runner_start(&r, loop);
    atomic_store(&rv_called_inside, 0);
    atomic_store(&rv_handlers_run, 0);
    char path[] = "/tmp/px_review_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    rv_open_arg a = {.fd = fd, .loop = loop};
    cr_assert_eq(px_loop_post(loop, rv_open_on_loop, &a), 0);
    cr_assert(tc_wait_flag(&a.done, 5000));
    cr_assert_eq(a.rc, 0);
    cr_assert(tc_wait_ge(&rv_handlers_run, 1, 5000));
    cr_expect_eq(atomic_load(&rv_called_inside), 0,
                 "on_close ran (and the stream was freed) inside px_stream_open, which "
                 "then returned 0 with a dangling *out");
    tc_runner_finish(&r);
}

/* ======================================================================== */
/* 4. px_stream_pause() made while the stream waits for readiness (the usual
 *    idle state) is ignored: ep_wait reads as soon as data arrives.         */

typedef struct rv_pause {
    atomic_int chunks;
    _Atomic uint64_t second_ms;
} rv_pause;

static void rv_pause_data(px_stream *s, const char *b, size_t n, void *user)
{
    (void)s;
    (void)b;
    (void)n;
    rv_pause *p = user;
    if (atomic_fetch_add(&p->chunks, 1) == 1)
        atomic_store(&p->second_ms, px_now_ms());
}

Test(review_pause, pause_while_idle_from_other_thread, .timeout = 20)
{
    px_loop *loop = tc_loop_new(PX_EXEC_INLINE, NULL);
    tc_runner r;
    tc_runner_start(&r, loop);
    int sv[2];
    tc_socketpair(sv);
    rv_pause p;
    atomic_init(&p.chunks, 0);
    atomic_init(&p.second_ms, 0);
    px_stream_handlers h = {.on_data = rv_pause_data, .on_close = rv_close_noop};
    px_stream *s;
    cr_assert_eq(px_stream_open(loop, &s, sv[0], &h, &p, NULL), 0);
    cr_assert_eq(tc_write_all(sv[1], "a", 1), 0);
    cr_assert(tc_wait_ge(&p.chunks, 1, 5000));
    rv_loop_sync(loop, 3); /* read re-armed, EAGAIN seen: waiting on epoll */

    const unsigned pause_ms = 1500;
    uint64_t t0 = px_now_ms();
    px_stream_pause(s, pause_ms);
    cr_assert_eq(tc_write_all(sv[1], "b", 1), 0);
    cr_assert(tc_wait_ge(&p.chunks, 2, 5000), "never read again");
    uint64_t gap = atomic_load(&p.second_ms) - t0;
    cr_expect_geq(gap, pause_ms, "read %llu ms after px_stream_pause(%u)",
                  (unsigned long long)gap, pause_ms);
    close(sv[1]);
    tc_runner_finish(&r);
}

/* ======================================================================== */
/* 5. px_stream_abort() then a peer EOF seen before the abort request is
 *    processed: on_close reports 0, not -ECONNABORTED, and the close is
 *    graceful (FIN, queued bytes flushed) instead of a reset.               */

static atomic_int rv_cause;
static atomic_int rv_closes;

static void rv_record_close(px_stream *s, int cause, void *user)
{
    (void)s;
    (void)user;
    atomic_store(&rv_cause, cause);
    atomic_fetch_add(&rv_closes, 1);
}

Test(review_close, abort_then_eof_reports_abort, .timeout = 20)
{
    px_loop *loop = tc_loop_new(PX_EXEC_POOL, NULL);
    tc_runner r;
    tc_runner_start(&r, loop);
    atomic_store(&rv_cause, 12345);
    atomic_store(&rv_closes, 0);
    int sv[2];
    tc_socketpair(sv);
    px_stream_handlers h = {.on_data = rv_data_noop, .on_close = rv_record_close};
    px_stream *s;
    cr_assert_eq(px_stream_open(loop, &s, sv[0], &h, NULL, NULL), 0);
    rv_loop_sync(loop, 3); /* armed: waiting for readiness */

    rv_block b;
    rv_block_loop(loop, &b);
    shutdown(sv[1], SHUT_WR); /* the peer's FIN arrives ... */
    px_stream_abort(s);       /* ... and the application aborts */
    tc_gate_open(&b.gate);

    cr_assert(tc_wait_ge(&rv_closes, 1, 5000));
    cr_expect_eq(atomic_load(&rv_cause), -ECONNABORTED,
                 "on_close cause %d after px_stream_abort() returned", atomic_load(&rv_cause));
    close(sv[1]);
    tc_runner_finish(&r);
    tc_gate_destroy(&b.gate);
    tc_assert_no_failures();
}

/* ======================================================================== */
/* 6. Deadline arithmetic wraps: a huge delay fires at once.                 */

static atomic_int rv_fired_huge, rv_fired_small;

static void rv_huge_fn(px_timer *t, void *user)
{
    (void)t;
    (void)user;
    atomic_fetch_add(&rv_fired_huge, 1);
}

static void rv_small_fn(px_timer *t, void *user)
{
    (void)t;
    (void)user;
    atomic_fetch_add(&rv_fired_small, 1);
}

Test(review_timer, huge_delay_does_not_fire_early, .timeout = 20)
{
    px_loop *loop = tc_loop_new(PX_EXEC_INLINE, NULL);
    tc_runner r;
    tc_runner_start(&r, loop);
    atomic_store(&rv_fired_huge, 0);
    atomic_store(&rv_fired_small, 0);
    px_timer *huge = NULL, *small = NULL;
    cr_assert_eq(px_timer_start(loop, &huge, UINT64_MAX, 0, rv_huge_fn, NULL), 0);
    cr_assert_eq(px_timer_start(loop, &small, 50, 0, rv_small_fn, NULL), 0);
    cr_assert(tc_wait_ge(&rv_fired_small, 1, 5000));
    cr_expect_eq(atomic_load(&rv_fired_huge), 0,
                 "a timer started with delay UINT64_MAX fired before a 50 ms one");
    px_timer_cancel(huge);
    px_timer_cancel(small);
    tc_runner_finish(&r);
}
