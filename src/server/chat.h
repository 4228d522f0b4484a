/*
 * The chat server's shared types: a session per client (session.c) and the
 * rooms they talk in (room.c).  Locking, outermost first:
 *   registry lock (session.c)  nicknames, the session list, the client count
 *   rooms lock (room.c)        the room table and each room's reference count
 *   room->lock                 a room's members, history and message order
 * No lock is held across a handler; sends under a room lock are what keeps
 * the room's order the same for every member.
 */
#ifndef CHAT_H
#define CHAT_H

#include "config.h"
#include "proactor.h"
#include "proto.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define CHAT_NICK_MAX 16
#define CHAT_ROOM_MAX 24
#define CHAT_LOBBY "lobby"

typedef struct chat_room chat_room;

typedef struct chat_session {
    px_stream *stream;
    uint64_t id;        /* unique on this server; set before the session is shared */
    char addr[64];
    /* Written by the session's own handlers under the registry lock; read
     * by others under it. */
    char nick[CHAT_NICK_MAX + 1];
    chat_room *room;    /* own handlers only */
    unsigned room_idx;  /* under room->lock */
    chat_framer framer; /* own handlers only */
    double tokens;      /* flood bucket, own handlers only */
    uint64_t tokens_ms;
    _Atomic uint64_t last_active_ms;
    _Atomic(const char *) reason; /* why it is leaving; the first one set wins */
    char quit_msg[128];           /* "quit: ..." (own handlers) */
    bool idle_kicked;             /* under the registry lock */
    bool published;               /* named and counted online; registry lock */
    char where[CHAT_ROOM_MAX + 1]; /* its room's name, under the registry lock */
    /* A question to the cluster in flight (own handlers): the session reads no
     * more lines until its answer has been handled. */
    bool waiting;
    uint64_t wait_until_ms;                 /* when to stop waiting (out of memory) */
    uint64_t read_after_ms;                 /* the flood limit's pause, kept across waits */
    bool reserving;                         /* pending_name is reserved here (registry lock) */
    char *pending_text;                     /* /msg: the text, for the echo */
    char pending_name[CHAT_NICK_MAX + 1];   /* /nick: the new name; /msg: the target */
    char pending_room[CHAT_ROOM_MAX + 1];   /* /join: where to */
    struct chat_session *prev, *next; /* session list, under the registry lock */
} chat_session;

/* session.c */
extern const px_stream_handlers chat_session_handlers;
/* Returns 0, or -ENOMEM. */
int chat_init(const srv_config *cfg, px_loop *loop);
unsigned chat_online(void);
/* For tests: sessions (online or not), names and rooms the server holds now. */
void chat_census(unsigned *sessions, unsigned *names, unsigned *rooms);
/* Calls fn for each local user that has a name (under the registry lock: fn must not
 * call back into the registry). */
void chat_presence_each(void (*fn)(const char *name, const char *room, void *ctx), void *ctx);
/* Sends line to the local user called name (any case); 0, -ENOENT, or chat_send's error. */
int chat_tell(const char *name, size_t len, px_buf *line);
/* Tells every client the server is going, closes them gracefully and has
 * px_loop_stop(loop) called when the last one has gone.  Returns how many
 * clients there were. */
unsigned chat_shutdown(px_loop *loop);
/* After px_loop_destroy: frees what is left. */
void chat_fini(void);
/* Sends b to s; a full queue drops s as too slow.  Returns px_stream_send's
 * result. */
int chat_send(chat_session *s, px_buf *b);
/* A buffer holding the formatted text and CRLF, or NULL (out of memory). */
px_buf *chat_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Sends a server line to every client (chat mode). */
void chat_notice_all(const char *text);
/* Marks why s is leaving, unless a reason was already set. */
void chat_set_reason(chat_session *s, const char *reason);

/* room.c */
/* history: messages kept per room; replayed to a newcomer up to
 * replay_bytes (the newest ones), so a replay never fills its queue.
 * announce: join and leave notices go out only in rooms of at most this many
 * members (counting the one joining or leaving). */
void chat_rooms_init(unsigned history, size_t replay_bytes, unsigned announce);
void chat_rooms_fini(void);
unsigned chat_rooms_count(void); /* rooms that exist now */
/* Enters the room named name (normalised), creating it if needed.  Under
 * the room's lock, when announce is set: s receives "You are in" and the
 * history, the others the join notice (in a small enough room); then s
 * becomes a member.  Returns the
 * room, or NULL when out of memory. */
chat_room *chat_room_enter(const char *name, chat_session *s, bool announce);
/* Sends msg to every member of the room named name on this server but the
 * session with id except (0: none), and keeps it in the room's history if
 * asked: a line that came back from the cluster.  Nothing when nobody here is
 * in the room. */
void chat_room_deliver(const char *name, uint64_t except, px_buf *msg, bool history);
/* Sends bye (may be NULL) to every member of every room and closes them
 * gracefully, a room at a time under its lock: a line relayed to a room
 * meanwhile reaches all of its members or none (shutdown). */
void chat_rooms_close_all(px_buf *bye);
/* Leaves r; notice (may be NULL) goes to the remaining members. */
void chat_room_leave(chat_room *r, chat_session *s, px_buf *notice);
/* Sends msg to every member but from (NULL: everyone), in the room's order;
 * kept for new members when history is set. */
void chat_room_send(chat_room *r, chat_session *from, px_buf *msg, bool history);
const char *chat_room_name(const chat_room *r);
/* Writes up to max members' nicknames into out[] (call with the registry
 * lock held, which guards nicknames) and returns the member count. */
unsigned chat_room_nicks(chat_room *r, const char **out, unsigned max);
/* Writes "name (members), ..." for every room into buf (truncated with
 * "..." past cap) and returns the number of rooms. */
/* Appends "name (members)" (after ", " unless first) to the list in buf; false, with
 * "..." at the end, when it does not fit. */
bool chat_rooms_append(char *buf, size_t cap, size_t *len, const char *name, unsigned members);
unsigned chat_rooms_list(char *buf, size_t cap);

#endif
