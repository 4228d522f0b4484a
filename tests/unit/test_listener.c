/* Listeners: port 0, IPv4/IPv6 clients, explicit host, port in use, on_open
 * ordering, peer addresses, running out of descriptors, and closing a
 * listener from its own streams' handlers. */
#include "helpers.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct ls_state {
    atomic_int opens;
    atomic_int data_before_open;
    atomic_int closes;
    pthread_mutex_t mu;
    char peer[8][64]; /* px_stream_peer text of the last 8 accepted */
    int npeer;
    atomic_int peer_errors;
    atomic_int enospc_ok;
} ls_state;

static ls_state *ls;

typedef struct ls_conn {
    atomic_bool opened;
} ls_conn;

static void ls_open(px_stream *s, void *user)
{
    TC_CHECK(user == ls);
    ls_conn *c = calloc(1, sizeof *c);
    TC_CHECK(c != NULL);
    atomic_store(&c->opened, true);
    px_stream_set_user(s, c);
    TC_CHECK(px_stream_user(s) == c);
    char text[64];
    int n = px_stream_peer(s, text, sizeof text);
    if (n < 0 || (size_t)n != strlen(text))
        atomic_fetch_add(&ls->peer_errors, 1);
    char tiny[3];
    if (px_stream_peer(s, tiny, sizeof tiny) == -ENOSPC)
        atomic_fetch_add(&ls->enospc_ok, 1);
    pthread_mutex_lock(&ls->mu);
    if (n > 0)
        snprintf(ls->peer[ls->npeer++ % 8], 64, "%s", text);
    pthread_mutex_unlock(&ls->mu);
    atomic_fetch_add(&ls->opens, 1);
}

static void ls_data(px_stream *s, const char *bytes, size_t len, void *user)
{
    ls_conn *c = user;
    if (c == (void *)ls || c == NULL || !atomic_load(&c->opened)) {
        atomic_fetch_add(&ls->data_before_open, 1);
        return;
    }
    px_buf *b = NULL;
    TC_CHECK(px_buf_new(&b, bytes, len) == 0);
    TC_CHECK(px_stream_send(s, b) == 0);
    px_buf_release(b);
}

static void ls_close(px_stream *s, int cause, void *user)
{
    (void)s;
    (void)cause;
    if (user != ls)
        free(user);
    atomic_fetch_add(&ls->closes, 1);
}

static const px_stream_handlers ls_handlers = {.on_open = ls_open, .on_data = ls_data, .on_close = ls_close};

static void ls_init(void)
{
    ls = calloc(1, sizeof *ls);
    cr_assert_not_null(ls);
    pthread_mutex_init(&ls->mu, NULL);
}

/* Sends a line and expects it echoed. */
static void echo_check(int fd, const char *what)
{
    char msg[64], got[64];
    int n = snprintf(msg, sizeof msg, "echo via %s\n", what);
    cr_assert_eq(tc_write_all(fd, msg, (size_t)n), 0);
    int rc = tc_read_exact(fd, got, (size_t)n, 10000, NULL);
    cr_assert_eq(rc, 0, "%s: no echo (%s)", what, px_strerror(rc));
    cr_assert_eq(memcmp(msg, got, (size_t)n), 0);
}

static bool ipv6_loopback_usable(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6};
    a.sin6_addr = in6addr_loopback;
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static uint16_t local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&ss, &sl), 0);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static bool peer_seen(const char *want)
{
    pthread_mutex_lock(&ls->mu);
    bool found = false;
    for (int i = 0; i < 8; i++)
        if (strcmp(ls->peer[i], want) == 0)
            found = true;
    pthread_mutex_unlock(&ls->mu);
    return found;
}

/* ls_init, then a loop of executor ex running on r with a listener l (ls_handlers)
 * on host (NULL: any), port 0.  Returns the port it got (asserted not 0). */
static uint16_t ls_start(px_executor ex, tc_runner *r, const char *host, px_listener **l)
{
    ls_init();
    px_loop *loop = tc_loop_new(ex, NULL);
    tc_runner_start(r, loop);
    *l = NULL;
    px_listen_opts lo = {.host = host, .port = 0, .handlers = ls_handlers, .user = ls};
    cr_assert_eq(px_listen(loop, l, &lo), 0);
    uint16_t port = px_listener_port(*l);
    cr_assert_neq(port, 0);
    return port;
}

TC_EXEC_PARAMS(listener, any_host_ipv4_and_ipv6)

