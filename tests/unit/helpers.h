/*
 * Shared helpers for the libproactor unit tests: loop creation per backend
 * and executor, a loop runner thread, deadline-bounded waits and blocking
 * client-side socket I/O.  Assertions from non-main threads go through
 * TC_CHECK (recorded, then asserted by the main thread with
 * tc_assert_no_failures()), since Criterion asserts must run on the test's
 * main thread.
 */
#ifndef TESTS_UNIT_HELPERS_H
#define TESTS_UNIT_HELPERS_H

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proactor.h"

/* Backend under test: PX_TEST_BACKEND=epoll|io_uring|auto (default auto). */
px_backend tc_backend(void);

/* Creates a loop with the test backend and the given executor; the other
 * options come from base (may be NULL).  Skips the test if the backend is
 * not available (-ENOTSUP); asserts success otherwise. */
px_loop *tc_loop_new(px_executor ex, const px_loop_opts *base);

/* A loop running on a background thread. */
typedef struct tc_runner {
    px_loop *loop;
    pthread_t thread;
    pthread_t loop_tid;  /* pthread_self() of the loop thread */
    pid_t loop_ktid;     /* gettid() of the loop thread */
    atomic_int running;  /* set just before px_loop_run is entered */
    int rc;              /* px_loop_run's return value, valid after stop */
} tc_runner;

void tc_runner_start(tc_runner *r, px_loop *loop);
/* A loop of executor ex running on its own thread (r) and a socket pair: sv[0] for
 * a stream, sv[1] for the test's end.  Returns the loop (also r->loop). */
px_loop *tc_start_pair(px_executor ex, tc_runner *r, int sv[2]);
/* tc_start_pair, then a stream on sv[0] with handlers h, user and options o (may
 * be NULL); asserts that px_stream_open succeeded.  Returns the stream. */
px_stream *tc_start_stream(px_executor ex, tc_runner *r, int sv[2],
                           const px_stream_handlers *h, void *user,
                           const px_stream_opts *o);
/* px_loop_stop + join; asserts px_loop_run returned 0.  Does not destroy. */
void tc_runner_stop(tc_runner *r);
/* Stop + px_loop_destroy. */
void tc_runner_finish(tc_runner *r);

/* Failures recorded from handler threads. */
extern atomic_int tc_failures;
void tc_fail_at(const char *file, int line, const char *what);
const char *tc_first_failure(void);
#define TC_CHECK(c)                                                     \
    do {                                                                \
        if (!(c))                                                       \
            tc_fail_at(__FILE__, __LINE__, #c);                         \
    } while (0)
#define tc_assert_no_failures()                                         \
    cr_assert_eq(atomic_load(&tc_failures), 0,                          \
                 "%d failure(s) in handler threads, first: %s",         \
                 atomic_load(&tc_failures), tc_first_failure())

/* Time. */
uint64_t tc_now_ms(void);
void tc_sleep_ms(unsigned ms); /* only for pacing, never to wait for an event */

/* Waits until *v >= target (or == for _eq) or timeout_ms passes; returns
 * whether the condition became true. */
bool tc_wait_ge(atomic_int *v, int target, unsigned timeout_ms);
bool tc_wait_ge_size(atomic_size_t *v, size_t target, unsigned timeout_ms);
bool tc_wait_flag(atomic_bool *v, unsigned timeout_ms);

/* Runs fn(arg) on the (running) loop's thread through px_loop_post and waits for it
 * (asserts it ran within 5 s). */
void tc_run_on_loop(px_loop *loop, void (*fn)(void *), void *arg);

/* A gate a handler can block on until the test opens it (bounded). */
typedef struct tc_gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
} tc_gate;
void tc_gate_init(tc_gate *g);
void tc_gate_open(tc_gate *g);
/* Returns true if the gate opened before timeout_ms. */
bool tc_gate_wait(tc_gate *g, unsigned timeout_ms);
void tc_gate_destroy(tc_gate *g);

