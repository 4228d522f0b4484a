/* The stream's state machine (src/proactor/stream.c, top of file) seen from
 * outside: the states a graceful close, an abort and a linger timeout pass
 * through, read on the loop thread; px_stream_keep refused outside on_data;
 * the version; and, in debug builds (PX_DEBUG: the sanitizer builds), the checks that
 * abort on a loop-thread-only call from elsewhere or a transition the table
 * does not have. */
#include "helpers.h"
#include "proactor/internal.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- reading the state on the loop thread ---- */

typedef struct state_probe {
    px_stream *s;
    px_stream_state state;
} state_probe;

static void noop(void *arg) { (void)arg; }

static void read_state(void *arg)
{
    state_probe *p = arg;
    p->state = p->s->state;
}

/* The state once the loop has acted on everything asked of it before this
 * call: the first post is taken with the requests queued before it (the
 * loop handles those in the same pass, after the posts); the second runs in
 * a later pass and reads the state. */
static px_stream_state state_now(px_loop *loop, px_stream *s)
{
    state_probe p = {.s = s};
    tc_run_on_loop(loop, noop, NULL);
    tc_run_on_loop(loop, read_state, &p);
    return p.state;
}

static unsigned shut_now(px_stream *s) { return atomic_load(&s->shut); }

#define QUEUED_BYTES (256 * 1024) /* far more than the socket pair holds */

/* An open stream (on_open has run) whose peer does not read, with bytes
 * still queued: sv[1] is the peer. */
static px_stream *open_stuck(px_loop *loop, int sv[2], tc_sink *k)
{
    tc_socketpair(sv);
    tc_small_sndbuf(sv[0], 16 * 1024);
    tc_sink_init(k);
    px_stream *s = NULL;
    cr_assert_eq(px_stream_open(loop, &s, sv[0], &tc_sink_handlers, k, NULL), 0);
    px_stream_retain(s); /* read after on_close */
    cr_assert(tc_wait_ge(&k->opens, 1, 5000), "no on_open");
    cr_assert_eq(state_now(loop, s), PX_ST_OPEN);
    cr_assert_eq(shut_now(s), PX_SHUT_NONE);
    char *big = malloc(QUEUED_BYTES);
    cr_assert_not_null(big);
    tc_fill(big, QUEUED_BYTES, 7, 0);
    px_buf *b = NULL;
    cr_assert_eq(px_buf_new(&b, big, QUEUED_BYTES), 0);
    free(big);
    cr_assert_eq(px_stream_send(s, b), 0);
    px_buf_release(b);
    return s;
}

/* A running loop with a stuck stream (open_stuck), and its end. */
typedef struct stuck {
    px_loop *loop;
    tc_runner r;
    int sv[2];
    tc_sink k;
    px_stream *s;
} stuck;

static void stuck_start(stuck *t, px_executor ex, const px_loop_opts *opts)
{
    t->loop = tc_loop_new(ex, opts);
    tc_runner_start(&t->r, t->loop);
    t->s = open_stuck(t->loop, t->sv, &t->k);
}

static void stuck_finish(stuck *t)
{
    close(t->sv[1]);
    tc_runner_finish(&t->r);
    px_stream_release(t->s);
    tc_assert_no_failures();
}

/* OPEN -> DRAINING -> (CLOSING -> CLOSED) -> FINAL, cause 0: a graceful close
 * with bytes queued waits for the peer to take them. */
TC_EXEC_PARAMS(stream_state, graceful_close_drains)

