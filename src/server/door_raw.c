/*
 * The raw door (--raw): the original relay.  Each line goes as it was sent to every
 * other client; nothing else is ever shown (no names, notices or replies).
 */
#include "door_stream.h"

#include <stdlib.h>
#include <string.h>

static px_buf *raw_format(const chat_event *ev)
{
    px_buf *b = NULL;
    if (ev->kind == CHAT_EV_MESSAGE && ev->len)
        px_buf_new(&b, ev->text, ev->len);
    return b;
}

static void free_batch(const void *data, void *ctx)
{
    (void)ctx;
    free((void *)data);
}

/* Says bytes to the room, wrapped as they are in buf (released here). */
static void raw_say(stream_client *c, px_buf *buf)
{
    chat_event ev = {.kind = CHAT_EV_MESSAGE, .from = c->s.nick, .text = px_buf_data(buf),
                     .len = px_buf_len(buf)};
    ev.as[CHAT_DOOR_RAW] = buf;
    chat_session_say(&c->s, &ev, false);
    chat_event_clear(&ev);
}

/* The complete lines of one read go as one buffer: one queue entry and one reference
 * per recipient for the whole read instead of one per line (the lines stay whole and
 * in order, and the room's one order is kept, since the batch is queued to every
 * member under the room's lock like a single line). */
static void raw_flush(stream_client *c, stream_chunk *b)
{
    px_buf *buf;
    if (b->len && b->cap - b->len > b->len / 8) { /* queues hold it: no slack */
        char *p = realloc(b->p, b->len);
        if (p)
            b->p = p;
    }
    if (b->len && c->s.room && px_buf_wrap(&buf, b->p, b->len, free_batch, NULL) == 0)
        raw_say(c, buf); /* frees b->p with the last reference */
    else
        free(b->p);
    *b = (stream_chunk){0};
}

static void raw_line(stream_client *c, const char *line, size_t n, stream_chunk *b)
{
    if (!n)
        return;
    /* A batch larger than a reader's queue would be refused whole and drop that
     * reader as too slow even with its queue empty: send what is batched before it
     * passes half the bound (with the pool, the loop writes the first part while the
     * rest is being framed). */
    if (b->len && b->len + n > chat_cfg->sendq / 2)
        raw_flush(c, b);
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap - b->len < n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { /* out of memory: what is batched goes now, this line on its own */
            px_buf *one;
            raw_flush(c, b);
            if (c->s.room && px_buf_new(&one, line, n) == 0)
                raw_say(c, one);
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, line, n);
    b->len += n;
}

static void raw_too_long(stream_client *c)
{
    px_buf *b = chat_fmt("Error: line too long (max %zu bytes)", chat_cfg->max_line);
    if (b) {
        chat_stream_send(&c->s, b);
        px_buf_release(b);
    }
}

static void raw_open(px_stream *st, void *user)
{
    (void)user;
    chat_stream_open(st, &chat_door_raw);
}

const stream_door chat_door_raw = {
    .door = {.name = "raw", .kind = CHAT_DOOR_RAW, .format = raw_format, CHAT_STREAM_DOOR_OPS},
    CHAT_STREAM_HANDLERS(raw_open),
    .telnet = false,
    .line = raw_line,
    .chunk_end = raw_flush,
    .too_long = raw_too_long,
};
