/*
 * The bus: the seam below the chat core, the only place that knows whether other
 * servers exist.  Two implementations: bus_local.c (this server alone: every answer at
 * once, from this server's registry and rooms) and bus_redis*.c (servers sharing names,
 * rooms and private messages through Redis).  What happens while Redis is away is
 * decided by the Redis bus alone: the core sees answers, some marked partial.
 *
 * Questions (claim, who, rooms, msg, move) answer through done, exactly once, with the
 * asking session s: at once (the local bus), or later in s's own order, with s's input
 * held meanwhile (door.h: hold/release).  They return 0 when done has run or will run,
 * or a negative errno when it will not (out of memory).
 */
#ifndef CHAT_BUS_H
#define CHAT_BUS_H

#include "door.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct chat_room chat_room;

typedef enum chat_bus_status {
    CHAT_BUS_DONE,    /* done */
    CHAT_BUS_REFUSED, /* claim: the name is taken; msg: nobody has that name */
    CHAT_BUS_FULL,    /* msg: the recipient could not take it */
    CHAT_BUS_SLOW,    /* the other servers did not answer in time: perhaps not done */
} chat_bus_status;

typedef struct chat_bus_user {
    const char *name, *room;
} chat_bus_user;

typedef struct chat_bus_room {
    const char *name;
    unsigned members;
} chat_bus_room;

typedef struct chat_bus_answer {
    chat_bus_status status;
    bool partial;       /* from this server only: the others could not be asked */
    const char *name;   /* claim: the name given (NULL: keep yours); msg: the recipient */
    const chat_bus_user *users; /* who */
    size_t nusers;
    const chat_bus_room *rooms; /* rooms */
    size_t nrooms;
} chat_bus_answer;

typedef void chat_bus_done(chat_session *s, const chat_bus_answer *a, void *ctx);

/* How an event is said in a room (publish). */
enum {
    CHAT_PUB_HISTORY = 1, /* kept for newcomers (messages, not notices) */
    CHAT_PUB_LOCKED = 2,  /* the caller holds the room's lock: a notice of a membership
                             change, which falls exactly where the change does */
};

typedef struct chat_bus {
    const char *name;
    /* Says ev in r: every member of r on every server but the session with id except
     * (0: none) gets it, all in r's one order; flags: CHAT_PUB_*.  from (may be NULL) is
     * told if it is lost on the way.  Returns 0, -EAGAIN (too many lines wait for the
     * other servers: refused), or -ENOMEM.  Any thread. */
    int (*publish)(chat_room *r, chat_session *from, uint64_t except, chat_event *ev,
                   unsigned flags);
    /* s, in its room, takes name (NULL: a fresh guest name, given in a->name, or NULL
     * to keep the one this server gave), dropping its current one once it has it. */
    int (*claim)(chat_session *s, const char *name, chat_bus_done *done, void *ctx);
    /* A name claimed for s is not wanted after all.  Any thread. */
    void (*release)(const char *name);
    /* Users in room (a->users), or every room with its member count (a->rooms). */
    int (*who)(chat_session *s, const char *room, chat_bus_done *done, void *ctx);
    int (*rooms)(chat_session *s, chat_bus_done *done, void *ctx);
    /* Delivers ev (a CHAT_EV_PRIVATE) to the user called name, wherever. */
    int (*msg)(chat_session *s, const char *name, chat_event *ev, chat_bus_done *done,
               void *ctx);
    /* s moves to room: answered once every server knows. */
    int (*move)(chat_session *s, const char *room, chat_bus_done *done, void *ctx);
    /* s, which had a name, has gone.  Any thread. */
    void (*leave)(chat_session *s);
    /* A line for a newcomer about the bus (NULL: nothing to say). */
    const char *(*greeting)(void);
    /* Disconnects at shutdown (main thread, the loop stopped), saying goodbye for
     * this server's users. */
    void (*stop)(void);
} chat_bus;

extern const chat_bus chat_bus_local;

/* The local bus's answers, for other buses to fall back on (partial: say that they
 * come from this server only). */
int chat_bus_local_who(chat_session *s, const char *room, bool partial, chat_bus_done *done,
                       void *ctx);
int chat_bus_local_rooms(chat_session *s, bool partial, chat_bus_done *done, void *ctx);

#endif
