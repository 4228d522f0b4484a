/*
 * The chat core's life: start-up on a loop and a bus, the idle sweep, and shutdown
 * (every client told and closed, room by room).  Start-up of the process itself is
 * main.c's.
 */
#include "chat.h"

#include "log.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Read-only after chat_init. */
const srv_config *chat_cfg;
const chat_bus *chat_bus_now;
static px_timer *idle_timer;

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
    if (chat_registry_init() != 0)
        return -ENOMEM;
    chat_rooms_init(config->raw ? 0 : config->history, config->sendq / 2,
                    config->announce_max);
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
