/*
 * The telnet door: chat mode for telnet and nc.  Events become lines such as
 * "<nick> text" and "*** nick has joined lobby."; a line typed is a command or a
 * message (commands.c).  Telnet negotiation is the framer's (proto.c).
 */
#include "door_stream.h"

static px_buf *telnet_format(const chat_event *ev)
{
    /* Lines delivered on this server only while the other servers are unreachable. */
    const char *m = ev->local ? "[local] " : "";
    int n = (int)ev->len;
    switch (ev->kind) {
    case CHAT_EV_MESSAGE: return chat_fmt("%s<%s> %.*s", m, ev->from, n, ev->text);
    case CHAT_EV_ACTION: return chat_fmt("%s* %s %.*s", m, ev->from, n, ev->text);
    case CHAT_EV_PRIVATE: return chat_fmt("%s[PM from %s] %.*s", m, ev->from, n, ev->text);
    case CHAT_EV_PM_SENT: return chat_fmt("%s[PM to %s] %.*s", m, ev->to, n, ev->text);
    case CHAT_EV_JOIN: return chat_fmt("%s*** %s has joined %s.", m, ev->from, ev->room);
    case CHAT_EV_LEAVE:
        return chat_fmt("%s*** %s has left (%.*s).", m, ev->from, n, ev->text);
    case CHAT_EV_MOVE: return chat_fmt("%s*** %s has left for %s.", m, ev->from, ev->to);
    case CHAT_EV_RENAME:
        return chat_fmt("%s*** %s is now known as %s.", m, ev->from, ev->to);
    case CHAT_EV_NOTICE:
    case CHAT_EV_REPLY: return chat_fmt("%s*** %.*s", m, n, ev->text);
    case CHAT_EV_ERROR: return chat_fmt("%s*** Error: %.*s", m, n, ev->text);
    }
    return NULL;
}

static void telnet_line(stream_client *c, const char *line, size_t len, stream_chunk *chunk)
{
    (void)chunk;
    chat_session_line(&c->s, line, len);
}

static void telnet_too_long(stream_client *c)
{
    chat_error(&c->s, "line too long (max %zu bytes); it was not sent.", chat_cfg->max_line);
}

const stream_door chat_door_telnet = {
    .door = {.name = "telnet", .kind = CHAT_DOOR_TELNET, .format = telnet_format,
             CHAT_STREAM_DOOR_OPS},
    .telnet = true,
    .line = telnet_line,
    .too_long = telnet_too_long,
};
