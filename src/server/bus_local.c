/*
 * The local bus: this server alone.  Every question is answered at once from this
 * server's registry and rooms; what is said in a room goes straight to its members.
 */
#include "chat.h"

#include <stdlib.h>
#include <string.h>

static int local_publish(chat_room *r, chat_session *from, uint64_t except, chat_event *ev,
                         unsigned flags)
{
    (void)from;
    chat_room_send(r, except, ev, flags);
    return 0;
}

/* Names are the registry's: whatever it reserved is the session's. */
static int local_claim(chat_session *s, const char *name, chat_bus_done *done, void *ctx)
{
    (void)name;
    done(s, &(chat_bus_answer){.status = CHAT_BUS_DONE}, ctx);
    return 0;
}

static void local_release(const char *name)
{
    (void)name;
}

int chat_bus_local_who(chat_session *s, const char *room, bool partial, chat_bus_done *done,
                       void *ctx)
{
    char *owner;
    size_t n;
    chat_bus_user *users = chat_local_users(room, &n, &owner);
    if (!users)
        return -ENOMEM;
    done(s, &(chat_bus_answer){.partial = partial, .users = users, .nusers = n}, ctx);
    free(users);
    free(owner);
    return 0;
}

static int local_who(chat_session *s, const char *room, chat_bus_done *done, void *ctx)
{
    return chat_bus_local_who(s, room, false, done, ctx);
}

int chat_bus_local_rooms(chat_session *s, bool partial, chat_bus_done *done, void *ctx)
{
    size_t n;
    chat_bus_room *rooms = chat_local_rooms(&n);
    if (!rooms)
        return -ENOMEM;
    done(s, &(chat_bus_answer){.partial = partial, .rooms = rooms, .nrooms = n}, ctx);
    free(rooms);
    return 0;
}

static int local_rooms(chat_session *s, chat_bus_done *done, void *ctx)
{
    return chat_bus_local_rooms(s, false, done, ctx);
}

static int local_msg(chat_session *s, const char *name, chat_event *ev, chat_bus_done *done,
                     void *ctx)
{
    char shown[CHAT_NICK_MAX + 1] = "";
    chat_bus_status st = chat_tell(name, strlen(name), ev, shown);
    done(s, &(chat_bus_answer){.status = st, .name = shown}, ctx);
    return 0;
}

static int local_move(chat_session *s, const char *room, chat_bus_done *done, void *ctx)
{
    (void)room;
    done(s, &(chat_bus_answer){.status = CHAT_BUS_DONE}, ctx);
    return 0;
}

static void local_leave(chat_session *s)
{
    (void)s;
}

static const char *local_greeting(void)
{
    return NULL;
}

static void local_stop(void)
{
}

const chat_bus chat_bus_local = {
    .name = "local",
    .publish = local_publish,
    .claim = local_claim,
    .release = local_release,
    .who = local_who,
    .rooms = local_rooms,
    .msg = local_msg,
    .move = local_move,
    .leave = local_leave,
    .greeting = local_greeting,
    .stop = local_stop,
};
