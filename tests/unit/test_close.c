/* Closing streams: from their own handler, from another thread while data
 * flows, abort, peer EOF, peer reset, loop destruction, a descriptor with
 * another reference, and an abort racing the peer's EOF.  on_close runs
 * exactly once in every case. */
#include "helpers.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- close from inside on_data after a reply ---- */

static void reply_then_close(px_stream *s, const char *bytes, size_t len, void *user)
{
    tc_sink *k = user;
    TC_CHECK(len == 5 && memcmp(bytes, "ping\n", 5) == 0);
    atomic_fetch_add(&k->data_calls, 1);
    atomic_fetch_add(&k->bytes, len);
    px_buf *b = NULL;
    TC_CHECK(px_buf_new(&b, "pong\n", 5) == 0);
    TC_CHECK(px_stream_send(s, b) == 0);
    px_buf_release(b);
    px_stream_close(s);
    px_stream_close(s); /* any number of times */
}

TC_EXEC_PARAMS(close, from_own_handler_after_reply)

ParameterizedTest(px_executor *ex, close, from_own_handler_after_reply, .timeout = 20)
{
    tc_sink k;
    tc_runner r;
    int sv[2];
    tc_start_sink(*ex, &r, sv, &k, reply_then_close);

    cr_assert_eq(tc_write_all(sv[1], "ping\n", 5), 0);
    char got[5];
    cr_assert_eq(tc_read_exact(sv[1], got, 5, 10000, NULL), 0, "reply not delivered before close");
    cr_assert_eq(memcmp(got, "pong\n", 5), 0);
    cr_assert_eq(tc_read_eof(sv[1], 10000, false), 0, "peer did not see EOF after the reply");
    cr_assert(tc_wait_ge(&k.closes, 1, 10000));
    cr_assert_eq(atomic_load(&k.cause), 0);
    close(sv[1]);
    tc_runner_finish(&r);
    cr_assert_eq(atomic_load(&k.closes), 1);
    cr_assert_eq(atomic_load(&k.data_calls), 1);
    tc_assert_no_failures();
}

/* ---- close / abort from another thread while data is in flight ---- */

typedef struct flow_state {
    atomic_bool close_returned;
    atomic_int late_data;     /* on_data that saw close_returned at entry */
    atomic_int data_calls;
    atomic_int closes;
    atomic_int cause;
    atomic_int data_after_close;
    atomic_bool stop_writer;
    int peer;
} flow_state;

static void flow_data(px_stream *s, const char *bytes, size_t len, void *user)
{
    (void)s;
    (void)bytes;
    (void)len;
    flow_state *f = user;
    if (atomic_load(&f->close_returned))
        atomic_fetch_add(&f->late_data, 1);
    if (atomic_load(&f->closes) != 0)
        atomic_fetch_add(&f->data_after_close, 1);
    atomic_fetch_add(&f->data_calls, 1);
}

static void flow_close(px_stream *s, int cause, void *user)
{
    (void)s;
    flow_state *f = user;
    atomic_store(&f->cause, cause);
    atomic_fetch_add(&f->closes, 1);
}