ParameterizedTest(px_executor *ex, listener, any_host_ipv4_and_ipv6, .timeout = 20)
{
    tc_runner r;
    px_listener *l;
    uint16_t port = ls_start(*ex, &r, NULL, &l);

    int c4 = tc_tcp_connect(AF_INET, port);
    cr_assert_geq(c4, 0, "connect 127.0.0.1:%u: %s", port, strerror(-c4));
    echo_check(c4, "127.0.0.1");
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%u", local_port(c4));
    cr_assert(peer_seen(want), "px_stream_peer did not give %s", want);

    int expect = 1;
    if (ipv6_loopback_usable()) {
        int c6 = tc_tcp_connect(AF_INET6, port);
        cr_assert_geq(c6, 0, "host NULL must listen on ::1 too: %s", strerror(-c6));
        echo_check(c6, "::1");
        snprintf(want, sizeof want, "[::1]:%u", local_port(c6));
        cr_assert(peer_seen(want), "px_stream_peer did not give %s", want);
        close(c6);
        expect++;
    } else {
        cr_log_warn("IPv6 loopback unavailable: ::1 part skipped");
    }
    close(c4);
    cr_assert(tc_wait_ge(&ls->closes, expect, 10000));
    px_listener_close(l);
    tc_runner_finish(&r);
    cr_assert_eq(atomic_load(&ls->opens), expect);
    cr_assert_eq(atomic_load(&ls->data_before_open), 0, "on_data before on_open");
    cr_assert_eq(atomic_load(&ls->peer_errors), 0);
    cr_assert_eq(atomic_load(&ls->enospc_ok), expect, "px_stream_peer with a tiny buffer: not -ENOSPC");
    tc_assert_no_failures();
}

Test(listener, explicit_host_and_port_in_use, .timeout = 20)
{
    tc_runner r;
    px_listener *l;
    uint16_t port = ls_start(PX_EXEC_POOL, &r, "127.0.0.1", &l);

    int c = tc_tcp_connect(AF_INET, port);
    cr_assert_geq(c, 0);
    echo_check(c, "explicit 127.0.0.1");
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%u", local_port(c));
    cr_assert(peer_seen(want), "px_stream_peer did not give %s", want);

    px_listener *l2 = NULL;
    px_listen_opts lo2 = {.host = "127.0.0.1", .port = port, .handlers = ls_handlers, .user = ls};
    int rc = px_listen(r.loop, &l2, &lo2);
    cr_assert_eq(rc, -EADDRINUSE, "second listener on port %u: %d (%s)", port, rc, px_strerror(rc));
    cr_assert_null(l2, "a failed px_listen must not set *out");

    /* A host that does not parse or resolve fails cleanly. */
    lo2.host = "300.1.2.3";
    lo2.port = 0;
    rc = px_listen(r.loop, &l2, &lo2);
    cr_assert_lt(rc, 0);

    close(c);
    cr_assert(tc_wait_ge(&ls->closes, 1, 10000));
    px_listener_close(l);
    tc_runner_finish(&r);
    cr_assert_eq(atomic_load(&ls->data_before_open), 0);
    tc_assert_no_failures();
}

/* Accepted streams stay up after the listener is closed. */
Test(listener, close_keeps_accepted_streams, .timeout = 20)
{
    tc_runner r;
    px_listener *l;
    uint16_t port = ls_start(PX_EXEC_POOL, &r, "127.0.0.1", &l);
    int c = tc_tcp_connect(AF_INET, port);
    cr_assert_geq(c, 0);
    echo_check(c, "before listener close");
    px_listener_close(l);
    echo_check(c, "after listener close");
    /* Once the close has been carried out, nobody accepts on that port.
     * Bounded retry: the close happens soon, on the loop thread. */
    int refused = 0;
    for (int i = 0; i < 200 && !refused; i++) {
        int c2 = tc_tcp_connect(AF_INET, port);
        if (c2 == -ECONNREFUSED)
            refused = 1;
        else if (c2 >= 0) {
            close(c2);
            tc_sleep_ms(10);
        }
    }
    cr_assert(refused, "the port still accepts connections after px_listener_close");
    close(c);
    cr_assert(tc_wait_ge(&ls->closes, 1, 10000));
    tc_runner_finish(&r);
    tc_assert_no_failures();
}

/* ---- out of descriptors ---- */

enum { EM_LIMIT = 64, EM_CLIENTS = 120, EM_HIGH_FD = 400 };

static atomic_int em_errors_fd;    /* -EMFILE / -ENFILE */
static atomic_int em_errors_other;
static atomic_int em_last_other;

