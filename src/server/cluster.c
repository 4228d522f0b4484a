/* Clustering through Redis pub/sub (cluster.h). */
#include "cluster.h"

#include "log.h"
#include "redis_px.h"

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define CLUSTER_QUEUE_MAX 10000 /* lines handed over and not yet answered by Redis */
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 5000

static struct {
    px_loop *loop;
    char host[256];
    int port, db;
    char prefix[48]; /* "st_proactor:DB:room:" */
    char tag[80];    /* this node: its name and a random suffix */
    /* Loop thread only. */
    redisAsyncContext *pub, *sub;
    bool pub_ok, sub_ok, stopping, told_down;
    px_timer *retry;
    unsigned backoff_ms;
    /* Any thread. */
    atomic_bool up;
    atomic_uint queued;
    bool enabled;
} C;


int cluster_probe(const srv_config *cfg, char *why, size_t len)
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

bool cluster_enabled(void)
{
    return C.enabled;
}

bool cluster_up(void)
{
    return atomic_load(&C.up);
}

/* ------------------------------------------------------------------------ */
/* Publishing (any thread -> loop thread -> Redis)                           */

typedef struct pub_item {
    px_stream *from; /* retained: told if the line could not be sent */
    uint64_t sender; /* as in the payload's header, for a local delivery */
    bool history;
    size_t chan_len, len, head_len;
    char *payload;   /* "TAG ID H\n" + the line (H: 1 to keep it in the room's history) */
    char chan[];
} pub_item;

static void tell(px_stream *s, const char *text)
{
    if (!s)
        return;
    px_buf *b = chat_fmt("%s", text);
    if (b) {
        px_stream_send(s, b);
        px_buf_release(b);
    }
}

static void item_free(pub_item *it)
{
    if (it->from)
        px_stream_release(it->from);
    free(it->payload);
    free(it);
}

static void on_published(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    pub_item *it = priv;
    redisReply *r = reply;
    atomic_fetch_sub(&C.queued, 1);
    if (!r) /* the connection broke before Redis answered */
        tell(it->from, "*** Error: the cluster connection broke; your last message may not "
                       "have been sent.");
    else if (r->type == REDIS_REPLY_ERROR)
        tell(it->from, "*** Error: Redis refused your message; it was not sent.");
    item_free(it);
}

static void do_publish(void *arg)
{
    pub_item *it = arg;
    if (C.pub && atomic_load(&C.up) &&
        redisAsyncCommand(C.pub, on_published, it, "PUBLISH %b %b", it->chan, it->chan_len,
                          it->payload, it->len) == REDIS_OK) {
        free(it->payload); /* hiredis has its own copy of the command */
        it->payload = NULL;
        return;
    }
    /* Redis is unreachable (now, or since the line was handed over): this server's
     * members still get it, marked, in the order the sender said it. */
    atomic_fetch_sub(&C.queued, 1);
    const char *line = it->payload + it->head_len;
    size_t n = it->len - it->head_len; /* ends with CRLF */
    px_buf *b = chat_fmt("[local] %.*s", (int)(n >= 2 ? n - 2 : n), line);
    if (b) {
        chat_room_deliver(it->chan + strlen(C.prefix), it->sender, b, it->history);
        px_buf_release(b);
    }
    item_free(it);
}

