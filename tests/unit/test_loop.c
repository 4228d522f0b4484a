/* The loop itself: names and parsing, options, run/stop (also from a signal
 * handler), and streams over pipes. */
#include "helpers.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

Test(loop, names_round_trip, .timeout = 10)
{
    const px_backend bs[] = {PX_BACKEND_AUTO, PX_BACKEND_EPOLL, PX_BACKEND_IO_URING};
    const char *bn[] = {"auto", "epoll", "io_uring"};
    for (int i = 0; i < 3; i++) {
        cr_assert_str_eq(px_backend_name(bs[i]), bn[i]);
        px_backend b = (px_backend)99;
        cr_assert_eq(px_backend_parse(bn[i], &b), 0);
        cr_assert_eq(b, bs[i]);
    }
    const px_executor es[] = {PX_EXEC_POOL, PX_EXEC_THREAD, PX_EXEC_INLINE};
    const char *en[] = {"pool", "thread", "inline"};
    for (int i = 0; i < 3; i++) {
        cr_assert_str_eq(px_executor_name(es[i]), en[i]);
        px_executor e = (px_executor)99;
        cr_assert_eq(px_executor_parse(en[i], &e), 0);
        cr_assert_eq(e, es[i]);
    }
    px_backend b = PX_BACKEND_EPOLL;
    cr_assert_eq(px_backend_parse("kqueue", &b), -EINVAL);
    cr_assert_eq(px_backend_parse("", &b), -EINVAL);
    cr_assert_eq(px_backend_parse("pool", &b), -EINVAL);
    cr_assert_eq(b, PX_BACKEND_EPOLL, "a failed parse must not write *out");
    px_executor e = PX_EXEC_THREAD;
    cr_assert_eq(px_executor_parse("fibers", &e), -EINVAL);
    cr_assert_eq(px_executor_parse("epoll", &e), -EINVAL);
    cr_assert_eq(e, PX_EXEC_THREAD);
}

Test(loop, strerror, .timeout = 10)
{
    const char *m = px_strerror(PX_ESENDQ);
    cr_assert_not_null(m);
    cr_assert_gt(strlen(m), 0);
    cr_assert_not_null(px_strerror(-EPIPE));
    cr_assert_gt(strlen(px_strerror(-EPIPE)), 0);
    cr_assert_not_null(px_strerror(0));
}

Test(loop, io_uring_available_or_enotsup, .timeout = 10)
{
    px_loop *loop = NULL;
    int rc = px_loop_create(&loop, &(px_loop_opts){.backend = PX_BACKEND_IO_URING});
    cr_assert(rc == 0 || rc == -ENOTSUP, "px_loop_create(io_uring): %d %s", rc, px_strerror(rc));
    if (rc == 0) {
        cr_assert_eq(px_loop_backend(loop), PX_BACKEND_IO_URING);
        px_loop_destroy(loop);
    }
    rc = px_loop_create(&loop, &(px_loop_opts){.backend = PX_BACKEND_AUTO});
    cr_assert_eq(rc, 0);
    cr_assert_neq(px_loop_backend(loop), PX_BACKEND_AUTO);
    cr_assert_eq(px_loop_executor(loop), PX_EXEC_POOL);
    px_loop_destroy(loop);
    rc = px_loop_create(&loop, NULL);
    cr_assert_eq(rc, 0, "opts NULL: %s", px_strerror(rc));
    px_loop_destroy(loop);
}

Test(loop, bad_options_are_einval, .timeout = 10)
{
    px_loop *loop = NULL;
    cr_assert_eq(px_loop_create(&loop, &(px_loop_opts){.backend = (px_backend)42}), -EINVAL);
    cr_assert_eq(px_loop_create(&loop, &(px_loop_opts){.executor = (px_executor)42}), -EINVAL);
    cr_assert_eq(px_loop_create(&loop, &(px_loop_opts){.threads = 1025}), -EINVAL);
    cr_assert_null(loop, "a failed create must leave nothing behind");
    cr_assert_eq(px_loop_create(&loop, &(px_loop_opts){.threads = 2}), 0);
    cr_assert_eq(px_loop_threads(loop), 2);
    px_loop_destroy(loop);
}

/* ---- stop ---- */

static px_loop *sig_loop;
static volatile sig_atomic_t sig_handled;
static atomic_int sig_loop_running;

static void on_sigusr1(int sig)
{
    (void)sig;
    sig_handled++;
    px_loop_stop(sig_loop);
}

