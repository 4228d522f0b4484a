/*
 * Questions to Redis (bus_redis.h): a claim of a name, a list of users or rooms, a
 * private message to another server's user, a move.  The asking session's input is
 * held until the answer comes back in its own order (door->call).  Redis unreachable,
 * or slower than ASK_TIMEOUT_MS: the answer is this server's own, marked partial, or
 * "slow" where only the others could have answered.
 */
#include "bus_redis.h"

#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* How long a question may wait for Redis: a Redis that stopped answering (but kept
 * its connections) then costs the asker this much, and nobody else anything. */
#define ASK_TIMEOUT_MS 2000

typedef enum ask_kind { ASK_CLAIM, ASK_WHO, ASK_ROOMS, ASK_MSG, ASK_MOVE } ask_kind;

/* A question in flight: from the asking session to Redis and back. */
typedef struct ask {
    chat_session *s; /* retained */
    ask_kind kind;
    chat_bus_done *done;
    void *ctx;
    redis_args args;
    bool timed_out; /* answered "unreachable" already; Redis's answer is dropped */
    px_timer *timer;
    char room[CHAT_ROOM_MAX + 1]; /* who: the room asked about */
    /* Redis's reply: status 1 done, 0 refused (''), -1 unreachable or failed. */
    int status;
    char *text;
    char **items; /* lists: "NAME\tROOM" of each user */
    size_t nitems;
} ask;

static void ask_free(ask *q)
{
    redis_args_free(&q->args);
    free(q->text);
    for (size_t i = 0; i < q->nitems; i++)
        free(q->items[i]);
    free(q->items);
    chat_session_release(q->s);
    free(q);
}

static int by_name(const void *a, const void *b)
{
    return strcasecmp(*(char *const *)a, *(char *const *)b);
}

/* "NAME\tROOM" items, sorted by name, as users. */
static void answer_who(ask *q)
{
    chat_bus_user *users = malloc((q->nitems ? q->nitems : 1) * sizeof(*users));
    if (!users) {
        chat_bus_local_who(q->s, q->room, true, q->done, q->ctx);
        return;
    }
    qsort(q->items, q->nitems, sizeof(*q->items), by_name);
    for (size_t i = 0; i < q->nitems; i++) {
        char *tab = strchr(q->items[i], '\t');
        if (tab)
            *tab = '\0';
        users[i] = (chat_bus_user){.name = q->items[i], .room = tab ? tab + 1 : ""};
    }
    q->done(q->s, &(chat_bus_answer){.users = users, .nusers = q->nitems}, q->ctx);
    free(users);
}

static int by_room(const void *a, const void *b)
{
    return strcmp(((const chat_bus_room *)a)->name, ((const chat_bus_room *)b)->name);
}

/* "NAME\tROOM" items as rooms, sorted by name, with their member counts. */
static void answer_rooms(ask *q)
{
    chat_bus_room *rooms = malloc((q->nitems ? q->nitems : 1) * sizeof(*rooms));
    if (!rooms) {
        chat_bus_local_rooms(q->s, true, q->done, q->ctx);
        return;
    }
    size_t n = 0, distinct = 0;
    for (size_t i = 0; i < q->nitems; i++) {
        const char *tab = strchr(q->items[i], '\t');
        if (tab)
            rooms[n++] = (chat_bus_room){.name = tab + 1, .members = 1};
    }
    qsort(rooms, n, sizeof(*rooms), by_room);
    for (size_t i = 0; i < n; i++) {
        if (distinct && strcmp(rooms[distinct - 1].name, rooms[i].name) == 0)
            rooms[distinct - 1].members++;
        else
            rooms[distinct++] = rooms[i];
    }
    q->done(q->s, &(chat_bus_answer){.rooms = rooms, .nrooms = distinct}, q->ctx);
    free(rooms);
}

