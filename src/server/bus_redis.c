/*
 * The Redis bus (bus_redis.h): its table, start and stop, and its two connections to
 * Redis (one publishes and asks, one subscribes), reconnected with a growing pause
 * whenever either breaks.
 */
#include "bus_redis.h"

#include "log.h"
#include "redis_px.h"

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 5000

struct redis_bus R;

static void redis_stop(void);

static const char *redis_greeting(void)
{
    return atomic_load(&R.up) ? NULL : REDIS_DOWN_NOTICE;
}

static const chat_bus chat_bus_redis = {
    .name = "redis",
    .publish = redis_publish,
    .claim = redis_claim,
    .release = redis_release,
    .who = redis_who,
    .rooms = redis_rooms,
    .msg = redis_msg,
    .move = redis_move,
    .leave = redis_leave,
    .greeting = redis_greeting,
    .stop = redis_stop,
};

int chat_bus_redis_probe(const srv_config *cfg, char *why, size_t len)
{
    char host[256];
    int port, db;
    if (!srv_parse_redis_url(cfg->cluster, host, sizeof(host), &port, &db)) {
        snprintf(why, len, "invalid address");
        return -1;
    }
    redisContext *c = redisConnectWithTimeout(host, port, (struct timeval){.tv_sec = 2});
    if (!c || c->err) {
        snprintf(why, len, "%s", c ? c->errstr : "out of memory");
        redisFree(c);
        return -1;
    }
    redisSetTimeout(c, (struct timeval){.tv_sec = 2});
    redisReply *r = redisCommand(c, "PING");
    int rc = r && r->type == REDIS_REPLY_STATUS ? 0 : -1;
    if (rc)
        snprintf(why, len, "%s", r && r->type == REDIS_REPLY_ERROR ? r->str
                                 : c->err                          ? c->errstr
                                                                   : "no answer to PING");
    freeReplyObject(r);
    redisFree(c);
    return rc;
}

void redis_became_up(void)
{
    if (!R.pub_ok || !R.sub_ok || atomic_load(&R.up))
        return;
    atomic_store(&R.up, true);
    R.backoff_ms = RETRY_MIN_MS;
    srv_log(SRV_LOG_INFO, "cluster: connected to Redis at %s:%d", R.host, R.port);
    redis_presence_sync(); /* clients hear the cluster is back once it has their names again */
}

static void connect_all(void);

static void retry_now(px_timer *t, void *user)
{
    (void)user;
    px_timer_cancel(t);
    R.retry = NULL;
    connect_all();
}

/* One connection is gone (or never came): drop the other, refuse lines, tell the
 * local clients once, and try again after a growing pause. */
static void went_down(const char *why)
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
        went_down(ac->errstr[0] ? ac->errstr : "connect failed");
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
        went_down(ac->errstr[0] ? ac->errstr : "connection closed");
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

static void connect_all(void)
{
    if (R.stopping)
        return;
    R.pub = open_one();
    R.sub = open_one();
    if (!R.pub || !R.sub) {
        went_down("cannot connect");
        return;
    }
    char pattern[64];
    snprintf(pattern, sizeof(pattern), "%s*", R.prefix);
    redisAsyncCommand(R.sub, redis_on_direct, NULL, "SUBSCRIBE %sto:%s", R.base, R.tag);
    redisAsyncCommand(R.sub, redis_on_pmessage, NULL, "PSUBSCRIBE %s", pattern);
}

static void start_on_loop(void *arg)
{
    (void)arg;
    if (R.stopping)
        return;
    unsigned every = R.ttl_s * 1000 / 3;
    if (px_timer_start(R.loop, &R.heartbeat, every, every, redis_heartbeat, NULL) != 0) {
        R.heartbeat = NULL;
        srv_log(SRV_LOG_ERROR, "cluster: out of memory: no heartbeat, so this server's users "
                               "leave the cluster's lists after %u s", R.ttl_s);
    }
    connect_all();
}

const chat_bus *chat_bus_redis_start(const srv_config *cfg, px_loop *loop)
{
    R.loop = loop;
    if (!srv_parse_redis_url(cfg->cluster, R.host, sizeof(R.host), &R.port, &R.db))
        return NULL;
    snprintf(R.prefix, sizeof(R.prefix), "st_proactor:%d:room:", R.db);
    snprintf(R.base, sizeof(R.base), "st_proactor:%d:", R.db);
    R.ttl_s = cfg->cluster_ttl ? cfg->cluster_ttl : SRV_DEFAULT_CLUSTER_TTL_S;
    snprintf(R.ttl, sizeof(R.ttl), "%u", R.ttl_s);
    /* Resolved once, here: hiredis would resolve the name on the loop thread, blocking
     * every client for as long as DNS takes, at every reconnection. */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(R.host, NULL, &hints, &res) == 0) {
        char ip[INET6_ADDRSTRLEN];
        const void *a = res->ai_family == AF_INET
                            ? (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr
                            : (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr;
        if (inet_ntop(res->ai_family, a, ip, sizeof(ip)))
            snprintf(R.host, sizeof(R.host), "%s", ip);
        freeaddrinfo(res);
    }
    unsigned long long nonce = 0;
    if (getrandom(&nonce, sizeof(nonce), 0) != (ssize_t)sizeof(nonce))
        nonce = (unsigned long long)getpid() ^ px_now_ms();
    char host[64] = "node";
    gethostname(host, sizeof(host) - 1);
    snprintf(R.tag, sizeof(R.tag), "%s/%016llx", cfg->node_name ? cfg->node_name : host, nonce);
    R.backoff_ms = RETRY_MIN_MS;
    redis_wire_leave_template(R.leave_tpl);
    return px_loop_post(loop, start_on_loop, NULL) == 0 ? &chat_bus_redis : NULL;
}

static void redis_stop(void)
{
    R.stopping = true;
    if (R.retry)
        px_timer_cancel(R.retry);
    if (R.heartbeat)
        px_timer_cancel(R.heartbeat);
    R.retry = R.heartbeat = NULL;
    bool was_up = atomic_load(&R.up);
    went_down("stopping");
    if (!was_up)
        return; /* the TTL takes this server's users out */
    /* The last words, on a connection of their own (the loop is not running any
     * more): the users go from the cluster's names and lists at once. */
    redisContext *c = redisConnectWithTimeout(R.host, R.port, (struct timeval){.tv_sec = 1});
    if (c && !c->err) {
        redisSetTimeout(c, (struct timeval){.tv_sec = 1});
        redisReply *r = redisCommand(c, "EVAL %s 0 %s %s %s", REDIS_LUA_LEAVE, R.base, R.tag,
                                     R.leave_tpl);
        freeReplyObject(r);
    }
    redisFree(c);
}