ParameterizedTest(px_executor *ex, stream_state, graceful_close_drains, .timeout = 30)
{
    stuck t;
    stuck_start(&t, *ex, NULL);
    px_loop *loop = t.loop;
    px_stream *s = t.s;

    px_stream_close(s);
    /* Refused from the moment close returns, whatever the loop has done. */
    cr_assert_eq(shut_now(s), PX_SHUT_CLOSE);
    px_buf *b = NULL;
    cr_assert_eq(px_buf_new(&b, "x", 1), 0);
    cr_assert_eq(px_stream_send(s, b), -EPIPE);
    px_buf_release(b);
    cr_assert_eq(state_now(loop, s), PX_ST_DRAINING, "bytes queued: the close drains them");
    cr_assert_eq(atomic_load(&t.k.closes), 0);

    char *got = malloc(QUEUED_BYTES);
    cr_assert_not_null(got);
    cr_assert_eq(tc_read_exact(t.sv[1], got, QUEUED_BYTES, 10000, NULL), 0);
    cr_assert_eq(tc_check_fill(got, QUEUED_BYTES, 7, 0), QUEUED_BYTES);
    free(got);
    cr_assert_eq(tc_read_eof(t.sv[1], 10000, false), 0);
    cr_assert(tc_wait_ge(&t.k.closes, 1, 10000), "no on_close");
    cr_assert_eq(atomic_load(&t.k.cause), 0);
    cr_assert_eq(state_now(loop, s), PX_ST_FINAL);
    cr_assert_eq(s->fd, -1);

    stuck_finish(&t);
    cr_assert_eq(atomic_load(&t.k.closes), 1);
}

/* DRAINING -> CLOSING on an abort: shut rises to ABORT, the cause says so. */
Test(stream_state, abort_while_draining, .timeout = 30)
{
    stuck t;
    stuck_start(&t, PX_EXEC_POOL, NULL);
    px_stream_close(t.s);
    cr_assert_eq(state_now(t.loop, t.s), PX_ST_DRAINING);
    px_stream_abort(t.s);
    cr_assert_eq(shut_now(t.s), PX_SHUT_ABORT);
    cr_assert(tc_wait_ge(&t.k.closes, 1, 10000), "no on_close after abort");
    cr_assert_eq(atomic_load(&t.k.cause), -ECONNABORTED);
    cr_assert_eq(state_now(t.loop, t.s), PX_ST_FINAL);
    stuck_finish(&t);
}

/* DRAINING -> CLOSING when the linger timer expires: -ETIMEDOUT. */
Test(stream_state, linger_expires, .timeout = 30)
{
    stuck t;
    stuck_start(&t, PX_EXEC_POOL, &(px_loop_opts){.linger_ms = 200});
    px_stream_close(t.s);
    cr_assert_eq(state_now(t.loop, t.s), PX_ST_DRAINING);
    cr_assert(tc_wait_ge(&t.k.closes, 1, 10000), "no on_close after the linger time");
    cr_assert_eq(atomic_load(&t.k.cause), -ETIMEDOUT);
    cr_assert_eq(state_now(t.loop, t.s), PX_ST_FINAL);
    stuck_finish(&t);
}

/* ---- px_stream_keep outside on_data ---- */

typedef struct keep_probe {
    px_stream *other;           /* another open stream */
    tc_gate release_data;       /* on_data waits on it the first time */
    atomic_bool in_data;
    atomic_int data_calls;
    atomic_int open_rc, data_rc, other_rc, call_rc, close_rc;
    atomic_int calls, closes;
} keep_probe;

static void kp_open(px_stream *s, void *user)
{
    keep_probe *p = user;
    atomic_store(&p->open_rc, px_stream_keep(s, 1));
}

static void kp_data(px_stream *s, const char *bytes, size_t len, void *user)
{
    (void)bytes;
    (void)len;
    keep_probe *p = user;
    if (atomic_fetch_add(&p->data_calls, 1) != 0)
        return;
    atomic_store(&p->data_rc, px_stream_keep(s, 0)); /* here it is allowed */
    atomic_store(&p->other_rc, px_stream_keep(p->other, 1)); /* not another stream's */
    atomic_store(&p->in_data, true);
    TC_CHECK(tc_gate_wait(&p->release_data, 10000));
}