/* Redis's reply (or its absence) as the core's answer. */
static void answer(ask *q)
{
    chat_bus_answer a = {.status = CHAT_BUS_DONE};
    switch (q->kind) {
    case ASK_CLAIM:
        if (q->status == 0)
            a.status = CHAT_BUS_REFUSED;
        else if (q->status < 0 && atomic_load(&R.up))
            a.status = CHAT_BUS_SLOW; /* the claim may still happen: dirty, see on_answer */
        else if (q->status > 0)
            a.name = q->text;
        /* else Redis is unreachable: unique here, claimed again at reconnection */
        break;
    case ASK_WHO:
        if (q->status <= 0)
            chat_bus_local_who(q->s, q->room, true, q->done, q->ctx);
        else
            answer_who(q);
        return;
    case ASK_ROOMS:
        if (q->status <= 0)
            chat_bus_local_rooms(q->s, true, q->done, q->ctx);
        else
            answer_rooms(q);
        return;
    case ASK_MSG:
        a.status = q->status > 0 ? CHAT_BUS_DONE : q->status == 0 ? CHAT_BUS_REFUSED
                                                                 : CHAT_BUS_SLOW;
        a.name = q->text;
        break;
    case ASK_MOVE: /* done, or told again with everything else at reconnection */
        break;
    }
    q->done(q->s, &a, q->ctx);
}

/* In the session's own order. */
static void ask_run(chat_session *s, void *arg)
{
    ask *q = arg;
    s->door->release(s);
    answer(q);
    ask_free(q);
}

/* Back to the session, in its order (q goes with it). */
static void ask_answer(ask *q)
{
    if (q->s->door->call(q->s, ask_run, q) == 0)
        return;
    if (q->kind == ASK_CLAIM && q->status == 1) /* the session has gone: so has its name */
        redis_release(q->text);
    ask_free(q);
}

/* Redis's reply to the question. */
static void ask_parse(ask *q, const redisReply *r)
{
    q->status = -1;
    if (r && r->type == REDIS_REPLY_STRING) {
        q->status = r->len > 0;
        if (!(q->text = strdup(r->str)))
            q->status = -1;
    } else if (r && r->type == REDIS_REPLY_INTEGER) {
        q->status = 1;
    } else if (r && r->type == REDIS_REPLY_ARRAY) {
        q->items = calloc(r->elements ? r->elements : 1, sizeof(*q->items));
        q->status = q->items ? 1 : -1;
        for (size_t i = 0; q->items && i < r->elements; i++) {
            if (r->element[i]->type == REDIS_REPLY_STRING &&
                (q->items[q->nitems] = strdup(r->element[i]->str)))
                q->nitems++;
        }
    } else if (r && r->type == REDIS_REPLY_ERROR) {
        srv_log(SRV_LOG_ERROR, "cluster: Redis refused a question: %s", r->str);
    }
}

static void on_answer(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    ask *q = priv;
    ask_parse(q, reply);
    if (q->timer)
        px_timer_cancel(q->timer);
    q->timer = NULL;
    bool claim = q->kind == ASK_CLAIM;
    if (claim && reply && q->status < 0)
        R.dirty = true; /* refused (an error): the session goes on with a local name */
    if (!q->timed_out) {
        ask_answer(q);
        return;
    }
    /* Too late: the session went on without this answer (keeping its old or a local
     * name), but the claim may have happened: give the name back, and write this
     * server's names anew at the next beat, once the session has its local name. */
    if (claim && q->status == 1)
        redis_release(q->text);
    if (claim)
        R.dirty = true;
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
    *now = *q;
    now->s = chat_session_retain(q->s);
    now->args = (redis_args){0};
    now->status = -1;
    ask_answer(now);
}

static void ask_send(void *arg)
{
    ask *q = arg;
    redis_args a = q->args;
    q->args = (redis_args){0};
    bool sent = !a.failed && R.pub && atomic_load(&R.up) &&
                redisAsyncCommandArgv(R.pub, on_answer, q, a.argc, (const char **)a.argv,
                                      a.len) == REDIS_OK;
    redis_args_free(&a);
    if (!sent) {
        q->status = -1;
        ask_answer(q);
        return;
    }
    if (px_timer_start(R.loop, &q->timer, ASK_TIMEOUT_MS, 0, ask_expired, q) != 0)
        q->timer = NULL;
}

static ask *ask_new(chat_session *s, ask_kind kind, const char *script, chat_bus_done *done,
                    void *ctx)
{
    ask *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    *q = (ask){.s = chat_session_retain(s), .kind = kind, .done = done, .ctx = ctx};
    redis_args_script(&q->args, script);
    return q;
}

