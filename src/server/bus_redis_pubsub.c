/*
 * What is said in rooms, through Redis (bus_redis.h): handed over from any thread,
 * published from the loop thread in order, and delivered to this server's members of
 * the room when it comes back, in the one order Redis gives every server.  While Redis
 * is unreachable a line reaches this server's members only, marked local.
 */
#include "bus_redis.h"

#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUEUE_MAX 10000 /* lines handed over and not yet answered by Redis */

static atomic_uint queued;

typedef struct pub_item {
    chat_session *from; /* retained: told if the line could not be sent */
    size_t len;
    char *payload;      /* redis_wire_encode's */
    char chan[];
} pub_item;

static void item_free(pub_item *it)
{
    chat_session_release(it->from);
    free(it->payload);
    free(it);
}

static void on_published(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    pub_item *it = priv;
    redisReply *r = reply;
    atomic_fetch_sub(&queued, 1);
    if (it->from && !r) /* the connection broke before Redis answered */
        chat_error(it->from, "the cluster connection broke; your last message may not have "
                             "been sent.");
    else if (it->from && r->type == REDIS_REPLY_ERROR)
        chat_error(it->from, "Redis refused your message; it was not sent.");
    item_free(it);
}

/* Delivers a payload to this server's members of room (local: Redis did not carry it). */
static void deliver(const char *room, const char *p, size_t n, bool local)
{
    redis_wire_msg m;
    if (!redis_wire_decode(p, n, R.tag, &m))
        return;
    m.ev.room = room;
    m.ev.local = local;
    chat_room_deliver(room, m.ours ? m.sender : 0, &m.ev, m.history);
    chat_event_clear(&m.ev);
}

static void do_publish(void *arg)
{
    pub_item *it = arg;
    if (R.pub && atomic_load(&R.up) &&
        redisAsyncCommand(R.pub, on_published, it, "PUBLISH %s %b", it->chan, it->payload,
                          it->len) == REDIS_OK) {
        free(it->payload); /* hiredis has its own copy of the command */
        it->payload = NULL;
        return;
    }
    /* Redis is unreachable (now, or since the line was handed over): this server's
     * members still get it, marked, in the order the sender said it. */
    atomic_fetch_sub(&queued, 1);
    deliver(it->chan + strlen(R.prefix), it->payload, it->len, true);
    item_free(it);
}

int redis_publish(chat_room *r, chat_session *from, uint64_t except, chat_event *ev,
                  unsigned flags)
{
    if (atomic_fetch_add(&queued, 1) >= QUEUE_MAX) {
        atomic_fetch_sub(&queued, 1);
        return -EAGAIN;
    }
    const char *room = chat_room_name(r);
    size_t chan_len = strlen(R.prefix) + strlen(room), len;
    pub_item *it = malloc(sizeof(*it) + chan_len + 1);
    char *payload = it ? redis_wire_encode(ev, except, flags & CHAT_PUB_HISTORY, R.tag,
                                                 &len) : NULL;
    if (!payload) {
        free(it);
        atomic_fetch_sub(&queued, 1);
        return -ENOMEM;
    }
    *it = (pub_item){.from = from ? chat_session_retain(from) : NULL, .len = len,
                     .payload = payload};
    snprintf(it->chan, chan_len + 1, "%s%s", R.prefix, room);
    if (px_loop_post(R.loop, do_publish, it) != 0) {
        item_free(it);
        atomic_fetch_sub(&queued, 1);
        return -ENOMEM;
    }
    return 0;
}

void redis_on_pmessage(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    (void)priv;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 3)
        return;
    if (strcmp(r->element[0]->str, "psubscribe") == 0) {
        R.sub_ok = true;
        redis_became_up();
        return;
    }
    if (r->elements != 4 || strcmp(r->element[0]->str, "pmessage") != 0)
        return;
    const redisReply *chan = r->element[2], *msg = r->element[3];
    size_t pl = strlen(R.prefix);
    if (chan->len <= pl || chan->len - pl > CHAT_ROOM_MAX || msg->type != REDIS_REPLY_STRING)
        return;
    char room[CHAT_ROOM_MAX + 1];
    memcpy(room, chan->str + pl, chan->len - pl);
    room[chan->len - pl] = '\0';
    deliver(room, msg->str, msg->len, false);
}

/* "name\n" and a private message, on this server's own channel, from another server. */
void redis_on_direct(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    (void)priv;
    redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "message") != 0)
        return;
    const redisReply *msg = r->element[2];
    const char *nl = msg->type == REDIS_REPLY_STRING ? memchr(msg->str, '\n', msg->len) : NULL;
    redis_wire_msg m;
    if (!nl || !redis_wire_decode(nl + 1, msg->len - (size_t)(nl + 1 - msg->str), R.tag, &m))
        return;
    chat_tell(msg->str, (size_t)(nl - msg->str), &m.ev, NULL); /* gone: nobody to tell */
    chat_event_clear(&m.ev);
}
