/*
 * hiredis driven by libproactor (src/server/redis_px.c), against a real redis-server
 * started on a free loopback port for each test (and stopped by its PID): publish and
 * subscribe in order, Redis unreachable, Redis going away.
 */
#include "helpers.h"

#include "server/redis_px.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(redis_px, .timeout = 60);

/* A TCP port free on 127.0.0.1 right now. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
              getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

typedef struct redis_proc {
    pid_t pid;
    int port;
} redis_proc;

static void redis_start(redis_proc *r)
{
    r->port = free_port();
    char port[16];
    snprintf(port, sizeof(port), "%d", r->port);
    pid_t parent = getpid();
    r->pid = fork();
    cr_assert(r->pid >= 0);
    if (r->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save",
               "", "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    /* Ready when it answers PING. */
    for (uint64_t end = tc_now_ms() + 10000; tc_now_ms() < end; tc_sleep_ms(20)) {
        redisContext *c = redisConnect("127.0.0.1", r->port);
        if (c && !c->err) {
            redisReply *rep = redisCommand(c, "PING");
            bool ok = rep && rep->type == REDIS_REPLY_STATUS;
            freeReplyObject(rep);
            redisFree(c);
            if (ok)
                return;
        } else if (c) {
            redisFree(c);
        }
    }
    kill(r->pid, SIGKILL);
    cr_assert_fail("redis-server did not answer on port %d", r->port);
}

static void redis_stop(redis_proc *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGTERM);
        waitpid(r->pid, NULL, 0);
        r->pid = 0;
    }
}

/* ---- the test's state ---- */

#define MESSAGES 1000

typedef struct rtest {
    px_loop *loop;
    int port;
    redisAsyncContext *sub, *pub;
    atomic_int subscribed, received, disorder, connect_failed, disconnected, replies;
    atomic_int attach_rc;
} rtest;

static rtest T;

static redisAsyncContext *connect_attached(void)
{
    redisAsyncContext *ac = redisAsyncConnect("127.0.0.1", T.port);
    if (!ac || ac->err) {
        atomic_store(&T.attach_rc, -EIO);
        return NULL;
    }
    int rc = redis_px_attach(ac, T.loop);
    atomic_store(&T.attach_rc, rc);
    if (rc) {
        redisAsyncFree(ac);
        return NULL;
    }
    return ac;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    (void)ac;
    if (status != REDIS_OK)
        atomic_fetch_add(&T.connect_failed, 1);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)ac;
    (void)status;
    atomic_fetch_add(&T.disconnected, 1);
}

static void on_message(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    (void)priv;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3)
        return;
    if (strcmp(r->element[0]->str, "subscribe") == 0) {
        atomic_store(&T.subscribed, 1);
    } else if (strcmp(r->element[0]->str, "message") == 0) {
        int k = atoi(r->element[2]->str);
        if (k != atomic_load(&T.received))
            atomic_fetch_add(&T.disorder, 1);
        atomic_fetch_add(&T.received, 1);
    }
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    (void)priv;
    if (reply)
        atomic_fetch_add(&T.replies, 1);
}

static void start_sub(void *arg)
{
    (void)arg;
    T.sub = connect_attached();
    if (T.sub) {
        redisAsyncSetConnectCallback(T.sub, on_connect);
        redisAsyncSetDisconnectCallback(T.sub, on_disconnect);
        redisAsyncCommand(T.sub, on_message, NULL, "SUBSCRIBE room:lobby");
    }
}

static void publish_all(void *arg)
{
    (void)arg;
    T.pub = connect_attached();
    if (!T.pub)
        return;
    redisAsyncSetDisconnectCallback(T.pub, on_disconnect);
    for (int k = 0; k < MESSAGES; k++)
        redisAsyncCommand(T.pub, on_reply, NULL, "PUBLISH room:lobby %d", k);
}

static void disconnect_all(void *arg)
{
    (void)arg;
    if (T.sub)
        redisAsyncDisconnect(T.sub);
    if (T.pub)
        redisAsyncDisconnect(T.pub);
    T.sub = T.pub = NULL;
}

static void setup(px_executor ex, redis_proc *r)
{
    memset(&T, 0, sizeof(T));
    if (r) {
        redis_start(r);
        T.port = r->port;
    } else {
        T.port = free_port(); /* nobody listens there */
    }
    T.loop = tc_loop_new(ex, NULL);
}

static void pubsub(px_executor ex)
{
    redis_proc r;
    setup(ex, &r);
    tc_runner run;
    tc_runner_start(&run, T.loop);
    tc_run_on_loop(T.loop, start_sub, NULL);
    cr_assert_eq(atomic_load(&T.attach_rc), 0, "attach: %d", atomic_load(&T.attach_rc));
    cr_assert(tc_wait_ge(&T.subscribed, 1, 5000), "never subscribed");
    tc_run_on_loop(T.loop, publish_all, NULL);
    cr_assert(tc_wait_ge(&T.received, MESSAGES, 10000), "%d of %d messages received",
              atomic_load(&T.received), MESSAGES);
    cr_assert(tc_wait_ge(&T.replies, MESSAGES, 5000));
    cr_expect_eq(atomic_load(&T.disorder), 0, "%d messages out of order", atomic_load(&T.disorder));
    tc_run_on_loop(T.loop, disconnect_all, NULL);
    cr_expect(tc_wait_ge(&T.disconnected, 2, 5000), "%d of 2 disconnects reported",
              atomic_load(&T.disconnected));
    tc_runner_finish(&run);
    redis_stop(&r);
}

Test(redis_px, publish_subscribe_in_order_inline) { pubsub(PX_EXEC_INLINE); }
Test(redis_px, publish_subscribe_in_order_pool) { pubsub(PX_EXEC_POOL); }

Test(redis_px, unreachable_redis_reports_a_failed_connect)
{
    setup(PX_EXEC_INLINE, NULL);
    tc_runner run;
    tc_runner_start(&run, T.loop);
    tc_run_on_loop(T.loop, start_sub, NULL);
    cr_assert(tc_wait_ge(&T.connect_failed, 1, 5000), "no failed connect reported");
    tc_runner_finish(&run);
}

Test(redis_px, redis_going_away_is_reported)
{
    redis_proc r;
    setup(PX_EXEC_INLINE, &r);
    tc_runner run;
    tc_runner_start(&run, T.loop);
    tc_run_on_loop(T.loop, start_sub, NULL);
    cr_assert(tc_wait_ge(&T.subscribed, 1, 5000), "never subscribed");
    redis_stop(&r);
    cr_assert(tc_wait_ge(&T.disconnected, 1, 5000), "the lost connection was not reported");
    tc_runner_finish(&run);
}
