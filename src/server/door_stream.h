/*
 * What the doors on a byte stream share (door_stream.c): one px_stream per client,
 * lines cut by the framer (proto.c), the flood limit, holds while the bus answers,
 * and a full send queue dropping the client as too slow.  Each such door (telnet,
 * raw) says what a line does and how an event looks.
 */
#ifndef CHAT_DOOR_STREAM_H
#define CHAT_DOOR_STREAM_H

#include "chat.h"

typedef struct stream_client {
    chat_session s; /* first: the core's part of this client */
    px_stream *st;  /* retained until the session is freed */
    chat_framer framer;
    double tokens; /* flood bucket */
    uint64_t tokens_ms;
    bool held;               /* a question to the bus is in flight: input waits */
    uint64_t held_until_ms;  /* when to stop waiting (an answer lost for want of memory) */
    uint64_t read_after_ms;  /* the flood limit's pause, kept across holds */
} stream_client;

/* What a door gathers over one chunk of input (the raw relay: its lines, sent as
 * one buffer). */
typedef struct stream_chunk {
    char *p;
    size_t len, cap;
} stream_chunk;

typedef struct stream_door {
    chat_door door; /* first */
    /* For px_listen and px_stream_open (with a NULL user pointer): on_open is the
     * door's own, which calls chat_stream_open with the door; the others are shared.
     * The door is not passed as the user pointer, since a stream that closes before
     * it opens gets on_close with that pointer. */
    px_stream_handlers handlers;
    bool telnet;    /* the framer's telnet filter (chat mode) */
    /* A complete line (chat mode: without its terminator; raw: with it). */
    void (*line)(stream_client *c, const char *line, size_t len, stream_chunk *chunk);
    /* The chunk is done (may be NULL). */
    void (*chunk_end)(stream_client *c, stream_chunk *chunk);
    /* A line passed --max-line: it is being discarded. */
    void (*too_long)(stream_client *c);
} stream_door;

extern const stream_door chat_door_telnet;
extern const stream_door chat_door_raw;

/* The handlers every stream door shares; its on_open calls chat_stream_open. */
void chat_stream_open(px_stream *st, const stream_door *d);
void chat_stream_on_data(px_stream *st, const char *bytes, size_t len, void *user);
void chat_stream_on_close(px_stream *st, int cause, void *user);
#define CHAT_STREAM_HANDLERS(open)                                                        \
    .handlers = {.on_open = (open), .on_data = chat_stream_on_data,                       \
                 .on_close = chat_stream_on_close}

/* The door functions every stream door uses (door.h). */
int chat_stream_send(chat_session *s, px_buf *b);
void chat_stream_close(chat_session *s, px_buf *last, bool graceful);
int chat_stream_call(chat_session *s, void (*fn)(chat_session *s, void *arg), void *arg);
void chat_stream_hold(chat_session *s);
void chat_stream_release(chat_session *s);
void chat_stream_free(chat_session *s);

#define CHAT_STREAM_DOOR_OPS                                                               \
    .send = chat_stream_send, .close = chat_stream_close, .call = chat_stream_call,       \
    .hold = chat_stream_hold, .release = chat_stream_release, .free = chat_stream_free

#endif
