/*
 * Implementation of the unit-test helpers declared in helpers.h.  Nothing
 * here knows about a particular test; nothing here waits without a deadline.
 */
#include "helpers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

px_backend tc_backend(void)
{
    const char *name = getenv("PX_TEST_BACKEND");
    px_backend b = PX_BACKEND_AUTO;
    if (name == NULL || name[0] == '\0')
        return PX_BACKEND_AUTO;
    int rc = px_backend_parse(name, &b);
    cr_assert_eq(rc, 0, "PX_TEST_BACKEND=%s is not a backend name", name);
    return b;
}

px_loop *tc_loop_new(px_executor ex, const px_loop_opts *base)
{
    px_loop_opts o = {0};
    if (base != NULL)
        o = *base;
    o.backend = tc_backend();
    o.executor = ex;
    px_loop *loop = NULL;
    int rc = px_loop_create(&loop, &o);
    if (rc == -ENOTSUP)
        cr_skip_test("backend %s not available", px_backend_name(o.backend));
    cr_assert_eq(rc, 0, "px_loop_create(%s, %s): %s", px_backend_name(o.backend),
                 px_executor_name(ex), px_strerror(rc));
    cr_assert_not_null(loop);
    cr_assert_eq(px_loop_executor(loop), ex);
    return loop;
}

static void *runner_main(void *arg)
{
    tc_runner *r = arg;
    r->loop_tid = pthread_self();
    r->loop_ktid = gettid();
    atomic_store(&r->running, 1);
    r->rc = px_loop_run(r->loop);
    return NULL;
}

void tc_runner_start(tc_runner *r, px_loop *loop)
{
    memset(r, 0, sizeof *r);
    r->loop = loop;
    atomic_init(&r->running, 0);
    int rc = pthread_create(&r->thread, NULL, runner_main, r);
    cr_assert_eq(rc, 0, "pthread_create: %s", strerror(rc));
    cr_assert(tc_wait_ge(&r->running, 1, 5000), "loop thread did not start");
}

px_loop *tc_start_pair(px_executor ex, tc_runner *r, int sv[2])
{
    px_loop *loop = tc_loop_new(ex, NULL);
    tc_runner_start(r, loop);
    tc_socketpair(sv);
    return loop;
}

px_stream *tc_start_stream(px_executor ex, tc_runner *r, int sv[2],
                           const px_stream_handlers *h, void *user, const px_stream_opts *o)
{
    px_loop *loop = tc_start_pair(ex, r, sv);
    px_stream *s = NULL;
    int rc = px_stream_open(loop, &s, sv[0], h, user, o);
    cr_assert_eq(rc, 0, "px_stream_open: %s", px_strerror(rc));
    return s;
}

px_stream *tc_start_sink(px_executor ex, tc_runner *r, int sv[2], tc_sink *k,
                         void (*on_data)(px_stream *, const char *, size_t, void *))
{
    tc_sink_init(k);
    px_stream_handlers h = tc_sink_handlers;
    if (on_data != NULL)
        h.on_data = on_data;
    return tc_start_stream(ex, r, sv, &h, k, NULL);
}

void tc_runner_stop(tc_runner *r)
{
    px_loop_stop(r->loop);
    pthread_join(r->thread, NULL);
    cr_assert_eq(r->rc, 0, "px_loop_run returned %d", r->rc);
}

void tc_runner_finish(tc_runner *r)
{
    tc_runner_stop(r);
    px_loop_destroy(r->loop);
    r->loop = NULL;
}

/* ---- failures from other threads ---- */

atomic_int tc_failures;
static pthread_mutex_t fail_mu = PTHREAD_MUTEX_INITIALIZER;
static char fail_first[512];

void tc_fail_at(const char *file, int line, const char *what)
{
    if (atomic_fetch_add(&tc_failures, 1) == 0) {
        pthread_mutex_lock(&fail_mu);
        snprintf(fail_first, sizeof fail_first, "%s:%d: %s", file, line, what);
        pthread_mutex_unlock(&fail_mu);
    }
}

const char *tc_first_failure(void)
{
    static char copy[512];
    pthread_mutex_lock(&fail_mu);
    memcpy(copy, fail_first, sizeof copy);
    pthread_mutex_unlock(&fail_mu);
    return copy;
}

