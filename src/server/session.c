/*
 * Sessions: one per client, whatever its door.  Their references and what the core
 * sends them; this file calls nothing of the core's.  Their life is core.c's, their
 * names the registry's (registry.c), what a line does commands.c's.
 */
#include "chat.h"

#include <stdlib.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void chat_set_reason(chat_session *s, const char *reason)
{
    const char *none = NULL;
    atomic_compare_exchange_strong(&s->reason, &none, reason);
}

chat_session *chat_session_retain(chat_session *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void chat_session_release(chat_session *s)
{
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) {
        free(s->asking);
        s->door->free(s);
    }
}

int chat_send_event(chat_session *s, chat_event *ev)
{
    px_buf *b = chat_event_bytes(ev, s->door);
    return b ? s->door->send(s, b) : 0;
}

static void send_text(chat_session *s, chat_event_kind kind, const char *fmt, va_list ap)
{
    /* Replies are short; the cap (a line of 597 bytes with the telnet door's "*** ")
     * only guards against a mistake. */
    char text[594];
    int n = vsnprintf(text, sizeof(text), fmt, ap);
    if (n < 0)
        return;
    chat_event ev = {.kind = kind, .text = text};
    ev.len = (size_t)n < sizeof(text) ? (size_t)n : sizeof(text) - 1;
    chat_send_event(s, &ev);
    chat_event_clear(&ev);
}

void chat_reply(chat_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_text(s, CHAT_EV_REPLY, fmt, ap);
    va_end(ap);
}

void chat_error(chat_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_text(s, CHAT_EV_ERROR, fmt, ap);
    va_end(ap);
}
