/*
 * Events (door.h): formatted once per door kind and kept, copied for a room's
 * history.  What an event looks like to a client is each door's business.
 */
#include "door.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

px_buf *chat_fmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    px_buf *b;
    void *data;
    if (px_buf_alloc(&b, (size_t)n + 2, &data) != 0)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(data, (size_t)n + 1, fmt, ap);
    va_end(ap);
    memcpy((char *)data + n, "\r\n", 2);
    return b;
}

px_buf *chat_line(const chat_piece *pieces, size_t n)
{
    size_t len = 2;
    for (size_t i = 0; i < n; i++)
        len += pieces[i].len;
    px_buf *b;
    void *data;
    if (px_buf_alloc(&b, len, &data) != 0)
        return NULL;
    char *at = data;
    for (size_t i = 0; i < n; i++) {
        memcpy(at, pieces[i].p, pieces[i].len);
        at += pieces[i].len;
    }
    memcpy(at, "\r\n", 2);
    return b;
}

px_buf *chat_event_bytes(chat_event *ev, const chat_door *door)
{
    if (!ev->as[door->kind])
        ev->as[door->kind] = door->format(ev);
    return ev->as[door->kind];
}

void chat_event_clear(chat_event *ev)
{
    for (unsigned k = 0; k < CHAT_DOOR_KINDS; k++) {
        px_buf_release(ev->as[k]);
        ev->as[k] = NULL;
    }
}

/* Copies s (may be NULL) to *at, advancing it. */
static const char *put(char **at, const char *s, size_t n)
{
    if (!s)
        return NULL;
    char *p = *at;
    memcpy(p, s, n);
    p[n] = '\0';
    *at += n + 1;
    return p;
}

chat_event *chat_event_copy(const chat_event *ev)
{
    size_t lf = ev->from ? strlen(ev->from) : 0, lt = ev->to ? strlen(ev->to) : 0;
    size_t lr = ev->room ? strlen(ev->room) : 0;
    chat_event *c = malloc(sizeof(*c) + lf + lt + lr + ev->len + 4);
    if (!c)
        return NULL;
    char *at = (char *)(c + 1);
    *c = *ev;
    c->from = put(&at, ev->from, lf);
    c->to = put(&at, ev->to, lt);
    c->room = put(&at, ev->room, lr);
    c->text = ev->text ? put(&at, ev->text, ev->len) : NULL;
    for (unsigned k = 0; k < CHAT_DOOR_KINDS; k++)
        if (c->as[k])
            px_buf_retain(c->as[k]);
    return c;
}

void chat_event_free(chat_event *ev)
{
    if (!ev)
        return;
    chat_event_clear(ev);
    free(ev);
}
