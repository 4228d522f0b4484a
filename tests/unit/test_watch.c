/*
 * Readiness watches (px_watch_*): level-triggered reports on the loop thread, event
 * changes (also while a poll is in flight on io_uring), stopping from the callback,
 * thread and argument checks, and watches left running when the loop is destroyed.
 */
#include "helpers.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

TestSuite(watch, .timeout = 30);

typedef struct wctx {
    px_loop *loop;
    px_watch *w;
    int fd;
    atomic_int calls, bytes, writes;
    bool stop_in_callback;
    bool one_byte_reads;   /* read a single byte per call: level-triggered reports */
    bool quiet_after_write; /* after the first write report, ask for nothing */
    atomic_bool wrong_thread;
} wctx;

static void on_ready(px_watch *w, unsigned ready, void *user)
{
    wctx *c = user;
    if (!px_watch_events(w))
        atomic_store(&c->wrong_thread, true); /* a report for nothing asked */
    atomic_fetch_add(&c->calls, 1);
    if (ready & PX_WATCH_READ) {
        char buf[64];
        ssize_t n = read(c->fd, buf, c->one_byte_reads ? 1 : sizeof(buf));
        if (n > 0)
            atomic_fetch_add(&c->bytes, (int)n);
    }
    if (ready & PX_WATCH_WRITE) {
        atomic_fetch_add(&c->writes, 1);
        if (c->quiet_after_write)
            px_watch_set(w, px_watch_events(w) & ~PX_WATCH_WRITE);
    }
    if (c->stop_in_callback)
        px_watch_stop(w);
}

/* A few passes of the loop (so that a report that should not come has had its chance). */
static void noop(void *arg) { (void)arg; }
static void let_loop_turn(px_loop *loop)
{
    for (int i = 0; i < 5; i++)
        tc_run_on_loop(loop, noop, NULL);
}

static void pair(int sv[2])
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

/* An inline loop running on r with c watching sv[0] for READ (sv a fresh pair). */
static px_loop *watch_running(wctx *c, int sv[2], tc_runner *r)
{
    px_loop *loop = tc_loop_new(PX_EXEC_INLINE, NULL);
    pair(sv);
    c->loop = loop;
    c->fd = sv[0];
    cr_assert_eq(px_watch_start(loop, &c->w, sv[0], PX_WATCH_READ, on_ready, c), 0);
    tc_runner_start(r, loop);
    return loop;
}

Test(watch, read_readiness_is_level_triggered)
{
    int sv[2];
    wctx c = {.one_byte_reads = true};
    tc_runner r;
    px_loop *loop = watch_running(&c, sv, &r);
    cr_assert_eq(write(sv[1], "hello", 5), 5);
    /* One byte per report: the rest must be reported again without new data. */
    cr_assert(tc_wait_ge(&c.bytes, 5, 5000), "%d of 5 bytes read", atomic_load(&c.bytes));
    let_loop_turn(loop);
    int calls = atomic_load(&c.calls);
    cr_expect_geq(calls, 5);
    let_loop_turn(loop);
    cr_expect_eq(atomic_load(&c.calls), calls, "reported again with nothing to read");
    tc_runner_finish(&r); /* the watch is released with the loop */
    close(sv[0]);
    close(sv[1]);
}

static void ask_write(void *arg)
{
    wctx *c = arg;
    px_watch_set(c->w, PX_WATCH_READ | PX_WATCH_WRITE);
}

/* READ is in flight (nothing to read); asking for WRITE too must report WRITE. */
Test(watch, events_change_while_waiting)
{
    int sv[2];
    wctx c = {.quiet_after_write = true};
    tc_runner r;
    px_loop *loop = watch_running(&c, sv, &r);
    let_loop_turn(loop);
    cr_expect_eq(atomic_load(&c.calls), 0, "reported with nothing ready");
    tc_run_on_loop(loop, ask_write, &c);
    cr_assert(tc_wait_ge(&c.writes, 1, 5000), "WRITE never reported");
    let_loop_turn(loop);
    cr_expect_eq(atomic_load(&c.writes), 1, "WRITE reported after it was no longer asked");
    /* READ is still watched. */
    cr_assert_eq(write(sv[1], "x", 1), 1);
    cr_assert(tc_wait_ge(&c.bytes, 1, 5000), "READ lost after the change");
    cr_expect(!atomic_load(&c.wrong_thread));
    tc_runner_finish(&r);
    close(sv[0]);
    close(sv[1]);
}

Test(watch, stop_inside_the_callback)
{
    int sv[2];
    wctx c = {.one_byte_reads = true, .stop_in_callback = true};
    tc_runner r;
    px_loop *loop = watch_running(&c, sv, &r);
    cr_assert_eq(write(sv[1], "abc", 3), 3);
    cr_assert(tc_wait_ge(&c.calls, 1, 5000));
    let_loop_turn(loop);
    cr_expect_eq(atomic_load(&c.calls), 1, "reported after it stopped (2 bytes still unread)");
    tc_runner_finish(&r);
    close(sv[0]);
    close(sv[1]);
}

typedef struct start_args {
    px_loop *loop;
    int fd;
    int rc;
    wctx *c;
} start_args;

static void start_here(void *arg)
{
    start_args *a = arg;
    a->rc = px_watch_start(a->loop, &a->c->w, a->fd, PX_WATCH_READ, on_ready, a->c);
}

static void stop_here(void *arg)
{
    px_watch_stop(((wctx *)arg)->w);
}

Test(watch, thread_and_argument_checks)
{
    px_loop *loop = tc_loop_new(PX_EXEC_POOL, NULL);
    int sv[2];
    pair(sv);
    wctx c = {.loop = loop, .fd = sv[0]};
    px_watch *w;
    cr_expect_eq(px_watch_start(loop, &w, -1, PX_WATCH_READ, on_ready, &c), -EINVAL);
    cr_expect_eq(px_watch_start(loop, &w, sv[0], 4, on_ready, &c), -EINVAL);
    cr_expect_eq(px_watch_start(loop, &w, sv[0], PX_WATCH_READ, NULL, &c), -EINVAL);
    int file = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    cr_assert_geq(file, 0);
    cr_expect_eq(px_watch_start(loop, &w, file, PX_WATCH_READ, on_ready, &c), -EPERM);
    close(file);
    tc_runner r;
    tc_runner_start(&r, loop);
    tc_run_on_loop(loop, noop, NULL); /* the loop runs now: other threads are refused */
    cr_expect_eq(px_watch_start(loop, &w, sv[0], PX_WATCH_READ, on_ready, &c), -EPERM,
                 "started from a thread other than the running loop's");
    start_args a = {.loop = loop, .fd = sv[0], .c = &c};
    tc_run_on_loop(loop, start_here, &a);
    cr_assert_eq(a.rc, 0);
    cr_assert_eq(write(sv[1], "hi", 2), 2);
    cr_assert(tc_wait_ge(&c.bytes, 2, 5000));
    tc_run_on_loop(loop, stop_here, &c);
    let_loop_turn(loop);
    tc_runner_finish(&r);
    close(sv[0]);
    close(sv[1]);
}
