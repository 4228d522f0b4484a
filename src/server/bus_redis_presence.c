/*
 * This server's users in Redis (bus_redis.h): after every (re)connection its whole
 * list is written anew; a heartbeat every third of the TTL keeps its names and list
 * alive, buries servers that stopped beating, and notices a list Redis lost.
 */
#include "bus_redis.h"

#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
            R.dirty = true; /* Redis lost this server's list: written anew next beat */
            return;
        }
        char text[160];
        int n = snprintf(text, sizeof(text), "Your name %s is also in use on another server "
                                             "of the cluster now; please choose another "
                                             "with /nick.", e->str);
        chat_event ev = {.kind = CHAT_EV_NOTICE, .text = text, .len = (size_t)n};
        chat_tell(e->str, e->len, &ev, NULL);
        chat_event_clear(&ev);
        srv_log(SRV_LOG_INFO, "cluster: the name %s is taken on another server too", e->str);
    }
}

/* This server's users are in the cluster's names and lists again (or could not be
 * written, for want of memory): they can be told the cluster is back. */
static void on_synced(redisAsyncContext *ac, void *reply, void *priv)
{
    on_lost(ac, reply, priv);
    if (atomic_load(&R.up) && R.told_down) {
        R.told_down = false;
        chat_notice_all("The cluster is back.");
    }
}

static void add_user(const char *name, const char *room, void *ctx)
{
    redis_args *a = ctx;
    redis_args_name(a, name);
    redis_args_str(a, name);
    redis_args_str(a, room);
}

void redis_presence_sync(void)
{
    R.dirty = false;
    redis_args a = {0};
    redis_args_script(&a, REDIS_LUA_SYNC);
    redis_args_str(&a, R.tag);
    redis_args_str(&a, R.ttl);
    chat_presence_each(add_user, &a);
    if (a.failed)
        srv_log(SRV_LOG_ERROR, "cluster: out of memory writing this server's users");
    redis_args_send(&a, on_synced, NULL);
}

static void count_user(const char *name, const char *room, void *ctx)
{
    (void)name;
    (void)room;
    ++*(unsigned *)ctx;
}

void redis_heartbeat(px_timer *t, void *user)
{
    (void)t;
    (void)user;
    if (!atomic_load(&R.up))
        return;
    if (R.dirty) {
        redis_presence_sync();
        return;
    }
    unsigned users = 0;
    char count[16];
    chat_presence_each(count_user, &users);
    snprintf(count, sizeof(count), "%u", users);
    redis_args a = {0};
    redis_args_script(&a, REDIS_LUA_HEARTBEAT);
    redis_args_str(&a, R.tag);
    redis_args_str(&a, R.ttl);
    redis_args_str(&a, count);
    redis_args_str(&a, R.leave_tpl);
    redis_args_send(&a, on_lost, NULL);
}