static void kp_call(px_stream *s, void *arg, void *user)
{
    (void)arg;
    keep_probe *p = user;
    atomic_store(&p->call_rc, px_stream_keep(s, 1));
    atomic_fetch_add(&p->calls, 1);
}

static void kp_close(px_stream *s, int cause, void *user)
{
    (void)cause;
    keep_probe *p = user;
    atomic_store(&p->close_rc, px_stream_keep(s, 1));
    atomic_fetch_add(&p->closes, 1);
}

static const px_stream_handlers kp_handlers = {
    .on_open = kp_open, .on_data = kp_data, .on_close = kp_close};

TC_EXEC_PARAMS(stream_state, keep_outside_on_data_is_einval)

ParameterizedTest(px_executor *ex, stream_state, keep_outside_on_data_is_einval, .timeout = 30)
{
    px_loop *loop = tc_loop_new(*ex, NULL);
    tc_runner r;
    tc_runner_start(&r, loop);
    keep_probe *p = calloc(1, sizeof(*p));
    cr_assert_not_null(p);
    tc_gate_init(&p->release_data);
    atomic_store(&p->open_rc, 1);
    atomic_store(&p->data_rc, 1);
    atomic_store(&p->other_rc, 1);
    atomic_store(&p->call_rc, 1);
    atomic_store(&p->close_rc, 1);

    int ov[2], sv[2];
    tc_socketpair(ov);
    tc_socketpair(sv);
    tc_sink ok;
    tc_sink_init(&ok);
    cr_assert_eq(px_stream_open(loop, &p->other, ov[0], &tc_sink_handlers, &ok, NULL), 0);
    px_stream *s = NULL;
    cr_assert_eq(px_stream_open(loop, &s, sv[0], &kp_handlers, p, NULL), 0);
    px_stream_retain(s);

    cr_assert_eq(px_stream_keep(NULL, 1), -EINVAL);
    cr_assert_eq(tc_write_all(sv[1], "abc", 3), 0);
    cr_assert(tc_wait_flag(&p->in_data, 5000), "no on_data");
    /* Its on_data runs on another thread (or on the loop thread, inline):
     * this thread is not in it. */
    cr_assert_eq(px_stream_keep(s, 1), -EINVAL);
    tc_gate_open(&p->release_data);

    cr_assert_eq(px_stream_call(s, kp_call, NULL), 0);
    cr_assert(tc_wait_ge(&p->calls, 1, 5000), "the call did not run");
    close(sv[1]); /* end of file: on_close */
    cr_assert(tc_wait_ge(&p->closes, 1, 5000), "no on_close");
    cr_assert_eq(px_stream_keep(s, 1), -EINVAL);

    cr_assert_eq(atomic_load(&p->open_rc), -EINVAL, "keep in on_open");
    cr_assert_eq(atomic_load(&p->data_rc), 0, "keep in on_data");
    cr_assert_eq(atomic_load(&p->other_rc), -EINVAL, "keep on another stream in on_data");
    cr_assert_eq(atomic_load(&p->call_rc), -EINVAL, "keep in a px_stream_call function");
    cr_assert_eq(atomic_load(&p->close_rc), -EINVAL, "keep in on_close");
    cr_assert_eq(atomic_load(&p->data_calls), 1, "bytes delivered again: %d on_data",
                 atomic_load(&p->data_calls));

    close(ov[1]);
    cr_assert(tc_wait_ge(&ok.closes, 1, 5000));
    tc_runner_finish(&r);
    px_stream_release(s);
    tc_gate_destroy(&p->release_data);
    free(p);
    tc_assert_no_failures();
}

/* ---- the version (kept here while the test files are being reorganised) ---- */

Test(version, header_and_library_agree)
{
    char want[32];
    snprintf(want, sizeof(want), "%d.%d.%d", PX_VERSION_MAJOR, PX_VERSION_MINOR,
             PX_VERSION_PATCH);
    cr_assert_str_eq(PX_VERSION, want, "PX_VERSION does not spell the numbers");
    cr_assert_not_null(px_version());
    cr_assert_str_eq(px_version(), PX_VERSION, "library %s, header %s", px_version(),
                     PX_VERSION);
}