/* sig_loop, of executor ex, and on_sigusr1 as the SIGUSR1 handler. */
static void sig_start(px_executor ex)
{
    sig_loop = tc_loop_new(ex, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigusr1;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
}

static void mark_running(void *arg)
{
    (void)arg;
    atomic_store(&sig_loop_running, 1);
}

static void *signaller(void *arg)
{
    (void)arg;
    if (tc_wait_ge(&sig_loop_running, 1, 10000))
        kill(getpid(), SIGUSR1);
    return NULL;
}

Test(loop, stop_from_signal_handler, .timeout = 20)
{
    sig_start(PX_EXEC_POOL);

    cr_assert_eq(px_loop_post(sig_loop, mark_running, NULL), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, signaller, NULL), 0);
    /* The signal may land on any thread of the process; the handler's
     * px_loop_stop must end this run either way. */
    int rc = px_loop_run(sig_loop);
    pthread_join(th, NULL);
    cr_assert_eq(rc, 0);
    cr_assert_eq(atomic_load(&sig_loop_running), 1);
    cr_assert_eq(sig_handled, 1);
    px_loop_destroy(sig_loop);
}

/* Raised on the loop thread itself, from inside a post. */
static void raise_usr1(void *arg)
{
    (void)arg;
    raise(SIGUSR1);
}

Test(loop, stop_from_signal_on_loop_thread, .timeout = 20)
{
    sig_start(PX_EXEC_INLINE);
    cr_assert_eq(px_loop_post(sig_loop, raise_usr1, NULL), 0);
    cr_assert_eq(px_loop_run(sig_loop), 0);
    cr_assert_eq(sig_handled, 1);
    px_loop_destroy(sig_loop);
}

Test(loop, stop_before_run_returns_at_once, .timeout = 20)
{
    px_loop *loop = tc_loop_new(PX_EXEC_POOL, NULL);
    px_loop_stop(loop);
    uint64_t t0 = tc_now_ms();
    cr_assert_eq(px_loop_run(loop), 0);
    cr_assert_lt(tc_now_ms() - t0, 2000, "run after stop did not return at once");

    /* The stop was consumed: a later run runs until stopped again, and
     * state survives between runs. */
    atomic_store(&sig_loop_running, 0);
    tc_runner r;
    tc_runner_start(&r, loop);
    cr_assert_eq(px_loop_post(loop, mark_running, NULL), 0);
    cr_assert(tc_wait_ge(&sig_loop_running, 1, 10000));
    /* running: a second run is refused */
    cr_assert_eq(px_loop_run(loop), -EBUSY);
    tc_runner_finish(&r);
}

/* ---- pipes ---- */

static atomic_int pipe_peer_rc;

static void pipe_data(px_stream *s, const char *bytes, size_t len, void *user)
{
    char tmp[64];
    atomic_store(&pipe_peer_rc, px_stream_peer(s, tmp, sizeof tmp));
    tc_sink_handlers.on_data(s, bytes, len, user);
}

TC_EXEC_PARAMS(loop, stream_over_pipe)

ParameterizedTest(px_executor *ex, loop, stream_over_pipe, .timeout = 20)
{
    px_loop *loop = tc_loop_new(*ex, NULL);
    tc_runner r;
    tc_runner_start(&r, loop);
    int p[2];
    cr_assert_eq(pipe(p), 0);
    tc_sink k;
    tc_sink_init(&k);
    px_stream_handlers h = tc_sink_handlers;
    h.on_data = pipe_data;
    px_stream *s = NULL;
    atomic_store(&pipe_peer_rc, 1);
    cr_assert_eq(px_stream_open(loop, &s, p[0], &h, &k, NULL), 0);
    cr_assert_eq(tc_write_all(p[1], "hello pipe", 10), 0);
    cr_assert(tc_wait_ge_size(&k.bytes, 10, 10000), "on_data did not get the pipe's bytes");
    cr_assert_eq(atomic_load(&pipe_peer_rc), -ENOTSOCK);
    close(p[1]);
    cr_assert(tc_wait_ge(&k.closes, 1, 10000), "no on_close after the writer closed");
    cr_assert_eq(atomic_load(&k.cause), 0);
    tc_runner_finish(&r);
    cr_assert_eq(atomic_load(&k.closes), 1);
    cr_assert_eq(atomic_load(&k.bytes), 10);
    tc_assert_no_failures();
}

Test(loop, stream_open_failure_leaves_fd_to_caller, .timeout = 10)
{
    px_loop *loop = tc_loop_new(PX_EXEC_POOL, NULL);
    int sv[2];
    tc_socketpair(sv);
    tc_sink k;
    tc_sink_init(&k);
    px_stream *s = NULL;
    px_stream_handlers no_data = {.on_close = tc_sink_handlers.on_close};
    cr_assert_eq(px_stream_open(loop, &s, sv[0], &no_data, &k, NULL), -EINVAL);
    px_stream_handlers no_close = {.on_data = tc_sink_handlers.on_data};
    cr_assert_eq(px_stream_open(loop, &s, sv[0], &no_close, &k, NULL), -EINVAL);
    cr_assert_neq(fcntl(sv[0], F_GETFD), -1, "fd closed by a failed px_stream_open");
    int rc = px_stream_open(loop, &s, -1, &tc_sink_handlers, &k, NULL);
    cr_assert_lt(rc, 0, "px_stream_open(-1) succeeded");
    close(sv[0]);
    close(sv[1]);
    px_loop_destroy(loop);
    cr_assert_eq(atomic_load(&k.closes), 0, "a failed open must not run handlers");
}