/* ---- time ---- */

uint64_t tc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void tc_sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Returns from the enclosing function whether cond became true before timeout_ms
 * passed.  Polling every millisecond keeps the waits simple and race-free; the
 * deadline bounds them. */
#define RETURN_WHEN(cond, timeout_ms)                                   \
    do {                                                                \
        uint64_t end_ = tc_now_ms() + (timeout_ms);                     \
        for (;;) {                                                      \
            if (cond)                                                   \
                return true;                                            \
            if (tc_now_ms() >= end_)                                    \
                return (cond);                                          \
            tc_sleep_ms(1);                                             \
        }                                                               \
    } while (0)

bool tc_wait_ge(atomic_int *v, int target, unsigned timeout_ms)
{
    RETURN_WHEN(atomic_load(v) >= target, timeout_ms);
}

bool tc_wait_ge_size(atomic_size_t *v, size_t target, unsigned timeout_ms)
{
    RETURN_WHEN(atomic_load(v) >= target, timeout_ms);
}

bool tc_wait_flag(atomic_bool *v, unsigned timeout_ms)
{
    RETURN_WHEN(atomic_load(v), timeout_ms);
}

/* ---- gate ---- */

void tc_gate_init(tc_gate *g)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cv, &a);
    pthread_condattr_destroy(&a);
    g->open = false;
}

void tc_gate_open(tc_gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

bool tc_gate_wait(tc_gate *g, unsigned timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&g->mu);
    while (!g->open) {
        if (pthread_cond_timedwait(&g->cv, &g->mu, &ts) == ETIMEDOUT)
            break;
    }
    bool open = g->open;
    pthread_mutex_unlock(&g->mu);
    return open;
}

void tc_gate_destroy(tc_gate *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

/* ---- holding and syncing with the loop ---- */

typedef struct tc_sync {
    px_loop *loop;
    int left;
    atomic_bool done;
} tc_sync;

static void sync_step(void *arg)
{
    tc_sync *y = arg;
    if (--y->left > 0)
        px_loop_post(y->loop, sync_step, y); /* on the loop: next pass */
    else
        atomic_store(&y->done, true);
}

void tc_loop_sync(px_loop *loop, int passes)
{
    tc_sync y = {.loop = loop, .left = passes};
    atomic_init(&y.done, false);
    cr_assert_eq(px_loop_post(loop, sync_step, &y), 0);
    cr_assert(tc_wait_flag(&y.done, 5000), "loop did not go round");
}

static void block_fn(void *arg)
{
    tc_block *b = arg;
    atomic_store(&b->entered, true);
    TC_CHECK(tc_gate_wait(&b->gate, 10000));
}

void tc_block_loop(px_loop *loop, tc_block *b)
{
    tc_gate_init(&b->gate);
    atomic_init(&b->entered, false);
    cr_assert_eq(px_loop_post(loop, block_fn, b), 0);
    cr_assert(tc_wait_flag(&b->entered, 5000), "loop did not run the blocking post");
}

/* ---- sockets ---- */

void tc_socketpair(int sv[2])
{
    int rc = socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    cr_assert_eq(rc, 0, "socketpair: %s", strerror(errno));
}

void tc_small_sndbuf(int fd, int bytes)
{
    int rc = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
    cr_assert_eq(rc, 0, "SO_SNDBUF: %s", strerror(errno));
}

int tc_tcp_connect(int family, uint16_t port)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc;
    if (family == AF_INET6) {
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
        a.sin6_addr = in6addr_loopback;
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    }
    if (rc != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int tc_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == ENOTSOCK)
            w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int poll_in(int fd, uint64_t end)
{
    for (;;) {
        uint64_t now = tc_now_ms();
        if (now >= end)
            return -ETIMEDOUT;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int rc = poll(&pfd, 1, (int)(end - now));
        if (rc > 0)
            return 0;
        if (rc < 0 && errno != EINTR)
            return -errno;
    }
}

int tc_read_exact(int fd, void *buf, size_t n, unsigned timeout_ms, size_t *got)
{
    uint64_t end = tc_now_ms() + timeout_ms;
    char *p = buf;
    size_t done = 0;
    int ret = 0;
    while (done < n) {
        ret = poll_in(fd, end);
        if (ret != 0)
            break;
        ssize_t r = read(fd, p + done, n - done);
        if (r == 0) {
            ret = -ENODATA;
            break;
        }
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            ret = -errno;
            break;
        }
        done += (size_t)r;
    }
    if (got != NULL)
        *got = done;
    return done == n ? 0 : ret;
}

