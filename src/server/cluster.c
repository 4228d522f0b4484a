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
    char base[40];   /* "st_proactor:DB:", before presence keys */
    char tag[80];    /* this node: its name and a random suffix */
    char ttl[12];    /* --cluster-ttl, as Redis takes it */
    unsigned ttl_s;
    /* Loop thread only. */
    redisAsyncContext *pub, *sub;
    bool pub_ok, sub_ok, stopping, told_down;
    bool dirty; /* Redis's names and lists may not match this server's: write them anew */
    px_timer *retry, *heartbeat;
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
static void presence_sync(void);

static void became_up(void)
{
    if (!C.pub_ok || !C.sub_ok || atomic_load(&C.up))
        return;
    atomic_store(&C.up, true);
    C.backoff_ms = RETRY_MIN_MS;
    srv_log(SRV_LOG_INFO, "cluster: connected to Redis at %s:%d", C.host, C.port);
    presence_sync(); /* clients hear the cluster is back once it has their names again */
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
/* Presence (loop thread, except where said)                                 */

/* Scripts run whole inside Redis: each step of a claim, a list or a heartbeat sees
 * the same state.  ARGV[1] is always "st_proactor:DB:", ARGV[2] (mostly) this
 * node's tag.  "now" is Redis's clock, so the servers' clocks do not matter. */
#define LUA_NOW                                                                     \
    "local t = redis.call('TIME') "                                                 \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "

/* bury(P, d, by, why): node d is gone (crashed, or stopping): its names are freed, its
 * list deleted, and each of its users is announced as gone in their room, by node by
 * (a notice in the rooms' channels, kept out of the history).  A node's list lives
 * twice the TTL, so that another node's heartbeat finds it, after its deadline in
 * 'nodes' has passed, to announce its users. */
#define LUA_BURY                                                                        \
    "local function bury(P, d, by, why) "                                               \
    "  local node = P .. 'node:' .. d "                                                 \
    "  local h = redis.call('HGETALL', node) "                                          \
    "  for i = 1, #h, 2 do "                                                            \
    "    if redis.call('GET', P .. 'nick:' .. h[i]) == d then "                         \
    "      redis.call('DEL', P .. 'nick:' .. h[i]) end "                                \
    "    local shown, room = string.match(h[i + 1], '^([^\t]*)\t(.*)$') "             \
    "    if shown then redis.call('PUBLISH', P .. 'room:' .. room, "                    \
    "      by .. ' 0 0\\n*** ' .. shown .. ' has left (' .. why .. ').\\r\\n') end "  \
    "  end "                                                                            \
    "  redis.call('DEL', node) "                                                        \
    "  redis.call('ZREM', P .. 'nodes', d) "                                            \
    "end "

/* ARGV: base, tag, ttl, name ('' for a guest), shown, room, old ('' for none).  Also
 * renews this node's liveness with the name's TTL, so that lists and names of a
 * crashed node expire together. */
static const char LUA_CLAIM[] =
    LUA_NOW
    "local P, tag, ttl, name, shown = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5] "
    "if name == '' then "
    "  for i = 1, 100 do "
    "    local g = 'guest' .. redis.call('INCR', P .. 'guests') "
    "    if redis.call('SET', P .. 'nick:' .. g, tag, 'NX', 'EX', ttl) then "
    "      name = g shown = g break end "
    "  end "
    "  if name == '' then return '' end "
    "else "
    "  local owner = redis.call('GET', P .. 'nick:' .. name) "
    "  if owner and owner ~= tag then return '' end "
    "  redis.call('SET', P .. 'nick:' .. name, tag, 'EX', ttl) "
    "end "
    "local node = P .. 'node:' .. tag "
    "redis.call('HSET', node, name, shown .. '\t' .. ARGV[6]) "
    "redis.call('EXPIRE', node, 2 * ttl) "
    "local old = ARGV[7] "
    "if old ~= '' and old ~= name then "
    "  redis.call('HDEL', node, old) "
    "  if redis.call('GET', P .. 'nick:' .. old) == tag then "
    "    redis.call('DEL', P .. 'nick:' .. old) end "
    "end "
    "redis.call('ZADD', P .. 'nodes', now + ttl * 1000, tag) "
    "return shown";

/* ARGV: base, tag, ttl, name, "shown\troom": a local user moved. */
static const char LUA_MOVE[] =
    "local node = ARGV[1] .. 'node:' .. ARGV[2] "
    "redis.call('HSET', node, ARGV[4], ARGV[5]) "
    "redis.call('EXPIRE', node, 2 * tonumber(ARGV[3])) "
    "return 1";

/* ARGV: base, tag, name. */
static const char LUA_DROP[] =
    "redis.call('HDEL', ARGV[1] .. 'node:' .. ARGV[2], ARGV[3]) "
    "if redis.call('GET', ARGV[1] .. 'nick:' .. ARGV[3]) == ARGV[2] then "
    "  redis.call('DEL', ARGV[1] .. 'nick:' .. ARGV[3]) end "
    "return 1";

/* ARGV: base, tag, ttl, then name, shown, room for each local user (SYNC: the list
 * is written anew) or how many local users there are (HEARTBEAT: the names listed
 * are refreshed; a list shorter than that, lost in Redis, is answered '', 'resync').
 * Returns the names another server has taken meanwhile (after this one was cut off
 * for longer than the TTL). */
static const char LUA_SYNC[] =
    LUA_NOW
    "local P, tag, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]) "
    "local node = P .. 'node:' .. tag "
    "local lost = {} "
    "redis.call('DEL', node) "
    "for i = 4, #ARGV, 3 do "
    "  local k = P .. 'nick:' .. ARGV[i] "
    "  local o = redis.call('GET', k) "
    "  if not o or o == tag then "
    "    redis.call('SET', k, tag, 'EX', ttl) "
    "    redis.call('HSET', node, ARGV[i], ARGV[i + 1] .. '\t' .. ARGV[i + 2]) "
    "  else lost[#lost + 1] = ARGV[i + 1] end "
    "end "
    "redis.call('EXPIRE', node, 2 * ttl) "
    "redis.call('ZADD', P .. 'nodes', now + ttl * 1000, tag) "
    "return lost";
static const char LUA_HEARTBEAT[] =
    LUA_NOW LUA_BURY
    "local P, tag, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]) "
    "for _, d in ipairs(redis.call('ZRANGEBYSCORE', P .. 'nodes', '-inf', now)) do "
    "  if d ~= tag then bury(P, d, tag, 'server lost') end "
    "end "
    "local node = P .. 'node:' .. tag "
    "if redis.call('HLEN', node) < tonumber(ARGV[4]) then return {'', 'resync'} end "
    "local lost = {} "
    "for _, f in ipairs(redis.call('HKEYS', node)) do "
    "  local k = P .. 'nick:' .. f "
    "  local o = redis.call('GET', k) "
    "  if not o or o == tag then redis.call('SET', k, tag, 'EX', ttl) "
    "  else "
    "    local v = redis.call('HGET', node, f) "
    "    lost[#lost + 1] = string.match(v, '^[^\t]*') "
    "    redis.call('HDEL', node, f) "
    "  end "
    "end "
    "redis.call('EXPIRE', node, 2 * ttl) "
    "redis.call('ZADD', P .. 'nodes', now + ttl * 1000, tag) "
    "return lost";

/* ARGV: base, room ('' for every room).  "NAME\tROOM" of each user of every live
 * server (a node past its deadline is left to the heartbeats, which announce its
 * users as gone). */
static const char LUA_LIST[] =
    LUA_NOW
    "local P, room = ARGV[1], ARGV[2] "
    "local out = {} "
    "for _, tag in ipairs(redis.call('ZRANGEBYSCORE', P .. 'nodes', now, '+inf')) do "
    "  for _, v in ipairs(redis.call('HVALS', P .. 'node:' .. tag)) do "
    "    if room == '' or string.sub(v, -#room - 1) == '\t' .. room then "
    "      out[#out + 1] = v end "
    "  end "
    "end "
    "return out";

/* ARGV: base, name, line.  Publishes "name\nline" to the owner's channel; returns
 * the name as its owner shows it, or '' when nobody has it (or its server is gone). */
static const char LUA_MSG[] =
    "local o = redis.call('GET', ARGV[1] .. 'nick:' .. ARGV[2]) "
    "if not o then return '' end "
    "if redis.call('PUBLISH', ARGV[1] .. 'to:' .. o, ARGV[2] .. '\\n' .. ARGV[3]) == 0 then "
    "  return '' end " /* its server has crashed: the name lasts until the TTL */
    "local v = redis.call('HGET', ARGV[1] .. 'node:' .. o, ARGV[2]) "
    "if v then return string.match(v, '^[^\t]*') end "
    "return ARGV[2]";

/* ARGV: base, tag.  This server is stopping: its names and list go with it, and its
 * users are announced as gone on the other servers. */
static const char LUA_LEAVE[] =
    LUA_BURY
    "bury(ARGV[1], ARGV[2], ARGV[2], 'server shutting down') "
    "return 1";

/* A command's arguments, owned: "EVAL script 0 base ..." and the rest. */
typedef struct cmd_args {
    int argc, cap;
    char **argv;
    size_t *len;
    bool failed;
} cmd_args;

static void args_add(cmd_args *a, const char *p, size_t n)
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

static void args_str(cmd_args *a, const char *p)
{
    args_add(a, p, strlen(p));
}

/* A name as its key: lower case (names are ASCII). */
static void args_name(cmd_args *a, const char *name)
{
    char key[CHAT_NICK_MAX + 1];
    size_t n = strlen(name);
    if (n > CHAT_NICK_MAX)
        n = CHAT_NICK_MAX;
    for (size_t i = 0; i < n; i++)
        key[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
    args_add(a, key, n);
}

static void args_free(cmd_args *a)
{
    for (int i = 0; i < a->argc; i++)
        free(a->argv[i]);
    free(a->argv);
    free(a->len);
    *a = (cmd_args){0};
}

/* "EVAL script 0 base" */
static void args_script(cmd_args *a, const char *script)
{
    args_str(a, "EVAL");
    args_str(a, script);
    args_str(a, "0");
    args_str(a, C.base);
}

/* Sends a command without waiting for its answer (loop thread); frees a. */
static void send_args(cmd_args *a, redisCallbackFn *fn, void *priv)
{
    if (a->failed || !C.pub || !atomic_load(&C.up) ||
        redisAsyncCommandArgv(C.pub, fn, priv, a->argc, (const char **)a->argv, a->len) !=
            REDIS_OK) {
        if (fn)
            fn(NULL, NULL, priv);
    }
    args_free(a);
}

static void post_args_run(void *arg)
{
    cmd_args *a = arg;
    send_args(a, NULL, NULL);
    free(a);
}

/* From any thread: sends a (moved to the heap) from the loop thread. */
static void post_args(cmd_args *a)
{
    cmd_args *copy = malloc(sizeof(*copy));
    if (copy && !a->failed) {
        *copy = *a;
        if (px_loop_post(C.loop, post_args_run, copy) == 0)
            return;
    }
    free(copy);
    args_free(a);
}

void cluster_left(const char *name)
{
    if (!C.enabled)
        return;
    cmd_args a = {0};
    args_script(&a, LUA_DROP);
    args_str(&a, C.tag);
    args_name(&a, name);
    post_args(&a);
}

/* The names another server took while this one was cut off: their users are told. */
static void on_lost(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    (void)priv;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_STRING || !e->len)
            continue;
        if (i == 1 && strcmp(e->str, "resync") == 0 && !r->element[0]->len) {
            C.dirty = true; /* Redis lost this server's list: written anew next beat */
            return;
        }
        px_buf *b = chat_fmt("*** Your name %s is also in use on another server of the "
                             "cluster now; please choose another with /nick.", e->str);
        if (b) {
            chat_tell(e->str, e->len, b);
            px_buf_release(b);
        }
        srv_log(SRV_LOG_INFO, "cluster: the name %s is taken on another server too", e->str);
    }
}