/* Hands q to the loop thread, s's input held until the answer. */
static int ask_post(ask *q)
{
    chat_session *s = q->s;
    s->door->hold(s);
    if (q->args.failed || px_loop_post(R.loop, ask_send, q) != 0) {
        s->door->release(s);
        ask_free(q);
        return -ENOMEM;
    }
    return 0;
}

int redis_claim(chat_session *s, const char *name, chat_bus_done *done, void *ctx)
{
    if (!atomic_load(&R.up)) { /* unique here; claimed when Redis is back */
        done(s, &(chat_bus_answer){.status = CHAT_BUS_DONE}, ctx);
        return 0;
    }
    ask *q = ask_new(s, ASK_CLAIM, REDIS_LUA_CLAIM, done, ctx);
    if (!q)
        return -ENOMEM;
    redis_args_str(&q->args, R.tag);
    redis_args_str(&q->args, R.ttl);
    redis_args_name(&q->args, name ? name : "");
    redis_args_str(&q->args, name ? name : "");
    redis_args_str(&q->args, s->room ? chat_room_name(s->room) : CHAT_LOBBY);
    redis_args_name(&q->args, name ? s->nick : "");
    return ask_post(q);
}

int redis_move(chat_session *s, const char *room, chat_bus_done *done, void *ctx)
{
    ask *q = atomic_load(&R.up) ? ask_new(s, ASK_MOVE, REDIS_LUA_MOVE, done, ctx) : NULL;
    char value[CHAT_NICK_MAX + CHAT_ROOM_MAX + 2];
    snprintf(value, sizeof(value), "%s\t%s", s->nick, room);
    if (q) {
        redis_args_str(&q->args, R.tag);
        redis_args_str(&q->args, R.ttl);
        redis_args_name(&q->args, s->nick);
        redis_args_str(&q->args, value);
        if (ask_post(q) == 0)
            return 0;
    }
    /* Unreachable (or out of memory): every list is written anew at reconnection. */
    done(s, &(chat_bus_answer){.status = CHAT_BUS_DONE}, ctx);
    return 0;
}

int redis_who(chat_session *s, const char *room, chat_bus_done *done, void *ctx)
{
    ask *q = atomic_load(&R.up) ? ask_new(s, ASK_WHO, REDIS_LUA_LIST, done, ctx) : NULL;
    if (q) {
        snprintf(q->room, sizeof(q->room), "%s", room);
        redis_args_str(&q->args, room);
        if (ask_post(q) == 0)
            return 0;
    }
    return chat_bus_local_who(s, room, true, done, ctx);
}

int redis_rooms(chat_session *s, chat_bus_done *done, void *ctx)
{
    ask *q = atomic_load(&R.up) ? ask_new(s, ASK_ROOMS, REDIS_LUA_LIST, done, ctx) : NULL;
    if (q) {
        redis_args_str(&q->args, "");
        if (ask_post(q) == 0)
            return 0;
    }
    return chat_bus_local_rooms(s, true, done, ctx);
}

int redis_msg(chat_session *s, const char *name, chat_event *ev, chat_bus_done *done,
              void *ctx)
{
    char shown[CHAT_NICK_MAX + 1] = "";
    chat_bus_status st = chat_tell(name, strlen(name), ev, shown);
    if (st != CHAT_BUS_REFUSED || !atomic_load(&R.up)) {
        done(s, &(chat_bus_answer){.status = st, .name = shown}, ctx);
        return 0;
    }
    /* Not here: perhaps on another server. */
    size_t len;
    char *payload = redis_wire_encode(ev, 0, false, R.tag, &len);
    ask *q = payload ? ask_new(s, ASK_MSG, REDIS_LUA_MSG, done, ctx) : NULL;
    if (!q) {
        free(payload);
        return -ENOMEM;
    }
    redis_args_name(&q->args, name);
    redis_args_add(&q->args, payload, len);
    free(payload);
    return ask_post(q);
}

void redis_release(const char *name)
{
    redis_args a = {0};
    redis_args_script(&a, REDIS_LUA_DROP);
    redis_args_str(&a, R.tag);
    redis_args_name(&a, name);
    redis_args_post(&a);
}

void redis_leave(chat_session *s)
{
    redis_release(s->nick);
}