int tc_read_eof(int fd, unsigned timeout_ms, bool discard)
{
    uint64_t end = tc_now_ms() + timeout_ms;
    char tmp[4096];
    for (;;) {
        int rc = poll_in(fd, end);
        if (rc != 0)
            return rc;
        ssize_t r = read(fd, tmp, sizeof tmp);
        if (r == 0)
            return 0;
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -errno;
        }
        if (!discard)
            return -EPROTO;
    }
}

/* ---- patterns ---- */

static unsigned char pattern_at(unsigned seed, size_t i)
{
    uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ull + seed * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    return (unsigned char)(x ^ (x >> 8));
}

void tc_fill(void *p, size_t n, unsigned seed, size_t offset)
{
    unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        c[i] = pattern_at(seed, offset + i);
}

size_t tc_check_fill(const void *p, size_t n, unsigned seed, size_t offset)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != pattern_at(seed, offset + i))
            return i;
    return n;
}

/* ---- sinks ---- */

void tc_sink_init(tc_sink *k)
{
    atomic_init(&k->opens, 0);
    atomic_init(&k->data_calls, 0);
    atomic_init(&k->bytes, 0);
    atomic_init(&k->closes, 0);
    atomic_init(&k->cause, 1);
    atomic_init(&k->after_close, 0);
}

static void sink_open(px_stream *s, void *user)
{
    (void)s;
    tc_sink *k = user;
    if (atomic_load(&k->closes) != 0)
        atomic_fetch_add(&k->after_close, 1);
    atomic_fetch_add(&k->opens, 1);
}

static void sink_data(px_stream *s, const char *bytes, size_t len, void *user)
{
    (void)s;
    (void)bytes;
    tc_sink *k = user;
    TC_CHECK(len > 0);
    if (atomic_load(&k->closes) != 0)
        atomic_fetch_add(&k->after_close, 1);
    atomic_fetch_add(&k->bytes, len);
    atomic_fetch_add(&k->data_calls, 1);
}

static void echo_data(px_stream *s, const char *bytes, size_t len, void *user)
{
    px_buf *b = NULL;
    TC_CHECK(px_buf_new(&b, bytes, len) == 0);
    if (b != NULL) {
        int rc = px_stream_send(s, b);
        TC_CHECK(rc == 0 || rc == -EPIPE);
        px_buf_release(b);
    }
    sink_data(s, bytes, len, user);
}

void tc_sink_close(px_stream *s, int cause, void *user)
{
    (void)s;
    tc_sink *k = user;
    atomic_store(&k->cause, cause);
    atomic_fetch_add(&k->closes, 1);
}

void tc_data_noop(px_stream *s, const char *bytes, size_t len, void *user)
{
    (void)s;
    (void)bytes;
    (void)len;
    (void)user;
}

void tc_close_noop(px_stream *s, int cause, void *user)
{
    (void)s;
    (void)cause;
    (void)user;
}

const px_stream_handlers tc_sink_handlers = {
    .on_open = sink_open, .on_data = sink_data, .on_close = tc_sink_close};
const px_stream_handlers tc_echo_handlers = {
    .on_open = sink_open, .on_data = echo_data, .on_close = tc_sink_close};

typedef struct tc_on_loop {
    void (*fn)(void *);
    void *arg;
    atomic_bool done;
} tc_on_loop;

static void tc_run_posted(void *p)
{
    tc_on_loop *o = p;
    o->fn(o->arg);
    atomic_store(&o->done, true);
}

void tc_run_on_loop(px_loop *loop, void (*fn)(void *), void *arg)
{
    tc_on_loop o = {.fn = fn, .arg = arg};
    cr_assert_eq(px_loop_post(loop, tc_run_posted, &o), 0);
    cr_assert(tc_wait_flag(&o.done, 5000), "the loop did not run the posted function");
}
