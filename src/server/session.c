/*
 * Sessions: one per client, whatever its door.  Their life (welcome, departure,
 * references) and what the core sends them.  Names are the registry's
 * (registry.c), what a line does is commands.c's.
 */
#include "chat.h"

#include "log.h"

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
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        s->door->free(s);
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

int chat_session_init(chat_session *s, const chat_door *door, const char *addr)
{
    s->door = door;
    atomic_store(&s->refs, 1); /* the door's */
    snprintf(s->addr, sizeof(s->addr), "%s", addr);
    atomic_store(&s->last_active_ms, px_now_ms());
    unsigned count;
    int rc = chat_registry_add(s, &count);
    if (rc == -EUSERS) {
        chat_reply(s, "Server full (%u clients), try again later.", chat_cfg->max_clients);
        srv_log(SRV_LOG_INFO, "refused %s: server full (%u clients)", s->addr, count);
    } else if (rc) {
        chat_reply(s, "Server shutting down.");
    }
    return rc;
}

/* The client is welcome: into the lobby, with its name. */
static void admit(chat_session *s)
{
    unsigned online = chat_registry_count(); /* counting those still being welcomed */
    chat_reply(s, "Welcome to st_proactor, %s! %u user%s online. Type /help for commands.",
               s->nick, online, online == 1 ? "" : "s");
    chat_room_enter(CHAT_LOBBY, s);
    online = chat_registry_publish(s);
    /* After publishing: from now on chat_notice_all reaches it too (at worst twice). */
    const char *greeting = chat_bus_now->greeting();
    if (greeting) {
        chat_event ev = {.kind = CHAT_EV_NOTICE, .text = greeting, .len = strlen(greeting)};
        chat_send_event(s, &ev);
        chat_event_clear(&ev);
    }
    if (!s->room || atomic_load(&s->reason)) {
        chat_set_reason(s, "out of memory");
        s->door->close(s, NULL, false);
    }
    srv_log(SRV_LOG_INFO, "connected %s as %s (%u online)", s->addr, s->nick, online);
}

/* The bus's answer to "a guest name, please". */
static void guest_named(chat_session *s, const chat_bus_answer *a, void *ctx)
{
    (void)ctx;
    if (a->status == CHAT_BUS_DONE && a->name && !chat_registry_take_guest(s, a->name))
        chat_bus_now->release(a->name); /* given here meanwhile: this server's name stays */
    admit(s);
}

void chat_session_start(chat_session *s)
{
    if (chat_bus_now->claim(s, NULL, guest_named, NULL) != 0)
        admit(s); /* out of memory: this server's guest name will do */
}

static const char *close_reason(chat_session *s, int cause)
{
    const char *r = atomic_load(&s->reason);
    if (r)
        return r;
    switch (cause) {
    case 0: return "connection closed";
    case -ECONNRESET: return "connection reset";
    case -ETIMEDOUT: return "timed out";
    case -ECANCELED: return "server shutting down";
    default: return px_strerror(cause);
    }
}

void chat_session_closed(chat_session *s, int cause)
{
    const char *why = close_reason(s, cause);
    bool closing = chat_registry_closing();
    while (s->rooms) {
        /* At shutdown nobody is told: everyone is leaving. */
        chat_event notice = {.kind = CHAT_EV_LEAVE, .from = s->nick, .text = why,
                             .len = strlen(why)};
        chat_room_leave(s->rooms->room, s, closing ? NULL : &notice);
        chat_event_clear(&notice);
    }
    /* At shutdown the bus says goodbye for every user at once (bus->stop). */
    if (s->published && !closing)
        chat_bus_now->leave(s);
    px_loop *stop = NULL;
    unsigned online = chat_registry_del(s, &stop);
    srv_log(SRV_LOG_INFO, "disconnected %s (%s) (%u online): %s", s->addr, s->nick, online, why);
    chat_session_release(s);
    if (stop)
        px_loop_stop(stop);
}

void chat_session_say(chat_session *s, chat_event *ev, bool history)
{
    /* An action comes back to its sender, as a room shows it; a message does not. */
    uint64_t except = ev->kind == CHAT_EV_ACTION ? 0 : s->id;
    int rc = chat_bus_now->publish(s->room, s, except, ev, history);
    if (rc == -EAGAIN)
        chat_error(s, "the cluster is too slow right now; your message was not sent.");
    else if (rc)
        chat_error(s, "out of memory; your message was not sent.");
}

void chat_notify(chat_room *r, chat_session *about, chat_event *ev)
{
    /* A notice the bus cannot take now reaches this server's members at least. */
    uint64_t except = about ? about->id : 0;
    if (chat_bus_now->publish(r, about, except, ev, false) != 0)
        chat_room_send(r, except, ev, false);
}