int cluster_publish(const char *room, uint64_t sender, px_stream *from, px_buf *line,
                    bool history)
{
    if (atomic_fetch_add(&C.queued, 1) >= CLUSTER_QUEUE_MAX) {
        atomic_fetch_sub(&C.queued, 1);
        return -EAGAIN;
    }
    size_t chan_len = strlen(C.prefix) + strlen(room);
    pub_item *it = malloc(sizeof(*it) + chan_len + 1);
    char head[128];
    int hl = snprintf(head, sizeof(head), "%s %llu %d\n", C.tag, (unsigned long long)sender,
                      history ? 1 : 0);
    size_t n = px_buf_len(line);
    char *payload = it ? malloc((size_t)hl + n) : NULL;
    if (!payload) {
        free(it);
        atomic_fetch_sub(&C.queued, 1);
        return -ENOMEM;
    }
    memcpy(payload, head, (size_t)hl);
    memcpy(payload + hl, px_buf_data(line), n);
    *it = (pub_item){.from = from ? px_stream_retain(from) : NULL, .sender = sender,
                     .history = history, .chan_len = chan_len, .len = (size_t)hl + n,
                     .head_len = (size_t)hl, .payload = payload};
    snprintf(it->chan, chan_len + 1, "%s%s", C.prefix, room);
    if (px_loop_post(C.loop, do_publish, it) != 0) {
        item_free(it);
        atomic_fetch_sub(&C.queued, 1);
        return -ENOMEM;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Receiving (loop thread)                                                   */

static void on_pmessage(redisAsyncContext *ac, void *reply, void *priv);

static void became_up(void)
{
    if (!C.pub_ok || !C.sub_ok || atomic_load(&C.up))
        return;
    atomic_store(&C.up, true);
    C.backoff_ms = RETRY_MIN_MS;
    srv_log(SRV_LOG_INFO, "cluster: connected to Redis at %s:%d", C.host, C.port);
    if (C.told_down) {
        C.told_down = false;
        chat_notice_all("*** The cluster is back.");
    }
}

static void on_pmessage(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    (void)priv;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 3)
        return;
    if (strcmp(r->element[0]->str, "psubscribe") == 0) {
        C.sub_ok = true;
        became_up();
        return;
    }
    if (r->elements != 4 || strcmp(r->element[0]->str, "pmessage") != 0)
        return;
    const redisReply *chan = r->element[2], *msg = r->element[3];
    size_t pl = strlen(C.prefix);
    if (chan->len <= pl || chan->len - pl > CHAT_ROOM_MAX || msg->type != REDIS_REPLY_STRING)
        return;
    char room[CHAT_ROOM_MAX + 1];
    memcpy(room, chan->str + pl, chan->len - pl);
    room[chan->len - pl] = '\0';
    const char *nl = memchr(msg->str, '\n', msg->len);
    if (!nl)
        return;
    /* "TAG ID H": a line of this node's names the sender, who does not get it back;
     * H says whether it goes into the room's history. */
    uint64_t except = 0;
    size_t tl = strlen(C.tag);
    if ((size_t)(nl - msg->str) > tl + 1 && memcmp(msg->str, C.tag, tl) == 0 &&
        msg->str[tl] == ' ')
        except = strtoull(msg->str + tl + 1, NULL, 10);
    bool history = nl - msg->str >= 2 && nl[-1] == '1' && nl[-2] == ' ';
    px_buf *line;
    size_t n = msg->len - (size_t)(nl + 1 - msg->str);
    if (n && px_buf_new(&line, nl + 1, n) == 0) {
        chat_room_deliver(room, except, line, history);
        px_buf_release(line);
    }
}

/* ------------------------------------------------------------------------ */
/* Connections and reconnection (loop thread)                                */

static void connect_all(void);

static void retry_now(px_timer *t, void *user)
{
    (void)user;
    px_timer_cancel(t);
    C.retry = NULL;
    connect_all();
}

/* One connection is gone (or never came): drop the other, refuse lines, tell the
 * local clients once, and try again after a growing pause. */
static void went_down(const char *why)
{
    bool was_up = atomic_exchange(&C.up, false);
    redisAsyncContext *pub = C.pub, *sub = C.sub;
    C.pub = C.sub = NULL;
    C.pub_ok = C.sub_ok = false;
    /* Freed at once, not disconnected gracefully: a connection still flushing could
     * put a sender's earlier line into Redis after a later one sent on the next
     * connection.  Lines without an answer are reported to their senders. */
    if (pub)
        redisAsyncFree(pub);
    if (sub)
        redisAsyncFree(sub);
    if (C.stopping)
        return;
    if (was_up || !C.told_down)
        srv_log(SRV_LOG_ERROR, "cluster: Redis at %s:%d unreachable (%s); retrying", C.host,
                C.port, why);
    if (!C.told_down) {
        C.told_down = true;
        chat_notice_all(CLUSTER_DOWN_NOTICE);
    }
    if (!C.retry && px_timer_start(C.loop, &C.retry, C.backoff_ms, 0, retry_now, NULL) != 0)
        C.retry = NULL;
    C.backoff_ms = C.backoff_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : C.backoff_ms * 2;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback. */
        if (ac == C.pub)
            C.pub = NULL;
        if (ac == C.sub)
            C.sub = NULL;
        went_down(ac->errstr[0] ? ac->errstr : "connect failed");
        return;
    }
    if (ac == C.pub) {
        C.pub_ok = true;
        became_up();
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    /* hiredis frees the context after this callback. */
    bool ours = ac == C.pub || ac == C.sub;
    if (ac == C.pub)
        C.pub = NULL;
    if (ac == C.sub)
        C.sub = NULL;
    if (ours)
        went_down(ac->errstr[0] ? ac->errstr : "connection closed");
}

static redisAsyncContext *open_one(void)
{
    redisAsyncContext *ac = redisAsyncConnect(C.host, C.port);
    if (!ac)
        return NULL;
    if (ac->err || redis_px_attach(ac, C.loop) != 0) {
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
    if (C.stopping)
        return;
    C.pub = open_one();
    C.sub = open_one();
    if (!C.pub || !C.sub) {
        went_down("cannot connect");
        return;
    }
    char pattern[64];
    snprintf(pattern, sizeof(pattern), "%s*", C.prefix);
    redisAsyncCommand(C.sub, on_pmessage, NULL, "PSUBSCRIBE %s", pattern);
}

static void start_on_loop(void *arg)
{
    (void)arg;
    connect_all(); /* nothing when cluster_stop came first */
}

int cluster_start(const srv_config *cfg, px_loop *loop)
{
    C.loop = loop;
    if (!srv_parse_redis_url(cfg->cluster, C.host, sizeof(C.host), &C.port, &C.db))
        return -EINVAL;
    snprintf(C.prefix, sizeof(C.prefix), "st_proactor:%d:room:", C.db);
    /* Resolved once, here: hiredis would resolve the name on the loop thread, blocking
     * every client for as long as DNS takes, at every reconnection. */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(C.host, NULL, &hints, &res) == 0) {
        char ip[INET6_ADDRSTRLEN];
        const void *a = res->ai_family == AF_INET
                            ? (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr
                            : (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr;
        if (inet_ntop(res->ai_family, a, ip, sizeof(ip)))
            snprintf(C.host, sizeof(C.host), "%s", ip);
        freeaddrinfo(res);
    }
    unsigned long long nonce = 0;
    if (getrandom(&nonce, sizeof(nonce), 0) != (ssize_t)sizeof(nonce))
        nonce = (unsigned long long)getpid() ^ px_now_ms();
    char host[64] = "node";
    gethostname(host, sizeof(host) - 1);
    snprintf(C.tag, sizeof(C.tag), "%s/%016llx", cfg->node_name ? cfg->node_name : host, nonce);
    C.backoff_ms = RETRY_MIN_MS;
    C.enabled = true;
    return px_loop_post(loop, start_on_loop, NULL);
}

void cluster_stop(void)
{
    if (!C.enabled)
        return;
    C.stopping = true;
    if (C.retry)
        px_timer_cancel(C.retry);
    C.retry = NULL;
    went_down("stopping");
}
