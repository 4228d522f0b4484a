/*
 * What a line does: a message or action said to the session's room, or a command
 * (/nick, /who, /me, /msg, /join, /rooms, /quit, /help).  Written against the bus
 * (bus.h), which answers at once or later, and emitting events; parsing is proto.c's.
 */
#include "chat.h"

#include "log.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Said after an answer that only this server could give. */
#define PARTIAL " (this server only: the cluster is not answering)"

/* The longest prefix of p[0..len) of at most max bytes that does not end inside a
 * UTF-8 sequence. */
static int cut(const char *p, size_t len, size_t max)
{
    if (len <= max)
        return (int)len;
    size_t k = max;
    while (k > 0 && ((unsigned char)p[k] & 0xC0) == 0x80)
        k--; /* p[k] continues a character: cut before its first byte */
    return (int)k;
}

static void cmd_help(chat_session *s)
{
    static const char *const lines[] = {
        "Commands:",
        "  /nick NAME       change your nickname (letters, digits, _ and -, up to 16)",
        "  /who             who is in this room",
        "  /me ACTION       say what you are doing",
        "  /msg NICK TEXT   a private message",
        "  /join ROOM       move to another room (created if needed)",
        "  /rooms           list the rooms",
        "  /quit [REASON]   leave",
        "  /help            this list",
        "Anything else is said to your room; start a line with // to say /...",
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        chat_reply(s, "%s", lines[i]);
}

/* ------------------------------------------------------------------------ */
/* /nick                                                                     */

static void nick_claimed(chat_session *s, const chat_bus_answer *a, void *ctx)
{
    (void)ctx;
    char name[CHAT_NICK_MAX + 1];
    strcpy(name, s->reserved);
    switch (a->status) {
    case CHAT_BUS_REFUSED:
        chat_registry_unreserve(s);
        chat_error(s, "the nickname %s is taken (on another server).", name);
        return;
    case CHAT_BUS_SLOW:
        /* The claim may still happen: the bus puts this server's names right if so. */
        chat_registry_unreserve(s);
        chat_error(s, "the cluster did not answer in time; you are still %s.", s->nick);
        return;
    case CHAT_BUS_DONE:
    case CHAT_BUS_FULL:
        break;
    }
    char old[CHAT_NICK_MAX + 1];
    chat_registry_rename(s, old);
    chat_event notice = {.kind = CHAT_EV_RENAME, .from = old, .to = name};
    chat_notify(s->room, s, &notice, 0);
    chat_event_clear(&notice);
    chat_reply(s, "You are now known as %s.", name);
    srv_log(SRV_LOG_DEBUG, "%s: %s is now known as %s", s->addr, old, name);
}

static void cmd_nick(chat_session *s, const chat_cmd *c)
{
    if (!c->target_len || c->arg_len) {
        chat_error(s, "usage: /nick NAME");
        return;
    }
    if (!chat_nick_valid(c->target, c->target_len)) {
        chat_error(s, "'%.*s' is not a valid nickname: 1 to 16 letters, digits, _ or -, "
                      "starting with a letter, not starting with 'guest'.",
                   cut(c->target, c->target_len, 32), c->target);
        return;
    }
    char name[CHAT_NICK_MAX + 1];
    memcpy(name, c->target, c->target_len);
    name[c->target_len] = '\0';
    if (chat_nick_reserved(name, c->target_len)) {
        chat_error(s, "the nickname %s is reserved.", name);
        return;
    }
    if (strcmp(s->nick, name) == 0) {
        chat_reply(s, "You are already %s.", name);
        return;
    }
    /* Reserved here first (the old name stays until the rename is done). */
    int rc = chat_registry_reserve(s, name);
    if (rc == -EEXIST) {
        chat_error(s, "the nickname %s is taken.", name);
        return;
    }
    if (rc == 0 && (rc = chat_bus_now->claim(s, name, nick_claimed, NULL)) != 0)
        chat_registry_unreserve(s);
    if (rc)
        chat_error(s, "out of memory.");
}

/* ------------------------------------------------------------------------ */
/* /who and /rooms                                                           */

enum { WHO_SHOWN = 200 };

/* "*** 3 users in lobby: a, b, c", continued on further lines when long. */
static void who_answered(chat_session *s, const chat_bus_answer *a, void *ctx)
{
    (void)ctx;
    unsigned n = a->nusers > UINT_MAX ? UINT_MAX : (unsigned)a->nusers;
    unsigned shown = n < WHO_SHOWN ? n : WHO_SHOWN;
    char line[512];
    size_t len = (size_t)snprintf(line, sizeof(line), "%u user%s in %s%s: ", n,
                                  n == 1 ? "" : "s", chat_room_name(s->room),
                                  a->partial ? PARTIAL : "");
    size_t start = len;
    for (unsigned i = 0; i < shown; i++) {
        const char *name = a->users[i].name;
        if (len + strlen(name) + 2 > 400) {
            chat_reply(s, "%.*s", (int)len, line);
            len = start = 0;
        }
        len += (size_t)snprintf(line + len, sizeof(line) - len, "%s%.*s",
                                len > start ? ", " : "", CHAT_NICK_MAX, name);
    }
    if (n > shown)
        len += (size_t)snprintf(line + len, sizeof(line) - len, " and %u more", n - shown);
    chat_reply(s, "%.*s", (int)len, line);
}

static void cmd_who(chat_session *s)
{
    if (chat_bus_now->who(s, chat_room_name(s->room), who_answered, NULL) != 0)
        chat_error(s, "out of memory.");
}

/* Appends "name (members)" (after ", " unless first) to the list in buf; false, with
 * "..." at the end, when it does not fit. */
static bool rooms_append(char *buf, size_t cap, size_t *len, const char *name, unsigned members)
{
    int w = snprintf(buf + *len, cap - *len, "%s%s (%u)", *len ? ", " : "", name, members);
    if (w < 0 || (size_t)w >= cap - *len) {
        if (cap > 4)
            strcpy(buf + (*len < cap - 4 ? *len : cap - 4), "...");
        return false;
    }
    *len += (size_t)w;
    return true;
}

static void rooms_answered(chat_session *s, const chat_bus_answer *a, void *ctx)
{
    (void)ctx;
    char list[480];
    size_t len = 0;
    list[0] = '\0';
    for (size_t i = 0; i < a->nrooms && rooms_append(list, sizeof(list), &len, a->rooms[i].name,
                                                     a->rooms[i].members); i++)
        ;
    chat_reply(s, "%zu room%s%s: %s", a->nrooms, a->nrooms == 1 ? "" : "s",
               a->partial ? PARTIAL : "", list);
}

static void cmd_rooms(chat_session *s)
{
    if (chat_bus_now->rooms(s, rooms_answered, NULL) != 0)
        chat_error(s, "out of memory.");
}

/* ------------------------------------------------------------------------ */
/* /msg                                                                      */

typedef struct pm_ctx {
    char name[CHAT_NICK_MAX + 1]; /* as typed */
    size_t len;
    char text[];
} pm_ctx;

/* A question with a context of its own: the session keeps it until the answer, so that
 * it goes with the session if the answer never comes. */
static void *asking(chat_session *s, void *ctx)
{
    s->asking = ctx;
    return ctx;
}

static void answered(chat_session *s, void *ctx)
{
    if (s->asking == ctx)
        s->asking = NULL;
    free(ctx);
}

static void msg_answered(chat_session *s, const chat_bus_answer *a, void *arg)
{
    pm_ctx *pm = arg;
    switch (a->status) {
    case CHAT_BUS_DONE: {
        chat_event echo = {.kind = CHAT_EV_PM_SENT, .from = s->nick, .to = a->name,
                           .text = pm->text, .len = pm->len};
        chat_send_event(s, &echo);
        chat_event_clear(&echo);
        break;
    }
    case CHAT_BUS_REFUSED: chat_error(s, "no user named %s.", pm->name); break;
    case CHAT_BUS_FULL: chat_error(s, "%s could not take your message.", a->name); break;
    case CHAT_BUS_SLOW:
        chat_error(s, "the cluster did not answer; your message to %s may not have been "
                      "delivered.", pm->name);
        break;
    }
    answered(s, pm);
}

static void cmd_msg(chat_session *s, const chat_cmd *c)
{
    if (!c->target_len || !c->arg_len) {
        chat_error(s, "usage: /msg NICK TEXT");
        return;
    }
    if (c->target_len > CHAT_NICK_MAX) { /* nobody could have that name */
        chat_error(s, "no user named %.*s.", cut(c->target, c->target_len, 32), c->target);
        return;
    }
    pm_ctx *pm = malloc(sizeof(*pm) + c->arg_len + 1);
    if (!pm) {
        chat_error(s, "out of memory; your message was not sent.");
        return;
    }
    memcpy(pm->name, c->target, c->target_len);
    pm->name[c->target_len] = '\0';
    memcpy(pm->text, c->arg, c->arg_len);
    pm->text[c->arg_len] = '\0';
    pm->len = c->arg_len;
    chat_event ev = {.kind = CHAT_EV_PRIVATE, .from = s->nick, .text = pm->text,
                     .len = pm->len};
    int rc = chat_bus_now->msg(s, pm->name, &ev, msg_answered, asking(s, pm));
    chat_event_clear(&ev);
    if (rc) {
        answered(s, pm);
        chat_error(s, "out of memory; your message was not sent.");
    }
}

/* ------------------------------------------------------------------------ */
/* /join                                                                     */

static void join(chat_session *s, const char *name)
{
    /* Leave, then enter: the telnet door keeps a session in one room at a time. */
    chat_event notice = {.kind = CHAT_EV_MOVE, .from = s->nick, .to = name};
    chat_room_leave(s->room, s, &notice);
    chat_event_clear(&notice);
    if (!chat_room_enter(name, s)) {
        chat_error(s, "out of memory; back to %s.", CHAT_LOBBY);
        chat_room_enter(CHAT_LOBBY, s);
    }
    if (!s->room) {
        chat_set_reason(s, "out of memory");
        s->door->close(s, NULL, false);
        return;
    }
    chat_registry_where(s);
}

/* Every server knows where s is going (or could not be told: it is told again when
 * it can). */
static void moved(chat_session *s, const chat_bus_answer *a, void *ctx)
{
    (void)a;
    join(s, ctx);
    answered(s, ctx);
}

static void cmd_join(chat_session *s, const chat_cmd *c)
{
    char name[CHAT_ROOM_MAX + 1];
    if (!c->target_len || c->arg_len) {
        chat_error(s, "usage: /join ROOM");
        return;
    }
    if (!chat_room_norm(c->target, c->target_len, name)) {
        chat_error(s, "'%.*s' is not a valid room name: 1 to 24 letters, digits, _ or -.",
                   cut(c->target, c->target_len, 32), c->target);
        return;
    }
    if (strcmp(name, chat_room_name(s->room)) == 0) {
        chat_reply(s, "You are already in %s.", name);
        return;
    }
    char *to = strdup(name);
    if (!to || chat_bus_now->move(s, name, moved, asking(s, to)) != 0) {
        answered(s, to);
        join(s, name);
    }
}

/* ------------------------------------------------------------------------ */
/* Lines                                                                     */

static void cmd_quit(chat_session *s, const chat_cmd *c)
{
    if (c->arg_len)
        snprintf(s->quit_msg, sizeof(s->quit_msg), "quit: %.*s",
                 cut(c->arg, c->arg_len, 100), c->arg);
    else
        strcpy(s->quit_msg, "quit");
    chat_set_reason(s, s->quit_msg);
    chat_reply(s, "Bye.");
    s->door->close(s, NULL, true);
}

void chat_session_say(chat_session *s, chat_event *ev, bool history)
{
    /* An action comes back to its sender, as a room shows it; a message does not. */
    uint64_t except = ev->kind == CHAT_EV_ACTION ? 0 : s->id;
    int rc = chat_bus_now->publish(s->room, s, except, ev, history ? CHAT_PUB_HISTORY : 0);
    if (rc == -EAGAIN)
        chat_error(s, "the cluster is too slow right now; your message was not sent.");
    else if (rc)
        chat_error(s, "out of memory; your message was not sent.");
}

static void say(chat_session *s, const char *text, size_t len, bool action)
{
    chat_event ev = {.kind = action ? CHAT_EV_ACTION : CHAT_EV_MESSAGE, .from = s->nick,
                     .room = chat_room_name(s->room), .text = text, .len = len};
    chat_session_say(s, &ev, true);
    chat_event_clear(&ev);
    if (srv_log_enabled(SRV_LOG_DEBUG))
        srv_log(SRV_LOG_DEBUG, "%s <%s> %.*s", chat_room_name(s->room), s->nick, (int)len, text);
}

static void run(chat_session *s, const chat_cmd *c)
{
    switch (c->kind) {
    case CHAT_CMD_MESSAGE: say(s, c->arg, c->arg_len, false); break;
    case CHAT_CMD_ME:
        if (c->arg_len)
            say(s, c->arg, c->arg_len, true);
        else
            chat_error(s, "usage: /me ACTION");
        break;
    case CHAT_CMD_NICK: cmd_nick(s, c); break;
    case CHAT_CMD_WHO: cmd_who(s); break;
    case CHAT_CMD_MSG: cmd_msg(s, c); break;
    case CHAT_CMD_JOIN: cmd_join(s, c); break;
    case CHAT_CMD_ROOMS: cmd_rooms(s); break;
    case CHAT_CMD_QUIT: cmd_quit(s, c); break;
    case CHAT_CMD_HELP: cmd_help(s); break;
    case CHAT_CMD_UNKNOWN:
        chat_reply(s, "Unknown command '/%.*s'. Type /help for commands.",
                   cut(c->name, c->name_len, 32), c->name);
        break;
    }
}

void chat_session_line(chat_session *s, const char *line, size_t len)
{
    char *clean = malloc(CHAT_SANITIZE_MAX(len) + 1);
    if (!clean) {
        chat_error(s, "out of memory; your message was not sent.");
        return;
    }
    chat_cmd c;
    if (chat_line_parse(line, len, clean, &c)) /* else nothing is left to say */
        run(s, &c);
    free(clean);
}