static void em_accept_error(px_listener *l, int err, void *user)
{
    (void)l;
    (void)user;
    if (err == -EMFILE || err == -ENFILE) {
        atomic_fetch_add(&em_errors_fd, 1);
    } else {
        atomic_store(&em_last_other, err);
        atomic_fetch_add(&em_errors_other, 1);
    }
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char em_msg[512];

/* Records why the scenario failed; returns the step number. */
#define EM_FAIL(code, ...)                                                  \
    do {                                                                    \
        snprintf(em_msg, sizeof em_msg, __VA_ARGS__);                       \
        return (code);                                                      \
    } while (0)

static int em_connect(int fd, uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return connect(fd, (struct sockaddr *)&a, sizeof a) == 0 ? 0 : -errno;
}

static int em_echo(int fd)
{
    static const char msg[] = "still there?\n";
    char got[sizeof msg];
    if (tc_write_all(fd, msg, sizeof msg - 1) != 0)
        return -1;
    if (tc_read_exact(fd, got, sizeof msg - 1, 10000, NULL) != 0)
        return -2;
    return memcmp(msg, got, sizeof msg - 1) == 0 ? 0 : -3;
}

static int em_runner_start(tc_runner *r);

/* Whether the server closed this client (EOF or reset), without waiting. */
static bool em_closed(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, 0) <= 0)
        return false;
    char tmp[64];
    ssize_t r = recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
    return r == 0 || (r < 0 && errno == ECONNRESET);
}

/* The scenario; returns 0 or the failed step, with em_msg saying why.  It
 * lowers RLIMIT_NOFILE and leaves the loop running on failure: run it in a
 * process of its own. */
