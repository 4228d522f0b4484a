/*
 * The chat core's life, and its sessions': start-up on a loop and a bus, a session's
 * welcome and departure, the idle sweep, and shutdown (every client told and closed,
 * room by room).  Start-up of the process itself is main.c's.
 */
#include "chat.h"

#include "log.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Read-only after chat_init. */
const srv_config *chat_cfg;
const chat_bus *chat_bus_now;
static px_timer *idle_timer;

/* ------------------------------------------------------------------------ */
/* Sessions                                                                  */

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

/* ------------------------------------------------------------------------ */
/* The server                                                                */

/* Closes every session (or those idle since before idle_before), gracefully, after a
 * last notice.  Returns how many there were. */
static unsigned dismiss(uint64_t idle_before, const char *reason, const char *last_line,
                        unsigned max)
{
    unsigned n;
    chat_session **who = chat_registry_collect(idle_before, reason, max, &n);
    chat_event bye = {.kind = CHAT_EV_NOTICE, .text = last_line, .len = strlen(last_line)};
    /* Everyone at once: room by room under each room's lock, so that a line being
     * relayed right now reaches all of its room or nobody; then anyone not in a room. */
    if (!idle_before && n)
        chat_rooms_close_all(&bye);
    for (unsigned i = 0; who && i < n; i++) {
        who[i]->door->close(who[i], chat_event_bytes(&bye, who[i]->door), true);
        chat_session_release(who[i]);
    }
    chat_event_clear(&bye);
    free(who);
    return n;
}

/* Closing a TCP connection costs the loop thread tens of microseconds of kernel time:
 * 10,000 idle clients timed out at once would hold up everyone else's lines for a
 * second.  So a sweep closes at most IDLE_BATCH of them and leaves the rest to the
 * loop's next pass, after it has served what arrived meanwhile. */
#define IDLE_BATCH 256

static void idle_sweep(void *loop)
{
    if (!idle_timer)
        return; /* shutting down: everyone is being dismissed anyway */
    uint64_t now = px_now_ms(), limit = (uint64_t)chat_cfg->idle_timeout * 1000;
    if (now > limit && dismiss(now - limit, "idle timeout", "Idle timeout.", IDLE_BATCH) ==
                           IDLE_BATCH)
        px_loop_post(loop, idle_sweep, loop); /* more, after the loop's next pass */
}

static void idle_check(px_timer *t, void *loop)
{
    (void)t;
    idle_sweep(loop);
}

int chat_init(const srv_config *config, px_loop *loop, const chat_bus *bus)
{
    chat_cfg = config;
    chat_bus_now = bus;
    if (chat_registry_init(config->max_clients) != 0)
        return -ENOMEM;
    chat_rooms_init(config->raw ? 0 : config->history, config->sendq / 2,
                    config->announce_max, bus);
    if (config->idle_timeout) {
        uint64_t period = config->idle_timeout >= 4 ? 1000 : 250;
        if (px_timer_start(loop, &idle_timer, period, period, idle_check, loop) != 0)
            srv_log(SRV_LOG_ERROR, "out of memory: idle timeouts are off");
    }
    return 0;
}

unsigned chat_shutdown(px_loop *loop)
{
    if (idle_timer)
        px_timer_cancel(idle_timer);
    idle_timer = NULL;
    chat_registry_close(loop);
    return dismiss(0, "server shutting down", "Server shutting down.", UINT_MAX);
}

void chat_fini(void)
{
    idle_timer = NULL; /* cancelled by chat_shutdown, or dropped with the loop */
    chat_rooms_fini();
    chat_registry_fini();
}
