/*
 * The Redis bus (bus_redis.h): its table, how it starts (the hooks of its connections
 * filled in) and how it stops (this server's users leave the cluster at once).
 */
#include "bus_redis.h"

#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

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
    redis_connect_all();
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
    R.backoff_ms = REDIS_RETRY_MIN_MS;
    R.on_up = redis_presence_sync;
    R.on_message = redis_on_pmessage;
    R.on_direct = redis_on_direct;
    redis_wire_leave_template(R.tag, R.leave_tpl);
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
    redis_went_down("stopping");
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