static int em_scenario(void)
{
    /* Client sockets are made first and moved above the limit, so the
     * clients never compete with the server for the low descriptors. */
    int cl[EM_CLIENTS];
    for (int i = 0; i < EM_CLIENTS; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            EM_FAIL(10, "socket: %s", strerror(errno));
        cl[i] = fcntl(fd, F_DUPFD_CLOEXEC, EM_HIGH_FD);
        if (cl[i] < 0)
            EM_FAIL(11, "F_DUPFD: %s", strerror(errno));
        close(fd);
    }
    ls_init();
    px_loop *loop = NULL;
    px_loop_opts o = {.backend = tc_backend(), .threads = 2};
    int rc = px_loop_create(&loop, &o);
    if (rc == -ENOTSUP)
        EM_FAIL(77, "backend not available");
    if (rc != 0)
        EM_FAIL(12, "px_loop_create: %s", px_strerror(rc));
    /* The limit comes down before the listener exists: io_uring reads it
     * when an accept is submitted, and a multishot accept is submitted once. */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = EM_LIMIT;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        EM_FAIL(14, "setrlimit: %s", strerror(errno));

    px_listener *l = NULL;
    static const char busy[] = "busy, try later\r\n";
    px_listen_opts lo = {.host = "127.0.0.1", .handlers = ls_handlers, .user = ls,
                         .on_accept_error = em_accept_error,
                         .busy_msg = busy, .busy_len = sizeof busy - 1};
    rc = px_listen(loop, &l, &lo);
    if (rc != 0)
        EM_FAIL(13, "px_listen: %s", px_strerror(rc));
    uint16_t port = px_listener_port(l);
    tc_runner r;
    memset(&r, 0, sizeof r);
    r.loop = loop;
    if (em_runner_start(&r) != 0)
        EM_FAIL(30, "pthread_create");

    /* Client 0: the existing stream. */
    if (em_connect(cl[0], port) != 0 || em_echo(cl[0]) != 0)
        EM_FAIL(15, "first client not served");

    /* Connect until a client is shed (closed by the server) instead of
     * accepted.  (An EMFILE report alone does not name a client: accept
     * fails with EMFILE before it looks at the queue.) */
    int n = 1, excess = -1;
    for (; n < EM_CLIENTS && excess < 0; n++) {
        int opens = atomic_load(&ls->opens);
        if (em_connect(cl[n], port) != 0)
            EM_FAIL(16, "connect %d: %s", n, strerror(errno));
        uint64_t end = tc_now_ms() + 10000;
        for (;;) {
            if (atomic_load(&ls->opens) != opens)
                break;
            if (em_closed(cl[n])) {
                excess = n;
                break;
            }
            if (tc_now_ms() > end)
                EM_FAIL(17, "client %d: neither accepted nor closed (accepted %d, fd errors %d)", n,
                        atomic_load(&ls->opens), atomic_load(&em_errors_fd));
            tc_sleep_ms(1);
        }
    }
    if (excess < 0)
        EM_FAIL(18, "no client shed after %d clients (fd errors %d, other errors %d, last %d)", n,
                atomic_load(&em_errors_fd), atomic_load(&em_errors_other), atomic_load(&em_last_other));
    if (atomic_load(&em_errors_fd) == 0)
        EM_FAIL(19, "client %d shed but on_accept_error never got -EMFILE/-ENFILE (other errors %d, last %d)",
                excess, atomic_load(&em_errors_other), atomic_load(&em_last_other));

    /* More excess clients over ~0.5 s: the loop must not spin. */
    int more = n;
    double c0 = cpu_s();
    uint64_t w0 = tc_now_ms();
    for (int k = 0; k < 10 && more < EM_CLIENTS; k++, more++) {
        if (em_connect(cl[more], port) != 0)
            EM_FAIL(20, "connect excess %d: %s", more, strerror(errno));
        tc_sleep_ms(50); /* pacing, not waiting for an event */
    }
    double cpu = cpu_s() - c0;
    double wall = (double)(tc_now_ms() - w0) / 1000.0;
    if (cpu > 0.5 * wall)
        EM_FAIL(21, "loop spins out of descriptors: %.2f s CPU in %.2f s", cpu, wall);
    for (int k = n; k < more; k++) {
        /* Each shed client is told why before it is closed. */
        char told[sizeof busy - 1];
        rc = tc_read_exact(cl[k], told, sizeof told, 5000, NULL);
        if (rc != 0 || memcmp(told, busy, sizeof told) != 0)
            EM_FAIL(31, "excess client %d did not get the busy message: %s", k, px_strerror(rc));
        rc = tc_read_eof(cl[k], 5000, true);
        if (rc != 0 && rc != -ECONNRESET)
            EM_FAIL(22, "excess client %d not closed: %s", k, px_strerror(rc));
    }

    /* The existing stream is still served. */
    if (em_echo(cl[0]) != 0)
        EM_FAIL(23, "existing client no longer served while out of descriptors");

    /* Free some descriptors: a new client is accepted and served. */
    int closes = atomic_load(&ls->closes);
    for (int k = 1; k <= 5; k++)
        close(cl[k]);
    uint64_t end = tc_now_ms() + 10000;
    while (atomic_load(&ls->closes) < closes + 5) {
        if (tc_now_ms() > end)
            EM_FAIL(24, "closed clients' streams not closed");
        tc_sleep_ms(1);
    }
    int opens = atomic_load(&ls->opens);
    if (more >= EM_CLIENTS)
        EM_FAIL(25, "no client socket left");
    if (em_connect(cl[more], port) != 0)
        EM_FAIL(26, "connect after freeing: %s", strerror(errno));
    end = tc_now_ms() + 10000;
    while (atomic_load(&ls->opens) == opens) {
        if (tc_now_ms() > end)
            EM_FAIL(27, "new client not accepted after descriptors were freed");
        tc_sleep_ms(1);
    }
    if (em_echo(cl[more]) != 0)
        EM_FAIL(28, "new client not served");
    if (tc_failures != 0)
        EM_FAIL(29, "handler check failed: %s", tc_first_failure());
    px_loop_stop(loop);
    pthread_join(r.thread, NULL);
    px_listener_close(l);
    px_loop_destroy(loop);
    snprintf(em_msg, sizeof em_msg, "ok: %d accepted before EMFILE", excess - 1);
    return 0;
}

static void *em_runner_main(void *arg)
{
    tc_runner *r = arg;
    r->rc = px_loop_run(r->loop);
    return NULL;
}

static int em_runner_start(tc_runner *r)
{
    return pthread_create(&r->thread, NULL, em_runner_main, r);
}

#if defined(__SANITIZE_THREAD__)
#define EM_IN_PROCESS 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define EM_IN_PROCESS 1
#endif
#endif

Test(listener, out_of_descriptors, .timeout = 60)
{
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur <= EM_HIGH_FD + EM_CLIENTS)
        cr_skip_test("descriptor limit %llu too low to stage the test", (unsigned long long)rl.rlim_cur);
#ifdef EM_IN_PROCESS
    /* TSan does not support starting threads in a child forked from a
     * multi-threaded process; Criterion already gives this test a process
     * of its own, so run it here and restore the limit before reporting. */
    int code = em_scenario();
    setrlimit(RLIMIT_NOFILE, &rl);
    if (code == 77)
        cr_skip_test("backend not available");
    cr_assert_eq(code, 0, "step %d: %s", code, em_msg);