/* This server's users are in the cluster's names and lists again (or could not be
 * written, for want of memory): they can be told the cluster is back. */
static void on_synced(redisAsyncContext *ac, void *reply, void *priv)
{
    on_lost(ac, reply, priv);
    if (atomic_load(&C.up) && C.told_down) {
        C.told_down = false;
        chat_notice_all("*** The cluster is back.");
    }
}

static void add_user(const char *name, const char *room, void *ctx)
{
    cmd_args *a = ctx;
    args_name(a, name);
    args_str(a, name);
    args_str(a, room);
}

/* After each (re)connection: this server's whole list, written anew. */
static void presence_sync(void)
{
    C.dirty = false;
    cmd_args a = {0};
    args_script(&a, LUA_SYNC);
    args_str(&a, C.tag);
    args_str(&a, C.ttl);
    chat_presence_each(add_user, &a);
    if (a.failed)
        srv_log(SRV_LOG_ERROR, "cluster: out of memory writing this server's users");
    send_args(&a, on_synced, NULL);
}

static void count_user(const char *name, const char *room, void *ctx)
{
    (void)name;
    (void)room;
    ++*(unsigned *)ctx;
}

static void heartbeat(px_timer *t, void *user)
{
    (void)t;
    (void)user;
    if (!atomic_load(&C.up))
        return;
    if (C.dirty) {
        presence_sync();
        return;
    }
    unsigned users = 0;
    char count[16];
    chat_presence_each(count_user, &users);
    snprintf(count, sizeof(count), "%u", users);
    cmd_args a = {0};
    args_script(&a, LUA_HEARTBEAT);
    args_str(&a, C.tag);
    args_str(&a, C.ttl);
    args_str(&a, count);
    send_args(&a, on_lost, NULL);
}