/* ---- debug checks (PX_DEBUG builds only: elsewhere these would be races) ---- */

#ifdef PX_DEBUG

/* A running loop (the loop thread has run a post) with one open stream. */
static px_stream *running_with_stream(tc_runner *r, int sv[2], tc_sink *k)
{
    px_loop *loop = tc_loop_new(PX_EXEC_POOL, NULL);
    tc_runner_start(r, loop);
    tc_socketpair(sv);
    tc_sink_init(k);
    px_stream *s = NULL;
    cr_assert_eq(px_stream_open(loop, &s, sv[0], &tc_sink_handlers, k, NULL), 0);
    cr_assert(tc_wait_ge(&k->opens, 1, 5000), "no on_open");
    tc_run_on_loop(loop, noop, NULL);
    return s;
}

/* A loop-thread-only internal call from another thread while the loop runs. */
Test(stream_state, debug_loop_thread_call_elsewhere_aborts, .signal = SIGABRT, .timeout = 20)
{
    tc_runner r;
    int sv[2];
    tc_sink k;
    px_stream *s = running_with_stream(&r, sv, &k);
    px__stream_begin_close(s, 0, false);
    cr_assert_fail("px__stream_begin_close off the loop thread went unnoticed");
}

/* The same through the public API: px_watch_set is loop thread only. */
static void watch_ignore(px_watch *w, unsigned ready, void *user)
{
    (void)w;
    (void)ready;
    (void)user;
}

Test(stream_state, debug_watch_set_elsewhere_aborts, .signal = SIGABRT, .timeout = 20)
{
    px_loop *loop = tc_loop_new(PX_EXEC_POOL, NULL);
    int pv[2];
    cr_assert_eq(pipe(pv), 0);
    px_watch *w = NULL;
    /* Any thread before the loop first runs. */
    cr_assert_eq(px_watch_start(loop, &w, pv[0], PX_WATCH_READ, watch_ignore, NULL), 0);
    tc_runner r;
    tc_runner_start(&r, loop);
    tc_run_on_loop(loop, noop, NULL);
    px_watch_set(w, 0);
    cr_assert_fail("px_watch_set off the loop thread went unnoticed");
}

/* px_loop_destroy on a loop that is running. */
Test(stream_state, debug_destroy_running_loop_aborts, .signal = SIGABRT, .timeout = 20)
{
    px_loop *loop = tc_loop_new(PX_EXEC_POOL, NULL);
    tc_runner r;
    tc_runner_start(&r, loop);
    tc_run_on_loop(loop, noop, NULL);
    px_loop_destroy(loop);
    cr_assert_fail("px_loop_destroy of a running loop went unnoticed");
}

/* Runs fn(stream) on the loop thread of a running loop with an open stream: each of
 * these breaks a rule, so the test process aborts. */
static void break_on_loop(void (*fn)(void *))
{
    tc_runner r;
    int sv[2];
    tc_sink k;
    px_stream *s = running_with_stream(&r, sv, &k);
    tc_run_on_loop(r.loop, fn, s);
}

/* A transition the table does not have: OPEN -> CLOSED (the backend reporting
 * a close nobody asked for). */
static void report_closed(void *arg) { px__stream_closed(arg); }

Test(stream_state, debug_illegal_transition_aborts, .signal = SIGABRT, .timeout = 20)
{
    break_on_loop(report_closed);
    cr_assert_fail("OPEN -> CLOSED went unnoticed");
}

/* A handler's completion reported while no event is out. */
static void report_done(void *arg) { px__stream_event_done(arg); }

Test(stream_state, debug_done_without_event_aborts, .signal = SIGABRT, .timeout = 20)
{
    break_on_loop(report_done);
    cr_assert_fail("an event completion with no event out went unnoticed");
}

#endif /* PX_DEBUG */
