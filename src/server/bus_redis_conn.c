/*
 * The Redis bus's connections (bus_redis.h): its state, its two connections to Redis
 * (one publishes and asks, one subscribes), reconnected with a growing pause whenever
 * either breaks, and the commands sent on them.  What arrives on them, and what
 * happens once they are up, are the hooks' business (bus_redis.c fills them in).
 */
#include "bus_redis.h"

#include "log.h"
#include "redis_px.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_MAX_MS 5000

struct redis_bus R;

static void retry_now(px_timer *t, void *user);

void redis_became_up(void)
{
    if (!R.pub_ok || !R.sub_ok || atomic_load(&R.up))
        return;
    atomic_store(&R.up, true);
    R.backoff_ms = REDIS_RETRY_MIN_MS;
    srv_log(SRV_LOG_INFO, "cluster: connected to Redis at %s:%d", R.host, R.port);
    R.on_up(); /* clients hear the cluster is back once it has their names again */
}


static void retry_now(px_timer *t, void *user)
{
    (void)user;
    px_timer_cancel(t);
    R.retry = NULL;
    redis_connect_all();
}

/* One connection is gone (or never came): drop the other, refuse lines, tell the
 * local clients once, and try again after a growing pause. */
void redis_went_down(const char *why)
{
    bool was_up = atomic_exchange(&R.up, false);
    redisAsyncContext *pub = R.pub, *sub = R.sub;
    R.pub = R.sub = NULL;
    R.pub_ok = R.sub_ok = false;
    /* Freed at once, not disconnected gracefully: a connection still flushing could
     * put a sender's earlier line into Redis after a later one sent on the next
     * connection.  Lines without an answer are reported to their senders. */
    if (pub)
        redisAsyncFree(pub);
    if (sub)
        redisAsyncFree(sub);
    if (R.stopping)
        return;
    if (was_up || !R.told_down)
        srv_log(SRV_LOG_ERROR, "cluster: Redis at %s:%d unreachable (%s); retrying", R.host,
                R.port, why);
    if (!R.told_down) {
        R.told_down = true;
        chat_notice_all(REDIS_DOWN_NOTICE);
    }
    if (!R.retry && px_timer_start(R.loop, &R.retry, R.backoff_ms, 0, retry_now, NULL) != 0)
        R.retry = NULL;
    R.backoff_ms = R.backoff_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : R.backoff_ms * 2;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback. */
        if (ac == R.pub)
            R.pub = NULL;
        if (ac == R.sub)
            R.sub = NULL;
        redis_went_down(ac->errstr[0] ? ac->errstr : "connect failed");
        return;
    }
    if (ac == R.pub) {
        R.pub_ok = true;
        redis_became_up();
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    /* hiredis frees the context after this callback. */
    bool ours = ac == R.pub || ac == R.sub;
    if (ac == R.pub)
        R.pub = NULL;
    if (ac == R.sub)
        R.sub = NULL;
    if (ours)
        redis_went_down(ac->errstr[0] ? ac->errstr : "connection closed");
}

static redisAsyncContext *open_one(void)
{
    redisAsyncContext *ac = redisAsyncConnect(R.host, R.port);
    if (!ac)
        return NULL;
    if (ac->err || redis_px_attach(ac, R.loop) != 0) {
        redisAsyncFree(ac);
        return NULL;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisEnableKeepAlive(&ac->c); /* a Redis that vanished without a reset is noticed */
    return ac;
}

void redis_connect_all(void)
{
    if (R.stopping)
        return;
    R.pub = open_one();
    R.sub = open_one();
    if (!R.pub || !R.sub) {
        redis_went_down("cannot connect");
        return;
    }
    char pattern[64];
    snprintf(pattern, sizeof(pattern), "%s*", R.prefix);
    redisAsyncCommand(R.sub, R.on_direct, NULL, "SUBSCRIBE %sto:%s", R.base, R.tag);
    redisAsyncCommand(R.sub, R.on_message, NULL, "PSUBSCRIBE %s", pattern);
}

/* ------------------------------------------------------------------------ */
/* Commands                                                                  */

void redis_args_add(redis_args *a, const char *p, size_t n)
{
    if (a->failed)
        return;
    if (a->argc == a->cap) {
        int cap = a->cap ? a->cap * 2 : 16;
        char **v = realloc(a->argv, (size_t)cap * sizeof(*v));
        size_t *l = v ? realloc(a->len, (size_t)cap * sizeof(*l)) : NULL;
        if (v)
            a->argv = v;
        if (!l) {
            a->failed = true;
            return;
        }
        a->len = l;
        a->cap = cap;
    }
    char *copy = malloc(n + 1);
    if (!copy) {
        a->failed = true;
        return;
    }
    memcpy(copy, p, n);
    copy[n] = '\0';
    a->argv[a->argc] = copy;
    a->len[a->argc++] = n;
}

void redis_args_str(redis_args *a, const char *p)
{
    redis_args_add(a, p, strlen(p));
}

void redis_args_name(redis_args *a, const char *name)
{
    char key[CHAT_NAME_KEY_MAX + 1];
    chat_name_key(name, strlen(name), key);
    redis_args_str(a, key);
}

void redis_args_free(redis_args *a)
{
    for (int i = 0; i < a->argc; i++)
        free(a->argv[i]);
    free(a->argv);
    free(a->len);
    *a = (redis_args){0};
}

void redis_args_script(redis_args *a, const char *script)
{
    redis_args_str(a, "EVAL");
    redis_args_str(a, script);
    redis_args_str(a, "0");
    redis_args_str(a, R.base);
}

void redis_args_send(redis_args *a, redisCallbackFn *fn, void *priv)
{
    if (a->failed || !R.pub || !atomic_load(&R.up) ||
        redisAsyncCommandArgv(R.pub, fn, priv, a->argc, (const char **)a->argv, a->len) !=
            REDIS_OK) {
        if (fn)
            fn(NULL, NULL, priv);
    }
    redis_args_free(a);
}

static void post_run(void *arg)
{
    redis_args *a = arg;
    redis_args_send(a, NULL, NULL);
    free(a);
}

void redis_args_post(redis_args *a)
{
    redis_args *copy = malloc(sizeof(*copy));
    if (copy && !a->failed) {
        *copy = *a;
        if (px_loop_post(R.loop, post_run, copy) == 0)
            return;
    }
    free(copy);
    redis_args_free(a);
}