/* How long a question may wait for Redis: a Redis that stopped answering (but kept
 * its connections) then costs the asker this much, and nobody else anything. */
#define ASK_TIMEOUT_MS 2000

/* A question in flight: from the asking session to Redis and back. */
typedef struct ask {
    px_stream *st; /* retained */
    cluster_done_fn *done;
    cmd_args args;
    bool claim;
    bool timed_out; /* answered "unreachable" already; Redis's answer is dropped */
    px_timer *timer;
    cluster_answer a;
} ask;

static void ask_free(ask *q)
{
    args_free(&q->args);
    free(q->a.text);
    for (size_t i = 0; i < q->a.nitems; i++)
        free(q->a.items[i]);
    free(q->a.items);
    px_stream_release(q->st);
    free(q);
}

static void ask_run(px_stream *st, void *arg, void *user)
{
    (void)st;
    ask *q = arg;
    if (user)
        q->done(user, &q->a);
    ask_free(q);
}

/* Back to the session, in its order (q goes with it). */
static void ask_answer(ask *q)
{
    if (px_stream_call(q->st, ask_run, q) == 0)
        return;
    if (q->claim && q->a.status == 1) /* the session has gone: so has its new name */
        cluster_left(q->a.text);
    ask_free(q);
}

static void on_answer(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    ask *q = priv;
    redisReply *r = reply;
    q->a.status = -1;
    if (r && r->type == REDIS_REPLY_STRING) {
        q->a.status = r->len > 0;
        q->a.text = strdup(r->str);
        if (!q->a.text)
            q->a.status = -1;
    } else if (r && r->type == REDIS_REPLY_INTEGER) {
        q->a.status = 1;
    } else if (r && r->type == REDIS_REPLY_ARRAY) {
        q->a.items = calloc(r->elements ? r->elements : 1, sizeof(*q->a.items));
        q->a.status = q->a.items ? 1 : -1;
        for (size_t i = 0; q->a.items && i < r->elements; i++) {
            if (r->element[i]->type == REDIS_REPLY_STRING &&
                (q->a.items[q->a.nitems] = strdup(r->element[i]->str)))
                q->a.nitems++;
        }
    } else if (r && r->type == REDIS_REPLY_ERROR) {
        srv_log(SRV_LOG_ERROR, "cluster: Redis refused a question: %s", r->str);
    }
    if (q->timer)
        px_timer_cancel(q->timer);
    q->timer = NULL;
    if (q->claim && r && q->a.status < 0)
        C.dirty = true; /* refused (an error): the session goes on with a local name */
    if (!q->timed_out) {
        ask_answer(q);
        return;
    }
    /* Too late: the session went on without this answer (keeping its old or a local
     * name), but the claim may have happened: give the name back, and write this
     * server's names anew at the next beat, once the session has its local name. */
    if (q->claim && q->a.status == 1)
        cluster_left(q->a.text);
    if (q->claim)
        C.dirty = true;
    ask_free(q);
}

