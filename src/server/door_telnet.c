/*
 * The telnet door: chat mode for telnet and nc.  Events become lines such as
 * "<nick> text" and "*** nick has joined lobby."; a line typed is a command or a
 * message (commands.c).  Telnet negotiation is the framer's (proto.c).
 */
#include "door_stream.h"

#define LINE(...)                                                                        \
    chat_line((const chat_piece[]){__VA_ARGS__},                                          \
              sizeof((const chat_piece[]){__VA_ARGS__}) / sizeof(chat_piece))

static px_buf *telnet_format(const chat_event *ev)
{
    /* Lines delivered on this server only while the other servers are unreachable. */
    chat_piece m = chat_piece_of(ev->local ? "[local] " : "");
    chat_piece text = {ev->text, ev->len};
#define S(s) chat_piece_of(s)
    switch (ev->kind) {
    case CHAT_EV_MESSAGE: return LINE(m, S("<"), S(ev->from), S("> "), text);
    case CHAT_EV_ACTION: return LINE(m, S("* "), S(ev->from), S(" "), text);
    case CHAT_EV_PRIVATE: return LINE(m, S("[PM from "), S(ev->from), S("] "), text);
    case CHAT_EV_PM_SENT: return LINE(m, S("[PM to "), S(ev->to), S("] "), text);
    case CHAT_EV_JOIN: return LINE(m, S("*** "), S(ev->from), S(" has joined "), S(ev->room), S("."));
    case CHAT_EV_LEAVE: return LINE(m, S("*** "), S(ev->from), S(" has left ("), text, S(")."));
    case CHAT_EV_MOVE: return LINE(m, S("*** "), S(ev->from), S(" has left for "), S(ev->to), S("."));
    case CHAT_EV_RENAME:
        return LINE(m, S("*** "), S(ev->from), S(" is now known as "), S(ev->to), S("."));
    case CHAT_EV_NOTICE:
    case CHAT_EV_REPLY: return LINE(m, S("*** "), text);
    case CHAT_EV_ERROR: return LINE(m, S("*** Error: "), text);
    }
#undef S
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

static void telnet_open(px_stream *st, void *user)
{
    (void)user;
    chat_stream_open(st, &chat_door_telnet);
}

const stream_door chat_door_telnet = {
    .door = {.name = "telnet", .kind = CHAT_DOOR_TELNET, .format = telnet_format,
             CHAT_STREAM_DOOR_OPS},
    CHAT_STREAM_HANDLERS(telnet_open),
    .telnet = true,
    .line = telnet_line,
    .too_long = telnet_too_long,
};
