/*
 * The Redis bus (bus.h), for several st_proactor servers sharing names, rooms and
 * private messages (--cluster redis://HOST:PORT[/DB]).  Private to its files:
 *   bus_redis.c           the table, start and stop
 *   bus_redis_conn.c      the state, the connections and reconnection, the commands
 *   bus_redis_pubsub.c    what is said in rooms: published, received, delivered
 *   bus_redis_wire.c      events as they travel between servers (one format)
 *   bus_redis_ask.c       questions (claim, who, rooms, msg, move) with their timeout
 *   bus_redis_presence.c  this server's names and lists in Redis: heartbeat, resync
 *   bus_redis_lua.c       the Lua scripts, and the commands that carry them
 * hiredis's asynchronous API runs on the loop thread (redis_px.c); other threads hand
 * work over with px_loop_post.
 *
 * Every line said in a room is published to the room's channel, st_proactor:DB:room:NAME,
 * and delivered to the room's local members only when it comes back from Redis, so
 * every member on every server sees a room's lines in the one order Redis gives them.
 * Every name in use is a key, st_proactor:DB:nick:NAME (lower case), owned by one
 * server, and each server lists its users and their rooms in a hash,
 * st_proactor:DB:node:TAG.  Both expire after --cluster-ttl seconds unless the
 * server's heartbeat (every third of that) refreshes them: a crashed server's users
 * vanish from the cluster after the TTL.
 */
#ifndef CHAT_BUS_REDIS_H
#define CHAT_BUS_REDIS_H

#include "chat.h"

#include <hiredis/async.h>
#include <stdatomic.h>

/* Checks that Redis answers (blocking, 2 s at most); 0, or -1 with why[] filled. */
int chat_bus_redis_probe(const srv_config *cfg, char *why, size_t len);
/* Starts the bus on loop (from the main thread, before the loop runs): it connects in
 * the background and keeps reconnecting.  NULL when out of memory. */
const chat_bus *chat_bus_redis_start(const srv_config *cfg, px_loop *loop);

/* ------------------------------------------------------------------------ */
/* Between the bus's files                                                   */

#define REDIS_DOWN_NOTICE                                                              \
    "The cluster is unreachable: messages reach only this server (marked [local]) "   \
    "until it is back."

extern struct redis_bus {
    px_loop *loop;
    char host[256];
    int port, db;
    char prefix[48]; /* "st_proactor:DB:room:" */
    char base[40];   /* "st_proactor:DB:", before presence keys */
    char tag[80];    /* this node: its name and a random suffix */
    char ttl[12];    /* --cluster-ttl, as Redis takes it */
    char leave_tpl[256]; /* redis_wire_leave_template */
    unsigned ttl_s;
    /* Loop thread only. */
    redisAsyncContext *pub, *sub;
    bool pub_ok, sub_ok, stopping, told_down;
    bool dirty; /* Redis's names and lists may not match this server's: write them anew */
    px_timer *retry, *heartbeat;
    unsigned backoff_ms;
    /* Hooks (set at start): the connections are up; a room's line; a line to this
     * server (its own channel). */
    void (*on_up)(void);
    redisCallbackFn *on_message, *on_direct;
    /* Any thread. */
    atomic_bool up;
} R;

/* bus_redis_wire.c.  A payload is a header line, "v1\tKIND\tFROM\tTO\tSENDER\tHISTORY\tTAG",
 * then the event's text: KIND one letter, SENDER the id on its server of the session
 * that does not get it back (0: none), HISTORY 1 to keep it in the room's history, TAG
 * the server it comes from.  Returns a malloc'd payload (*len bytes) or NULL. */
char *redis_wire_encode(const chat_event *ev, uint64_t sender, bool history, const char *tag,
                        size_t *len);
typedef struct redis_wire_msg {
    chat_event ev; /* its strings point into the payload, and into own[] */
    uint64_t sender;
    bool history, ours; /* ours: it came from this server */
    char own[2 * (CHAT_NICK_MAX + CHAT_ROOM_MAX + 2)];
} redis_wire_msg;
/* Parses p[0..n) into m (ours: it comes from tag); false when malformed. */
bool redis_wire_decode(const char *p, size_t n, const char *tag, redis_wire_msg *m);
/* A Lua string.format template of this server's leave notice about user %s, why %s
 * (a user of a server that is gone). */
#define REDIS_TEMPLATE_MAX 256
void redis_wire_leave_template(const char *tag, char tpl[REDIS_TEMPLATE_MAX]);

/* bus_redis_conn.c (loop thread) */
#define REDIS_RETRY_MIN_MS 100
void redis_connect_all(void);
/* One connection is gone (or never came): drop the other, refuse lines, tell the local
 * clients once, and try again after a growing pause. */
void redis_went_down(const char *why);
/* The subscription is confirmed: once the other connection is up too, R.on_up. */
void redis_became_up(void);

/* bus_redis_pubsub.c */
int redis_publish(chat_room *r, chat_session *from, uint64_t except, chat_event *ev,
                  unsigned flags);
void redis_on_pmessage(redisAsyncContext *ac, void *reply, void *priv);
void redis_on_direct(redisAsyncContext *ac, void *reply, void *priv);

/* bus_redis_ask.c */
int redis_claim(chat_session *s, const char *name, chat_bus_done *done, void *ctx);
void redis_release(const char *name);
int redis_who(chat_session *s, const char *room, chat_bus_done *done, void *ctx);
int redis_rooms(chat_session *s, chat_bus_done *done, void *ctx);
int redis_msg(chat_session *s, const char *name, chat_event *ev, chat_bus_done *done,
              void *ctx);
int redis_move(chat_session *s, const char *room, chat_bus_done *done, void *ctx);
void redis_leave(chat_session *s);

/* bus_redis_presence.c (loop thread) */
void redis_presence_sync(void);
void redis_heartbeat(px_timer *t, void *user);

/* bus_redis_lua.c: the scripts (ARGV as each says). */
extern const char REDIS_LUA_CLAIM[], REDIS_LUA_MOVE[], REDIS_LUA_DROP[], REDIS_LUA_SYNC[],
    REDIS_LUA_HEARTBEAT[], REDIS_LUA_LIST[], REDIS_LUA_MSG[], REDIS_LUA_LEAVE[];

/* bus_redis_conn.c: commands carrying them. */
/* A command's arguments, owned: "EVAL script 0 base ..." and the rest. */
typedef struct redis_args {
    int argc, cap;
    char **argv;
    size_t *len;
    bool failed;
} redis_args;
void redis_args_add(redis_args *a, const char *p, size_t n);
void redis_args_str(redis_args *a, const char *p);
void redis_args_name(redis_args *a, const char *name); /* lower case, as keys are */
void redis_args_free(redis_args *a);
void redis_args_script(redis_args *a, const char *script); /* "EVAL script 0 base" */
/* Sends a without waiting for its answer, or with fn(ac, reply, priv) for it (NULL
 * reply: not sent); frees a.  Loop thread. */
void redis_args_send(redis_args *a, redisCallbackFn *fn, void *priv);
/* The same from any thread (a is moved to the loop, with no callback). */
void redis_args_post(redis_args *a);

#endif