static void *flow_writer(void *arg)
{
    flow_state *f = arg;
    char chunk[1024];
    memset(chunk, 'w', sizeof chunk);
    uint64_t end = tc_now_ms() + 15000;
    while (!atomic_load(&f->stop_writer) && tc_now_ms() < end) {
        ssize_t w = send(f->peer, chunk, sizeof chunk, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            break; /* the stream closed */
        if (w < 0)
            sched_yield();
    }
    return NULL;
}

static void run_flow_close(px_executor ex, bool abort_it)
{
    flow_state *f = calloc(1, sizeof *f);
    cr_assert_not_null(f);
    px_stream_handlers h = {.on_data = flow_data, .on_close = flow_close};
    tc_runner r;
    int sv[2];
    px_stream *s = tc_start_stream(ex, &r, sv, &h, f, NULL);
    f->peer = sv[1];

    pthread_t w;
    cr_assert_eq(pthread_create(&w, NULL, flow_writer, f), 0);
    cr_assert(tc_wait_ge(&f->data_calls, 20, 10000), "data is not flowing");
    if (abort_it)
        px_stream_abort(s);
    else
        px_stream_close(s);
    atomic_store(&f->close_returned, true);
    cr_assert(tc_wait_ge(&f->closes, 1, 10000), "no on_close after %s", abort_it ? "abort" : "close");
    atomic_store(&f->stop_writer, true);
    pthread_join(w, NULL);
    close(sv[1]);
    tc_runner_finish(&r);

    int cause = atomic_load(&f->cause);
    if (abort_it)
        cr_assert_eq(cause, -ECONNABORTED, "abort: cause %d (%s)", cause, px_strerror(cause));
    else
        cr_assert(cause == 0 || cause == -ETIMEDOUT, "close: cause %d (%s)", cause, px_strerror(cause));
    cr_assert_eq(atomic_load(&f->closes), 1, "on_close ran %d times", atomic_load(&f->closes));
    cr_assert_eq(atomic_load(&f->data_after_close), 0, "on_data after on_close");
    /* One handler may have begun just before the close returned and only
     * looked at the flag after: since a stream's handlers never overlap,
     * at most one can be seen that way.  More is an on_data that began
     * after the close returned. */
    cr_assert_leq(atomic_load(&f->late_data), 1, "%d on_data began after %s returned",
                  atomic_load(&f->late_data), abort_it ? "abort" : "close");
    free(f);
}

TC_EXEC_TEST(close, from_other_thread_while_data_flows, run_flow_close, false, .timeout = 40)

TC_EXEC_TEST(close, abort_from_other_thread_while_data_flows, run_flow_close, true, .timeout = 40)

/* ---- abort from inside on_data ---- */

static void abort_in_data(px_stream *s, const char *bytes, size_t len, void *user)
{
    tc_sink *k = user;
    (void)bytes;
    if (atomic_load(&k->closes) != 0)
        atomic_fetch_add(&k->after_close, 1);
    atomic_fetch_add(&k->bytes, len);
    atomic_fetch_add(&k->data_calls, 1);
    px_buf *b = NULL;
    TC_CHECK(px_buf_new(&b, "dropped", 7) == 0);
    px_stream_send(s, b); /* may be queued; abort drops it */
    px_buf_release(b);
    px_stream_abort(s);
    px_stream_close(s); /* abort already decided */
}

TC_EXEC_PARAMS(close, abort_from_own_handler)

ParameterizedTest(px_executor *ex, close, abort_from_own_handler, .timeout = 20)
{
    tc_sink k;
    tc_runner r;
    int sv[2];
    tc_start_sink(*ex, &r, sv, &k, abort_in_data);
    cr_assert_eq(tc_write_all(sv[1], "first", 5), 0);
    cr_assert(tc_wait_ge(&k.closes, 1, 10000), "no on_close after abort");
    (void)tc_write_all(sv[1], "second", 6); /* may fail: the stream is gone */
    int rc = tc_read_eof(sv[1], 10000, true);
    cr_assert(rc == 0 || rc == -ECONNRESET, "peer: %d", rc);
    close(sv[1]);
    tc_runner_finish(&r);
    cr_assert_eq(atomic_load(&k.cause), -ECONNABORTED);
    cr_assert_eq(atomic_load(&k.closes), 1);
    cr_assert_eq(atomic_load(&k.data_calls), 1, "on_data after abort from the handler");
    cr_assert_eq(atomic_load(&k.after_close), 0);
    tc_assert_no_failures();
}

/* ---- peer EOF ---- */

TC_EXEC_PARAMS(close, peer_eof)

ParameterizedTest(px_executor *ex, close, peer_eof, .timeout = 20)
{
    tc_sink k;
    tc_runner r;
    int sv[2];
    tc_start_sink(*ex, &r, sv, &k, NULL);
    cr_assert_eq(tc_write_all(sv[1], "bye", 3), 0);
    close(sv[1]);
    cr_assert(tc_wait_ge(&k.closes, 1, 10000), "no on_close after peer EOF");
    tc_runner_finish(&r);
    cr_assert_eq(atomic_load(&k.cause), 0);
    cr_assert_eq(atomic_load(&k.closes), 1);
    cr_assert_eq(atomic_load(&k.bytes), 3, "bytes before EOF must be delivered");
    cr_assert_eq(atomic_load(&k.after_close), 0);
    tc_assert_no_failures();
}

/* ---- peer reset on TCP ---- */

TC_EXEC_PARAMS(close, peer_reset)

ParameterizedTest(px_executor *ex, close, peer_reset, .timeout = 20)
{
    px_loop *loop = tc_loop_new(*ex, NULL);
    tc_runner r;
    tc_runner_start(&r, loop);
    tc_sink k;
    tc_sink_init(&k);
    px_listener *l = NULL;
    px_listen_opts lo = {.host = "127.0.0.1", .handlers = tc_sink_handlers, .user = &k};
    cr_assert_eq(px_listen(loop, &l, &lo), 0);
    int c = tc_tcp_connect(AF_INET, px_listener_port(l));
    cr_assert_geq(c, 0, "connect: %s", strerror(-c));
    cr_assert_eq(tc_write_all(c, "hi", 2), 0);
    cr_assert(tc_wait_ge_size(&k.bytes, 2, 10000), "accepted stream got no data");
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    cr_assert_eq(setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(c); /* sends RST */
    cr_assert(tc_wait_ge(&k.closes, 1, 10000), "no on_close after reset");
    px_listener_close(l);
    tc_runner_finish(&r);
    int cause = atomic_load(&k.cause);
    cr_assert_lt(cause, 0, "reset gave cause %d", cause);
    cr_assert_neq(cause, -ECANCELED, "reset reported as loop destruction");
    cr_assert_eq(atomic_load(&k.closes), 1);
    tc_assert_no_failures();
}

/* ---- destroy with open streams ---- */

enum { DS_N = 5 };

static void run_destroy_with_streams(px_executor ex, bool ran)
{
    px_loop *loop = tc_loop_new(ex, NULL);
    tc_runner r;
    if (ran)
        tc_runner_start(&r, loop);
    tc_sink k[DS_N];
    int peer[DS_N];
    for (int i = 0; i < DS_N; i++) {
        int sv[2];
        tc_socketpair(sv);
        tc_sink_init(&k[i]);
        px_stream *s = NULL;
        cr_assert_eq(px_stream_open(loop, &s, sv[0], &tc_sink_handlers, &k[i], NULL), 0);
        peer[i] = sv[1];
    }
    if (ran) {
        cr_assert_eq(tc_write_all(peer[0], "x", 1), 0);
        cr_assert(tc_wait_ge_size(&k[0].bytes, 1, 10000));
        tc_runner_stop(&r);
    }
    for (int i = 0; i < DS_N; i++)
        cr_assert_eq(atomic_load(&k[i].closes), 0);
    px_loop_destroy(loop);
    for (int i = 0; i < DS_N; i++) {
        cr_assert_eq(atomic_load(&k[i].closes), 1, "stream %d: on_close ran %d times by destroy", i,
                     atomic_load(&k[i].closes));
        cr_assert_eq(atomic_load(&k[i].cause), -ECANCELED, "stream %d: cause %d", i,
                     atomic_load(&k[i].cause));
        /* the library closed its end */
        int rc = tc_read_eof(peer[i], 5000, true);
        cr_assert(rc == 0 || rc == -ECONNRESET, "stream %d: peer still connected (%d)", i, rc);
        close(peer[i]);
    }
}

TC_EXEC_TEST(close, destroy_cancels_open_streams, run_destroy_with_streams, true, .timeout = 20)

TC_EXEC_TEST(close, destroy_never_run_cancels_open_streams, run_destroy_with_streams, false, .timeout = 20)

/* ---- regressions ---- */

/* Regression (review of src/proactor): a descriptor with another reference (dup,
 * fork) stayed in the epoll set after the stream closed it, and its events then
 * pointed at the freed stream. */
Test(close, dup_keeps_epoll_registration, .timeout = 20)
{
    tc_runner r;
    int sv[2];
    px_loop *loop = tc_start_pair(PX_EXEC_INLINE, &r, sv);
    int other = dup(sv[0]); /* e.g. inherited by a child, or kept by the app */
    cr_assert_geq(other, 0);
    tc_sink k;
    tc_sink_init(&k);
    px_stream *s = NULL;
    cr_assert_eq(px_stream_open(loop, &s, sv[0], &tc_sink_handlers, &k, NULL), 0);
    tc_loop_sync(loop, 3);
    px_stream_abort(s);
    cr_assert(tc_wait_ge(&k.closes, 1, 5000));
    tc_loop_sync(loop, 3); /* the stream is freed by now (inline on_close) */

    /* The open file description is still alive through `other`, so close()
     * did not remove it from the epoll set: this wakes the loop with a
     * pointer to the freed px_stream (heap-use-after-free under ASan). */
    cr_assert_eq(tc_write_all(sv[1], "boom", 4), 0);
    tc_loop_sync(loop, 3);

    close(other);
    close(sv[1]);
    tc_runner_finish(&r);
    cr_assert_eq(atomic_load(&k.closes), 1);
}

/* Regression (review of src/proactor): px_stream_abort() then a peer EOF seen before the
 * abort request was processed: on_close reported 0, not -ECONNABORTED, and the close
 * was graceful (FIN, queued bytes flushed) instead of a reset. */
Test(close, abort_then_eof_reports_abort, .timeout = 20)
{
    tc_sink k;
    tc_runner r;
    int sv[2];
    px_stream *s = tc_start_sink(PX_EXEC_POOL, &r, sv, &k, NULL);
    px_loop *loop = r.loop;
    tc_loop_sync(loop, 3); /* armed: waiting for readiness */

    tc_block b;
    tc_block_loop(loop, &b);
    shutdown(sv[1], SHUT_WR); /* the peer's FIN arrives ... */
    px_stream_abort(s);       /* ... and the application aborts */
    tc_gate_open(&b.gate);

    cr_assert(tc_wait_ge(&k.closes, 1, 5000));
    cr_expect_eq(atomic_load(&k.cause), -ECONNABORTED,
                 "on_close cause %d after px_stream_abort() returned", atomic_load(&k.cause));
    close(sv[1]);
    tc_runner_finish(&r);
    tc_gate_destroy(&b.gate);
    tc_assert_no_failures();
}
