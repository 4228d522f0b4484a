/*
 * Doors: the seam above the chat core, one per client protocol.  What the core says
 * is an event (who did what, where); a door turns an event into the bytes its clients
 * read, and its clients' bytes into calls of the core (chat.h).  Adding a client
 * protocol adds a door, not branches in the core.
 *
 * An event is formatted at most once per door kind however many clients receive it:
 * the formatted buffer is kept in the event (chat_event_bytes) and shared by every
 * recipient's send queue.
 */
#ifndef CHAT_DOOR_H
#define CHAT_DOOR_H

#include "proactor.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

typedef struct chat_session chat_session;

/* Doors whose clients read the same bytes share a kind (and so one formatted copy of
 * each event). */
typedef enum chat_door_kind {
    CHAT_DOOR_TELNET, /* chat mode: "<nick> text" lines for telnet and nc */
    CHAT_DOOR_RAW,    /* --raw: the original relay, lines as they were sent */
    CHAT_DOOR_KINDS
} chat_door_kind;

typedef enum chat_event_kind {
    CHAT_EV_MESSAGE, /* from said text in room */
    CHAT_EV_ACTION,  /* from did text (/me) in room */
    CHAT_EV_PRIVATE, /* from said text to the recipient only */
    CHAT_EV_PM_SENT, /* the sender's copy of a private message to `to` */
    CHAT_EV_JOIN,    /* from joined room */
    CHAT_EV_LEAVE,   /* from left; text: why */
    CHAT_EV_MOVE,    /* from left room for the room `to` */
    CHAT_EV_RENAME,  /* from is now known as `to` */
    CHAT_EV_NOTICE,  /* the server's text, to everyone it concerns */
    CHAT_EV_REPLY,   /* the server's text, to one session: an answer to a command */
    CHAT_EV_ERROR,   /* the server's text, to one session: what went wrong */
} chat_event_kind;

/* Strings are borrowed: valid for as long as the event is in use (chat_event_copy
 * makes one that owns them). */
typedef struct chat_event {
    chat_event_kind kind;
    bool local;       /* delivered on this server only: the others could not be reached */
    const char *from; /* a nickname */
    const char *to;   /* PM_SENT: the recipient as shown; MOVE: a room; RENAME: a nickname */
    const char *room;
    const char *text;
    size_t len;       /* of text */
    px_buf *as[CHAT_DOOR_KINDS]; /* formatted for each door kind, as needed */
} chat_event;

typedef struct chat_door {
    const char *name;
    chat_door_kind kind;
    /* The bytes of ev for this door's clients (a new reference), or NULL: nothing to
     * show (the raw relay shows only messages) or out of memory. */
    px_buf *(*format)(const chat_event *ev);
    /* Queues b (retained as needed) for s; a full queue drops s as too slow.
     * Returns 0 or a negative errno (PX_ESENDQ: s is being dropped).  Any thread. */
    int (*send)(chat_session *s, px_buf *b);
    /* Ends s's connection: last (may be NULL) is queued first if it fits, then the
     * connection closes after what is queued (graceful) or at once.  Any thread. */
    void (*close)(chat_session *s, px_buf *last, bool graceful);
    /* Runs fn(s, arg) in s's own order: never beside the handling of its input.
     * Returns 0 (fn will run exactly once), or a negative errno when s is closing or
     * closed (fn never runs).  Any thread. */
    int (*call)(chat_session *s, void (*fn)(chat_session *s, void *arg), void *arg);
    /* hold: s's further input waits, unread and in order, until release (a question
     * to the bus is in flight).  From s's own handlers or calls. */
    void (*hold)(chat_session *s);
    void (*release)(chat_session *s);
    /* The session's memory is going: frees what the door keeps for it. */
    void (*free)(chat_session *s);
} chat_door;

/* ev's bytes for door's clients, formatted on first use and kept in ev (borrowed:
 * valid until chat_event_clear), or NULL. */
px_buf *chat_event_bytes(chat_event *ev, const chat_door *door);
/* Releases the formatted buffers kept in ev. */
void chat_event_clear(chat_event *ev);
/* A copy owning its strings and references to ev's buffers; NULL when out of memory.
 * Freed with chat_event_free. */
chat_event *chat_event_copy(const chat_event *ev);
void chat_event_free(chat_event *ev);

/* A buffer holding the formatted text and CRLF, or NULL (out of memory). */
px_buf *chat_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A piece of a line; chat_piece_of(s) for a string (NULL: an empty one). */
typedef struct chat_piece {
    const char *p;
    size_t len;
} chat_piece;
static inline chat_piece chat_piece_of(const char *s)
{
    return (chat_piece){s ? s : "", s ? strlen(s) : 0};
}
/* A buffer holding the n pieces one after another and CRLF, or NULL (out of memory):
 * what chat_fmt does, without parsing a format (doors format every relayed line). */
px_buf *chat_line(const chat_piece *pieces, size_t n);

#endif