/* Redis is too slow: the session goes on as if it were unreachable; q stays for
 * hiredis, which answers every command in the end (if only at disconnection). */
static void ask_expired(px_timer *t, void *user)
{
    ask *q = user;
    px_timer_cancel(t);
    q->timer = NULL;
    ask *now = calloc(1, sizeof(*now));
    if (!now)
        return; /* out of memory: Redis's answer, when it comes, is the answer */
    q->timed_out = true;
    *now = (ask){.st = px_stream_retain(q->st), .done = q->done, .a = {.status = -1}};
    ask_answer(now);
}

static void ask_send(void *arg)
{
    ask *q = arg;
    cmd_args a = q->args;
    q->args = (cmd_args){0};
    bool sent = !a.failed && C.pub && atomic_load(&C.up) &&
                redisAsyncCommandArgv(C.pub, on_answer, q, a.argc, (const char **)a.argv,
                                      a.len) == REDIS_OK;
    args_free(&a);
    if (!sent) {
        q->a.status = -1;
        ask_answer(q);
        return;
    }
    if (px_timer_start(C.loop, &q->timer, ASK_TIMEOUT_MS, 0, ask_expired, q) != 0)
        q->timer = NULL;
}

static int ask_post(ask *q)
{
    if (q->args.failed || px_loop_post(C.loop, ask_send, q) != 0) {
        ask_free(q);
        return -ENOMEM;
    }
    return 0;
}

static ask *ask_new(px_stream *st, cluster_done_fn *done, const char *script)
{
    ask *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->st = px_stream_retain(st);
    q->done = done;
    args_script(&q->args, script);
    return q;
}