/* Returns once the (running) loop has gone round passes times: a post that reposts
 * itself from the loop thread forces another pass each time, so after n steps
 * everything scheduled n-1 passes ago (reads re-armed after a handler, and so on) has
 * been processed.  Asserts that it happened within 5 s. */
void tc_loop_sync(px_loop *loop, int passes);

/* A post that holds the loop thread until the test opens gate (at most 10 s). */
typedef struct tc_block {
    tc_gate gate;
    atomic_bool entered;
} tc_block;
/* Posts b and returns once the loop thread is held in it (asserts, 5 s).  Open it with
 * tc_gate_open(&b->gate); tc_gate_destroy(&b->gate) once the loop has let go. */
void tc_block_loop(px_loop *loop, tc_block *b);

/* Sockets (client side, blocking unless stated). */
void tc_socketpair(int sv[2]);
/* Lowers SO_SNDBUF on fd (the kernel doubles it) so sends can block. */
void tc_small_sndbuf(int fd, int bytes);
int tc_tcp_connect(int family, uint16_t port); /* loopback; -errno */
int tc_write_all(int fd, const void *buf, size_t n); /* 0 or -errno */
/* Reads exactly n bytes within timeout_ms: 0, -ETIMEDOUT, -ENODATA (EOF
 * first) or -errno.  *got (may be NULL) receives the count read. */
int tc_read_exact(int fd, void *buf, size_t n, unsigned timeout_ms, size_t *got);
/* Waits for the peer to close: 0 on EOF, -ECONNRESET, -ETIMEDOUT, or
 * -EPROTO if data arrived instead (if discard is false). */
int tc_read_eof(int fd, unsigned timeout_ms, bool discard);

/* Fills p[0..n) with a pattern depending on seed and offset. */
void tc_fill(void *p, size_t n, unsigned seed, size_t offset);
/* Checks p[0..n) against tc_fill; returns the first bad index or n. */
size_t tc_check_fill(const void *p, size_t n, unsigned seed, size_t offset);

/* A stream user that counts what happens to it. */
typedef struct tc_sink {
    atomic_int opens;
    atomic_int data_calls;
    atomic_size_t bytes;
    atomic_int closes;
    atomic_int cause;   /* cause of the last on_close */
    atomic_int after_close; /* handlers that ran after on_close */
} tc_sink;
void tc_sink_init(tc_sink *k);
/* on_data counts; on_close records.  user must be a tc_sink. */
extern const px_stream_handlers tc_sink_handlers;
/* The sink's on_close on its own: records the cause, counts the close. */
void tc_sink_close(px_stream *s, int cause, void *user);
/* Same, but on_data also sends the bytes back (a copy). */
extern const px_stream_handlers tc_echo_handlers;
/* Handlers that do nothing. */
void tc_data_noop(px_stream *s, const char *bytes, size_t len, void *user);
void tc_close_noop(px_stream *s, int cause, void *user);
/* tc_start_stream with a sink: tc_sink_handlers and k (initialised here) as the
 * user, on_data (when not NULL) taking the place of the sink's own. */
px_stream *tc_start_sink(px_executor ex, tc_runner *r, int sv[2], tc_sink *k,
                         void (*on_data)(px_stream *, const char *, size_t, void *));

/* Criterion parameters: every executor. */
#define TC_EXEC_PARAMS(suite, name)                                     \
    ParameterizedTestParameters(suite, name)                            \
    {                                                                   \
        static px_executor tc_params_[] = {PX_EXEC_POOL, PX_EXEC_THREAD, \
                                           PX_EXEC_INLINE};             \
        return cr_make_param_array(px_executor, tc_params_, 3);         \
    }

/* A test run once per executor that calls fn(executor, arg); the optional
 * arguments are Criterion test options (.timeout = 20). */
#define TC_EXEC_TEST(suite, name, fn, arg, ...)                         \
    TC_EXEC_PARAMS(suite, name)                                         \
    ParameterizedTest(px_executor *ex, suite, name, ##__VA_ARGS__)      \
    {                                                                   \
        fn(*ex, arg);                                                   \
    }

#endif