#else
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        close(p[0]);
        int code = em_scenario();
        (void)!write(p[1], em_msg, strlen(em_msg));
        _exit(code);
    }
    close(p[1]);
    char msg[512] = "";
    size_t got = 0;
    uint64_t end = tc_now_ms() + 50000;
    for (;;) { /* read until EOF (the child exited) or the deadline */
        uint64_t now = tc_now_ms();
        if (now >= end)
            break;
        struct pollfd pfd = {.fd = p[0], .events = POLLIN};
        if (poll(&pfd, 1, (int)(end - now)) <= 0)
            continue;
        ssize_t r = read(p[0], msg + got, sizeof msg - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got == sizeof msg - 1)
            break;
    }
    msg[got] = '\0';
    close(p[0]);
    /* EOF comes as the child exits; reaping it may take a moment more. */
    int status = 0;
    pid_t w = 0;
    uint64_t reap_end = tc_now_ms() + 5000;
    while ((w = waitpid(pid, &status, WNOHANG)) == 0 && tc_now_ms() < reap_end)
        tc_sleep_ms(5);
    if (w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        cr_assert_fail("child did not finish in time: %s", msg);
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
        cr_skip_test("backend not available");
    cr_assert(WIFEXITED(status), "child killed by signal %d: %s", WIFSIGNALED(status) ? WTERMSIG(status) : 0, msg);
    cr_assert_eq(WEXITSTATUS(status), 0, "child failed (step %d): %s", WEXITSTATUS(status), msg);
#endif
}

/* ---- closing a listener from its own handlers ---- */

/* Regression (review of src/proactor): px_listener_close() from an inline handler freed
 * the listener while ep_wait was still using it (the accept loop, or a later event in
 * the same batch). */

static px_listener *closing_listener;
static atomic_int closing_opens;

static void open_then_close_listener(px_stream *s, void *user)
{
    (void)s;
    (void)user;
    if (atomic_fetch_add(&closing_opens, 1) == 0)
        px_listener_close(closing_listener); /* "accept one, then stop listening" */
}

Test(listener, close_from_inline_on_open, .timeout = 20)
{
    px_loop *loop = tc_loop_new(PX_EXEC_INLINE, NULL);
    tc_runner r;
    tc_runner_start(&r, loop);
    atomic_store(&closing_opens, 0);
    px_listen_opts o = {
        .host = "127.0.0.1",
        .handlers = {.on_open = open_then_close_listener, .on_data = tc_data_noop,
                     .on_close = tc_close_noop},
    };
    cr_assert_eq(px_listen(loop, &closing_listener, &o), 0);
    uint16_t port = px_listener_port(closing_listener);
    tc_loop_sync(loop, 2);
    /* on_open runs inside ep_wait's accept loop, which then reads l->active
     * from the listener px_listener_close() just freed. */
    int c = tc_tcp_connect(AF_INET, port);
    cr_assert_geq(c, 0);
    cr_assert(tc_wait_ge(&closing_opens, 1, 5000));
    tc_loop_sync(loop, 2);
    close(c);
    tc_runner_finish(&r);
}

static void data_then_close_listener(px_stream *s, const char *b, size_t n, void *user)
{
    (void)s;
    (void)b;
    (void)n;
    (void)user;
    px_listener_close(closing_listener); /* e.g. an admin "stop accepting" command */
}

Test(listener, close_from_inline_on_data_same_batch, .timeout = 20)
{
    px_loop *loop = tc_loop_new(PX_EXEC_INLINE, NULL);
    tc_runner r;
    tc_runner_start(&r, loop);
    px_listen_opts o = {
        .host = "127.0.0.1",
        .handlers = {.on_data = tc_data_noop, .on_close = tc_close_noop},
    };
    cr_assert_eq(px_listen(loop, &closing_listener, &o), 0);
    uint16_t port = px_listener_port(closing_listener);
    int sv[2];
    tc_socketpair(sv);
    px_stream *s;
    px_stream_handlers h = {.on_data = data_then_close_listener, .on_close = tc_close_noop};
    cr_assert_eq(px_stream_open(loop, &s, sv[0], &h, NULL, NULL), 0);
    tc_loop_sync(loop, 3); /* stream armed (EAGAIN seen), listener registered */

    tc_block b;
    tc_block_loop(loop, &b);
    /* Both become ready while the loop is held: one epoll batch, stream first. */
    cr_assert_eq(tc_write_all(sv[1], "x", 1), 0);
    int c = tc_tcp_connect(AF_INET, port);
    cr_assert_geq(c, 0);
    tc_gate_open(&b.gate);
    tc_loop_sync(loop, 3);

    close(c);
    close(sv[1]);
    tc_runner_finish(&r);
    tc_gate_destroy(&b.gate);
    tc_assert_no_failures();
}
