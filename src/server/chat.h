/*
 * The chat core: sessions (session.c) and their names (registry.c), rooms (room.c),
 * commands (commands.c), events (event.c) and the server's life (core.c).  It knows no client protocol and no
 * Redis: what users do becomes events (door.h) handed to each recipient's door, and
 * anything beyond this server is asked of the bus (bus.h).
 *
 * Locking, outermost first:
 *   registry lock (registry.c)  nicknames, the session list, the client count
 *   rooms lock (room.c)         the room table and each room's reference count
 *   room->lock                  a room's members, history and message order
 * No lock is held across a handler; sends under a room lock are what keeps the room's
 * order the same for every member.
 */
#ifndef CHAT_H
#define CHAT_H

#include "bus.h"
#include "config.h"
#include "door.h"
#include "proactor.h"
#include "proto.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define CHAT_NICK_MAX 16
#define CHAT_ROOM_MAX 24
#define CHAT_LOBBY "lobby"

/* A session's place in one room: the room points at it (members[idx]); it stays where
 * it is in memory, so the room can update idx without the session's help. */
typedef struct chat_membership {
    chat_room *room;
    unsigned idx;                 /* in the room's member array, under room->lock */
    struct chat_membership *next; /* the session's rooms (own handlers) */
} chat_membership;

struct chat_session {
    const chat_door *door; /* the door keeps this struct inside its own state */
    uint64_t id;         /* unique on this server; set before the session is shared */
    char addr[64];
    /* Identity: written by the session's own handlers under the registry lock, read by
     * others under it. */
    char nick[CHAT_NICK_MAX + 1];
    char reserved[CHAT_NICK_MAX + 1]; /* a name held for a rename under way ("": none) */
    char where[CHAT_ROOM_MAX + 1];    /* its current room's name */
    bool published;                   /* named and counted online */
    bool idle_kicked;
    /* Membership (own handlers): the rooms it is in, and the one its lines go to (the
     * telnet door keeps it in one room at a time). */
    chat_room *room;
    chat_membership *rooms;
    /* Liveness. */
    _Atomic uint64_t last_active_ms;
    _Atomic(const char *) reason; /* why it is leaving; the first one set wins */
    char quit_msg[128];           /* "quit: ..." (own handlers) */
    _Atomic unsigned refs;        /* the door's, and each question in flight */
    void *asking; /* the context of a question to the bus (own handlers): freed with the
                     session if the answer never comes back (the session went first) */
    chat_session *prev, *next;    /* session list, under the registry lock */
};

/* ------------------------------------------------------------------------ */
/* For doors (core.c, commands.c, session.c)                                */

/* A new client at door: s (zeroed, inside the door's state for it) gets a guest name.
 * Returns 0, or -EUSERS (the server is full) or -ESHUTDOWN after telling the client
 * so: then the door closes it and frees s itself. */
int chat_session_init(chat_session *s, const chat_door *door, const char *addr);
/* Welcomes s (once the bus has named it): into the lobby, reachable by name. */
void chat_session_start(chat_session *s);
/* One complete line from s: sanitised, then a command or said to s's room. */
void chat_session_line(chat_session *s, const char *line, size_t len);
/* s's connection has closed (cause: a negative errno, or 0): it leaves its rooms and
 * its name.  The door's reference is dropped; door->free runs once nothing else holds
 * s. */