int cluster_claim(px_stream *st, const char *name, const char *room, const char *old,
                  cluster_done_fn *done)
{
    ask *q = ask_new(st, done, LUA_CLAIM);
    if (!q)
        return -ENOMEM;
    q->claim = true;
    args_str(&q->args, C.tag);
    args_str(&q->args, C.ttl);
    args_name(&q->args, name ? name : "");
    args_str(&q->args, name ? name : "");
    args_str(&q->args, room);
    args_name(&q->args, old ? old : "");
    return ask_post(q);
}

int cluster_move(px_stream *st, const char *name, const char *room, cluster_done_fn *done)
{
    char value[CHAT_NICK_MAX + CHAT_ROOM_MAX + 2];
    snprintf(value, sizeof(value), "%s\t%s", name, room);
    ask *q = ask_new(st, done, LUA_MOVE);
    if (!q)
        return -ENOMEM;
    args_str(&q->args, C.tag);
    args_str(&q->args, C.ttl);
    args_name(&q->args, name);
    args_str(&q->args, value);
    return ask_post(q);
}

int cluster_list(px_stream *st, const char *room, cluster_done_fn *done)
{
    ask *q = ask_new(st, done, LUA_LIST);
    if (!q)
        return -ENOMEM;
    args_str(&q->args, room ? room : "");
    return ask_post(q);
}

int cluster_msg(px_stream *st, const char *name, px_buf *line, cluster_done_fn *done)
{
    ask *q = ask_new(st, done, LUA_MSG);
    if (!q)
        return -ENOMEM;
    args_name(&q->args, name);
    args_add(&q->args, px_buf_data(line), px_buf_len(line));
    return ask_post(q);
}

/* "name\nline" on this server's own channel: a private message from another server. */
static void on_direct(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    (void)priv;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "message") != 0)
        return;
    const redisReply *msg = r->element[2];
    const char *nl = msg->type == REDIS_REPLY_STRING ? memchr(msg->str, '\n', msg->len) : NULL;
    px_buf *line;
    if (!nl || px_buf_new(&line, nl + 1, msg->len - (size_t)(nl + 1 - msg->str)) != 0)
        return;
    chat_tell(msg->str, (size_t)(nl - msg->str), line); /* gone meanwhile: nobody to tell */
    px_buf_release(line);
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
    redisAsyncCommand(C.sub, on_direct, NULL, "SUBSCRIBE %sto:%s", C.base, C.tag);
    redisAsyncCommand(C.sub, on_pmessage, NULL, "PSUBSCRIBE %s", pattern);
}

static void start_on_loop(void *arg)
{
    (void)arg;
    if (C.stopping)
        return;
    unsigned every = C.ttl_s * 1000 / 3;
    if (px_timer_start(C.loop, &C.heartbeat, every, every, heartbeat, NULL) != 0) {
        C.heartbeat = NULL;
        srv_log(SRV_LOG_ERROR, "cluster: out of memory: no heartbeat, so this server's users "
                               "leave the cluster's lists after %u s", C.ttl_s);
    }
    connect_all();
}

int cluster_start(const srv_config *cfg, px_loop *loop)
{
    C.loop = loop;
    if (!srv_parse_redis_url(cfg->cluster, C.host, sizeof(C.host), &C.port, &C.db))
        return -EINVAL;
    snprintf(C.prefix, sizeof(C.prefix), "st_proactor:%d:room:", C.db);
    snprintf(C.base, sizeof(C.base), "st_proactor:%d:", C.db);
    C.ttl_s = cfg->cluster_ttl ? cfg->cluster_ttl : SRV_DEFAULT_CLUSTER_TTL_S;
    snprintf(C.ttl, sizeof(C.ttl), "%u", C.ttl_s);
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
    if (C.heartbeat)
        px_timer_cancel(C.heartbeat);
    C.retry = C.heartbeat = NULL;
    bool was_up = atomic_load(&C.up);
    went_down("stopping");
    if (!was_up)
        return; /* the TTL takes this server's users out */
    /* The last words, on a connection of their own (the loop is not running any
     * more): the users go from the cluster's names and lists at once. */
    redisContext *c = redisConnectWithTimeout(C.host, C.port, (struct timeval){.tv_sec = 1});
    if (c && !c->err) {
        redisSetTimeout(c, (struct timeval){.tv_sec = 1});
        redisReply *r = redisCommand(c, "EVAL %s 0 %s %s", LUA_LEAVE, C.base, C.tag);
        freeReplyObject(r);
    }
    redisFree(c);
}