void chat_session_closed(chat_session *s, int cause);
/* Says ev (from s) to s's current room; kept for newcomers when history is set. */
void chat_session_say(chat_session *s, chat_event *ev, bool history);
/* A line of the server's to s alone: a reply, or an error. */
void chat_reply(chat_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void chat_error(chat_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sends ev to s in its door's format.  Returns door->send's result. */
int chat_send_event(chat_session *s, chat_event *ev);
/* Marks why s is leaving, unless a reason was already set. */
void chat_set_reason(chat_session *s, const char *reason);
chat_session *chat_session_retain(chat_session *s);
void chat_session_release(chat_session *s);

/* ------------------------------------------------------------------------ */
/* For buses (registry.c, room.c)                                            */

/* Delivers ev (a CHAT_EV_PRIVATE) to the user of this server called name (any case),
 * writing the name as shown to shown[] (may be NULL).  DONE, REFUSED (nobody here has
 * it) or FULL. */
chat_bus_status chat_tell(const char *name, size_t len, chat_event *ev,
                          char shown[CHAT_NICK_MAX + 1]);
/* Calls fn for each user of this server that has a name (under the registry lock: fn
 * must not call back into the core). */
void chat_presence_each(void (*fn)(const char *name, const char *room, void *ctx), void *ctx);
/* Sends a server notice to every user of this server. */
void chat_notice_all(const char *text);
/* This server's users in room (users[i].name and .room point into *owner), or NULL
 * when out of memory; free(*owner) and free the result after use. */
chat_bus_user *chat_local_users(const char *room, size_t *n, char **owner);
/* This server's rooms and their member counts (the names point into the result's own
 * memory: one free()), or NULL when out of memory. */
chat_bus_room *chat_local_rooms(size_t *n);

/* Delivers ev to every member of r on this server but the session with id except (0:
 * none); flags: CHAT_PUB_* (bus.h). */
void chat_room_send(chat_room *r, uint64_t except, chat_event *ev, unsigned flags);
/* The same for the room called name, if anyone here is in it; kept in its history when
 * history is set. */
void chat_room_deliver(const char *name, uint64_t except, chat_event *ev, bool history);
const char *chat_room_name(const chat_room *r);

/* ------------------------------------------------------------------------ */
/* The server (core.c)                                                       */

/* Starts the core on loop with bus below it.  Returns 0, or -ENOMEM. */
int chat_init(const srv_config *cfg, px_loop *loop, const chat_bus *bus);
unsigned chat_online(void);
/* For tests: sessions (online or not), names and rooms the server holds now. */
void chat_census(unsigned *sessions, unsigned *names, unsigned *rooms);
/* Tells every client the server is going, closes them gracefully and has
 * px_loop_stop(loop) called when the last one has gone.  Returns how many clients
 * there were. */
unsigned chat_shutdown(px_loop *loop);
/* After px_loop_destroy: frees what is left. */
void chat_fini(void);

/* ------------------------------------------------------------------------ */
/* Inside the core                                                           */

extern const srv_config *chat_cfg;
extern const chat_bus *chat_bus_now;

/* registry.c */
int chat_registry_init(unsigned max_clients);
void chat_registry_fini(void);
/* Adds s under a fresh guest name; *count: sessions now.  0, -EUSERS (full) or
 * -ESHUTDOWN. */
int chat_registry_add(chat_session *s, unsigned *count);
/* s is in its room: reachable by name and counted online.  Returns the online count. */
unsigned chat_registry_publish(chat_session *s);
/* Takes s out; *stop: the loop to stop when s was the last one at shutdown. */
unsigned chat_registry_del(chat_session *s, px_loop **stop);
bool chat_registry_closing(void);
/* Sets the server closing (stop: the loop to stop when the last client has gone). */
void chat_registry_close(px_loop *stop);
/* Reserves name for s (hidden: nobody reaches s by it until chat_registry_rename).
 * 0, -EEXIST (someone else has it) or -ENOMEM. */
int chat_registry_reserve(chat_session *s, const char *name);
/* s is now called its reserved name; its old name is free.  Writes the old to old[]. */
void chat_registry_rename(chat_session *s, char old[CHAT_NICK_MAX + 1]);
void chat_registry_unreserve(chat_session *s);
/* Takes name (given by the bus) for s unless this server has it already. */
bool chat_registry_take_guest(chat_session *s, const char *name);
void chat_registry_where(chat_session *s);
unsigned chat_registry_count(void);
/* Retains the sessions (those idle since before idle_before, when it is non-zero), at
 * most max, into a new array, giving each reason; *count of them. */
chat_session **chat_registry_collect(uint64_t idle_before, const char *reason, unsigned max,
                                     unsigned *count);

/* room.c */
void chat_rooms_init(unsigned history, size_t replay_bytes, unsigned announce,
                     const chat_bus *bus);
void chat_rooms_fini(void);
unsigned chat_rooms_count(void);
/* The room called name with a reference taken (chat_room_put), or NULL. */
chat_room *chat_room_find(const char *name);
void chat_room_put(chat_room *r);
/* s enters the room called name (normalised), created if needed: s gets "You are in"
 * and the history, the room (if small enough) the join notice; it becomes s's
 * current room.  Returns the room, or NULL when out of memory. */
chat_room *chat_room_enter(const char *name, chat_session *s);
/* s leaves r; notice (may be NULL) goes to the remaining members. */
void chat_room_leave(chat_room *r, chat_session *s, chat_event *notice);
/* Writes up to max members' nicknames into out[] (call with the registry lock held,
 * which guards nicknames) and returns the member count. */
unsigned chat_room_nicks(chat_room *r, const char **out, unsigned max);
/* Sends bye (may be NULL) to every member of every room and closes them gracefully, a
 * room at a time under its lock: a line relayed to a room meanwhile reaches all of its
 * members or none (shutdown). */
void chat_rooms_close_all(chat_event *bye);
/* A notice about about (may be NULL) to r: through the bus, or to this server's
 * members of r when the bus cannot take it now.  flags: 0, or CHAT_PUB_LOCKED. */
void chat_notify(chat_room *r, chat_session *about, chat_event *ev, unsigned flags);

#endif
