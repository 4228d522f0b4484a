/*
 * The chat core (src/server/chat.h) without a socket or a process: sessions on a
 * recording door (it keeps what each client would read), against the local bus and a
 * scripted one.  Registry, rooms and commands, and what the core asks of doors and
 * buses: one formatted buffer per event per door kind, answers marked partial.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/chat.h"
#include "server/door_stream.h"
#include "helpers.h"

#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* A recording door                                                          */

#define REC_BUFS 64

typedef struct rec {
    chat_session s; /* first, as every door keeps it */
    char out[16384];
    size_t len;
    const px_buf *bufs[REC_BUFS]; /* the buffers sent, in order */
    unsigned nbufs;
    bool closed, graceful;
    int holds;
} rec;

static int freed;

static int rec_send(chat_session *s, px_buf *b)
{
    rec *r = (rec *)s;
    size_t n = px_buf_len(b);
    cr_assert_lt(r->len + n, sizeof(r->out), "recording full");
    memcpy(r->out + r->len, px_buf_data(b), n);
    r->len += n;
    r->out[r->len] = '\0';
    if (r->nbufs < REC_BUFS)
        r->bufs[r->nbufs++] = b;
    return 0;
}

static void rec_close(chat_session *s, px_buf *last, bool graceful)
{
    rec *r = (rec *)s;
    if (last)
        rec_send(s, last);
    r->closed = true;
    r->graceful = graceful;
}

static int rec_call(chat_session *s, void (*fn)(chat_session *s, void *arg), void *arg)
{
    fn(s, arg); /* its own order: nothing else runs here */
    return 0;
}

static void rec_hold(chat_session *s) { ((rec *)s)->holds++; }
static void rec_release(chat_session *s) { ((rec *)s)->holds--; }
static void rec_free(chat_session *s)
{
    freed++;
    free(s);
}

static chat_door rec_door = {
    .name = "recording", .kind = CHAT_DOOR_TELNET, .send = rec_send, .close = rec_close,
    .call = rec_call, .hold = rec_hold, .release = rec_release, .free = rec_free,
};
/* The same, reading what the raw relay's clients read. */
static chat_door rec_raw_door;

static srv_config cfg;

static void setup_with(const chat_bus *bus)
{
    cfg = (srv_config){.max_line = 2048, .sendq = 1u << 20, .history = 20,
                       .announce_max = 100};
    cr_assert_eq(chat_init(&cfg, NULL, bus), 0);
    rec_door.format = chat_door_telnet.door.format; /* as telnet clients would read it */
    rec_raw_door = rec_door;
    rec_raw_door.kind = CHAT_DOOR_RAW;
    rec_raw_door.format = chat_door_raw.door.format;
}

static void setup(void)
{
    setup_with(&chat_bus_local);
}

static rec *open_on(const chat_door *door)
{
    rec *r = calloc(1, sizeof(*r));
    cr_assert(r);
    if (chat_session_init(&r->s, door, "test") != 0)
        return r; /* refused: the caller looks at what it was told */
    chat_session_start(&r->s);
    return r;
}

static rec *open_one(void)
{
    return open_on(&rec_door);
}

static void say(rec *r, const char *line)
{
    chat_session_line(&r->s, line, strlen(line));
}

/* What r was sent since the last call, then forgets it. */
static const char *take(rec *r)
{
    static char copy[sizeof(((rec *)0)->out)];
    memcpy(copy, r->out, r->len + 1);
    r->len = 0;
    r->out[0] = '\0';
    r->nbufs = 0;
    return copy;
}

static void leave(rec *r, int cause)
{
    chat_session_closed(&r->s, cause);
}

TestSuite(core, .init = setup, .fini = chat_fini, .timeout = 10);

/* ------------------------------------------------------------------------ */
/* Sessions, rooms, messages                                                 */

Test(core, welcome_and_guest_names)
{
    rec *a = open_one();
    cr_assert_str_eq(take(a), "*** Welcome to st_proactor, guest1! 1 user online. Type /help "
                              "for commands.\r\n*** You are in lobby (1 user).\r\n");
    rec *b = open_one();
    cr_assert_str_eq(take(a), "*** guest2 has joined lobby.\r\n");
    cr_assert_str_eq(take(b), "*** Welcome to st_proactor, guest2! 2 users online. Type /help "
                              "for commands.\r\n*** You are in lobby (2 users).\r\n");
    cr_assert_eq(chat_online(), 2);
    leave(b, 0);
    leave(a, 0);
    cr_assert_eq(freed, 2);
}

Test(core, a_message_reaches_everyone_else_in_one_shared_buffer)
{
    rec *a = open_one(), *b = open_one(), *c = open_one();
    take(a), take(b), take(c);
    say(a, "hello");
    cr_assert_str_eq(take(a), "");
    cr_assert_eq(b->nbufs, 1);
    cr_assert_eq(c->nbufs, 1);
    cr_assert_eq(b->bufs[0], c->bufs[0], "formatted once for both (one door kind)");
    cr_assert_str_eq(take(b), "<guest1> hello\r\n");
    cr_assert_str_eq(take(c), "<guest1> hello\r\n");
    say(a, "/me waves"); /* an action comes back to its sender too */
    cr_assert_str_eq(take(a), "* guest1 waves\r\n");
    cr_assert_str_eq(take(b), "* guest1 waves\r\n");
    leave(c, 0);
    cr_assert_str_eq(take(a), "*** guest3 has left (connection closed).\r\n");
    leave(b, -ECONNRESET);
    cr_assert_str_eq(take(a), "*** guest2 has left (connection reset).\r\n");
    leave(a, 0);
}

Test(core, each_door_kind_reads_its_own_format)
{
    rec *t = open_one(), *raw = open_on(&rec_raw_door), *sender = open_one();
    cr_assert_str_eq(take(raw), "", "the raw relay shows no welcome, no notice");
    take(t);
    say(sender, "hi there");
    cr_assert_str_eq(take(t), "<guest3> hi there\r\n");
    cr_assert_str_eq(take(raw), "hi there");
    leave(sender, 0);
    leave(raw, 0);
    leave(t, 0);
}

Test(core, history_is_replayed_to_newcomers)
{
    rec *a = open_one();
    say(a, "one");
    say(a, "two");
    rec *b = open_one();
    cr_assert_str_eq(take(b), "*** Welcome to st_proactor, guest2! 2 users online. Type /help "
                              "for commands.\r\n*** You are in lobby (2 users).\r\n"
                              "<guest1> one\r\n<guest1> two\r\n");
    leave(b, 0);
    leave(a, 0);
}

/* Regression (review of the redesign): the byte bound of a room's history counts each
 * line as its members read it, also a line its sender said alone in the room. */
Test(core, history_bytes_count_lines_as_read)
{
    chat_fini();
    cfg.max_line = 16;
    cfg.sendq = 1024; /* a replay of at most 512 bytes */
    cfg.history = 50;
    cr_assert_eq(chat_init(&cfg, NULL, &chat_bus_local), 0);
    rec *a = open_one();
    for (int i = 0; i < 30; i++)
        say(a, "0123456789abcdef"); /* "<guest1> " + 16 + CRLF: 27 bytes */
    rec *b = open_one();
    const char *replay = take(b);
    unsigned lines = 0;
    for (const char *p = replay; (p = strstr(p, "<guest1> ")); p++)
        lines++;
    cr_assert_eq(lines, 512 / 27, "%u lines replayed", lines);
    leave(b, 0);
    leave(a, 0);
}

/* Regression (review of the redesign): rooms that share a bucket of the table are
 * listed newest first, as they always were. */
Test(core, rooms_listed_newest_first_in_a_bucket)
{
    rec *a = open_one(), *b = open_one();
    say(b, "/join r42"); /* "lobby" and "r42" share a bucket of the 64 */
    take(a);
    say(a, "/rooms");
    cr_assert_str_eq(take(a), "*** 2 rooms: r42 (1), lobby (1)\r\n");
    leave(b, 0);
    leave(a, 0);
}

Test(core, server_full)
{
    chat_fini();
    cfg.max_clients = 1;
    cr_assert_eq(chat_init(&cfg, NULL, &chat_bus_local), 0);
    rec *a = open_one();
    rec *b = calloc(1, sizeof(*b));
    cr_assert_eq(chat_session_init(&b->s, &rec_door, "test"), -EUSERS);
    cr_assert_str_eq(take(b), "*** Server full (1 clients), try again later.\r\n");
    free(b);
    leave(a, 0);
}

/* A session in several rooms at once (what web and IRC doors will do): it hears each,
 * its lines go to its current room, and it leaves all of them when it goes. */
Test(core, a_session_in_two_rooms)
{
    rec *a = open_one(), *b = open_one(), *c = open_one();
    say(b, "/join one");
    say(c, "/join two");
    cr_assert(chat_room_enter("one", &a->s) && chat_room_enter("two", &a->s));
    take(a), take(b), take(c);
    say(b, "in one");
    say(c, "in two");
    cr_assert_str_eq(take(a), "<guest2> in one\r\n<guest3> in two\r\n");
    say(a, "to two"); /* the room entered last is the current one */
    cr_assert_str_eq(take(c), "<guest1> to two\r\n");
    cr_assert_str_eq(take(b), "");
    leave(a, 0);
    cr_assert_str_eq(take(b), "*** guest1 has left (connection closed).\r\n");
    cr_assert_str_eq(take(c), "*** guest1 has left (connection closed).\r\n");
    leave(c, 0);
    leave(b, 0);
    unsigned sessions, names, rooms;
    chat_census(&sessions, &names, &rooms);
    cr_assert_eq(sessions + names + rooms, 0);
}

/* ------------------------------------------------------------------------ */
/* Commands                                                                  */

Test(core, nick)
{
    rec *a = open_one(), *b = open_one();
    take(a), take(b);
    say(a, "/nick alice");
    cr_assert_str_eq(take(a), "*** You are now known as alice.\r\n");
    cr_assert_str_eq(take(b), "*** guest1 is now known as alice.\r\n");
    say(b, "/nick ALICE");
    cr_assert_str_eq(take(b), "*** Error: the nickname ALICE is taken.\r\n");
    say(b, "/nick guest9");
    cr_assert(strstr(take(b), "*** Error: 'guest9' is not a valid nickname"));
    say(a, "/nick alice");
    cr_assert_str_eq(take(a), "*** You are already alice.\r\n");
    say(a, "/nick Alice"); /* another spelling of one's own name */
    cr_assert_str_eq(take(a), "*** You are now known as Alice.\r\n");
    unsigned sessions, names, rooms;
    chat_census(&sessions, &names, &rooms);
    cr_assert_eq(names, 2);
    leave(a, 0);
    leave(b, 0);
    chat_census(&sessions, &names, &rooms);
    cr_assert_eq(sessions + names + rooms, 0, "nothing outlives its sessions");
}

Test(core, who_rooms_join)
{
    rec *a = open_one(), *b = open_one();
    say(a, "/nick alice");
    take(a), take(b);
    say(b, "/who");
    cr_assert_str_eq(take(b), "*** 2 users in lobby: alice, guest2\r\n");
    say(b, "/join #Rust");
    cr_assert_str_eq(take(b), "*** You are in rust (1 user).\r\n");
    cr_assert_str_eq(take(a), "*** guest2 has left for rust.\r\n");
    say(a, "/rooms");
    cr_assert_str_eq(take(a), "*** 2 rooms: lobby (1), rust (1)\r\n");
    say(a, "/join rust");
    cr_assert_str_eq(take(b), "*** alice has joined rust.\r\n");
    say(b, "in rust");
    cr_assert_str_eq(take(a), "*** You are in rust (2 users).\r\n<guest2> in rust\r\n");
    say(a, "/join rust");
    cr_assert_str_eq(take(a), "*** You are already in rust.\r\n");
    say(a, "/join bad!name");
    cr_assert_str_eq(take(a), "*** Error: 'bad!name' is not a valid room name: 1 to 24 "
                              "letters, digits, _ or -.\r\n");
    leave(a, 0);
    leave(b, 0);
}

Test(core, private_messages)
{
    rec *a = open_one(), *b = open_one(), *c = open_one();
    say(b, "/nick bob");
    take(a), take(b), take(c);
    say(a, "/msg BOB psst");
    cr_assert_str_eq(take(a), "[PM to bob] psst\r\n");
    cr_assert_str_eq(take(b), "[PM from guest1] psst\r\n");
    cr_assert_str_eq(take(c), "");
    say(a, "/msg nobody hello");
    cr_assert_str_eq(take(a), "*** Error: no user named nobody.\r\n");
    say(a, "/msg");
    cr_assert_str_eq(take(a), "*** Error: usage: /msg NICK TEXT\r\n");
    leave(c, 0);
    leave(b, 0);
    leave(a, 0);
}

Test(core, quit_help_unknown)
{
    rec *a = open_one(), *b = open_one();
    take(a), take(b);
    say(a, "/frob");
    cr_assert_str_eq(take(a), "*** Unknown command '/frob'. Type /help for commands.\r\n");
    say(a, "/help");
    cr_assert(strstr(take(a), "***   /join ROOM       move to another room"));
    say(a, "/quit gone fishing");
    cr_assert_str_eq(take(a), "*** Bye.\r\n");
    cr_assert(a->closed && a->graceful);
    leave(a, 0);
    cr_assert_str_eq(take(b), "*** guest1 has left (quit: gone fishing).\r\n");
    leave(b, 0);
}

/* ------------------------------------------------------------------------ */
/* Against a scripted bus: what the core makes of each kind of answer        */

static chat_bus_status next_status;
static bool next_partial;

static int scripted_claim(chat_session *s, const char *name, chat_bus_done *done, void *ctx)
{
    (void)name;
    s->door->hold(s); /* as a bus that has to ask someone */
    s->door->release(s);
    done(s, &(chat_bus_answer){.status = next_status}, ctx);
    return 0;
}

static int scripted_who(chat_session *s, const char *room, chat_bus_done *done, void *ctx)
{
    return chat_bus_local_who(s, room, next_partial, done, ctx);
}

static int scripted_rooms(chat_session *s, chat_bus_done *done, void *ctx)
{
    return chat_bus_local_rooms(s, next_partial, done, ctx);
}

static int scripted_msg(chat_session *s, const char *name, chat_event *ev, chat_bus_done *done,
                        void *ctx)
{
    (void)name;
    (void)ev;
    done(s, &(chat_bus_answer){.status = next_status, .name = "Far"}, ctx);
    return 0;
}

static int scripted_publish(chat_room *r, chat_session *from, uint64_t except, chat_event *ev,
                            unsigned flags)
{
    (void)from;
    if (next_status == CHAT_BUS_SLOW)
        return -EAGAIN;
    chat_room_send(r, except, ev, flags);
    return 0;
}

static const char *scripted_greeting(void)
{
    return next_partial ? "The others are away." : NULL;
}

static chat_bus scripted;

static void setup_scripted(void)
{
    scripted = chat_bus_local;
    scripted.claim = scripted_claim;
    scripted.who = scripted_who;
    scripted.rooms = scripted_rooms;
    scripted.msg = scripted_msg;
    scripted.publish = scripted_publish;
    scripted.greeting = scripted_greeting;
    next_status = CHAT_BUS_DONE;
    next_partial = false;
    setup_with(&scripted);
}

TestSuite(core_bus, .init = setup_scripted, .fini = chat_fini, .timeout = 10);

/* Regression (review of the redesign): a session that goes while its question is in
 * flight takes the question's context with it (the bus never answers it). */
static chat_bus_done *kept_done;

static int unanswered_msg(chat_session *s, const char *name, chat_event *ev,
                          chat_bus_done *done, void *ctx)
{
    (void)s, (void)name, (void)ev, (void)ctx;
    kept_done = done;
    return 0;
}

static int unanswered_move(chat_session *s, const char *room, chat_bus_done *done, void *ctx)
{
    (void)s, (void)room, (void)ctx;
    kept_done = done;
    return 0;
}

Test(core_bus, a_question_without_answer_goes_with_its_session)
{
    scripted.msg = unanswered_msg;
    scripted.move = unanswered_move;
    rec *a = open_one();
    say(a, "/msg far hello");
    cr_assert(kept_done && a->s.asking, "the question is in flight");
    leave(a, 0); /* LeakSanitizer (make test's ASan run) checks that nothing is left */
    cr_assert_eq(freed, 1);
    rec *b = open_one();
    say(b, "/join elsewhere");
    cr_assert(b->s.asking);
    leave(b, 0);
    cr_assert_eq(freed, 2);
}

Test(core_bus, answers)
{
    next_partial = true;
    rec *a = open_one();
    cr_assert(strstr(take(a), "*** The others are away.\r\n"));
    say(a, "/who");
    cr_assert_str_eq(take(a), "*** 1 user in lobby (this server only: the cluster is not "
                              "answering): guest1\r\n");
    say(a, "/rooms");
    cr_assert_str_eq(take(a), "*** 1 room (this server only: the cluster is not answering): "
                              "lobby (1)\r\n");
    static const struct {
        chat_bus_status status;
        const char *line, *want;
    } steps[] = {
        {CHAT_BUS_REFUSED, "/nick taken",
         "*** Error: the nickname taken is taken (on another server).\r\n"},
        {CHAT_BUS_SLOW, "/nick slow",
         "*** Error: the cluster did not answer in time; you are still guest1.\r\n"},
        {CHAT_BUS_SLOW, "/msg far hello",
         "*** Error: the cluster did not answer; your message to far may not have been "
         "delivered.\r\n"},
        {CHAT_BUS_SLOW, "hello",
         "*** Error: the cluster is too slow right now; your message was not sent.\r\n"},
        {CHAT_BUS_FULL, "/msg far hello", "*** Error: Far could not take your message.\r\n"},
        {CHAT_BUS_DONE, "/msg far hello", "[PM to Far] hello\r\n"},
    };
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        next_status = steps[i].status;
        say(a, steps[i].line);
        cr_assert_str_eq(take(a), steps[i].want);
        cr_assert_eq(a->holds, 0, "every hold released");
    }
    unsigned sessions, names, rooms;
    chat_census(&sessions, &names, &rooms);
    cr_assert_eq(names, 1, "refused and slow renames leave no name behind");
    leave(a, 0);
}

/* ------------------------------------------------------------------------ */
/* The telnet door on real streams                                           */

/* Regression (make valgrind): a stream that closes before it opens gets on_close with
 * the user pointer it started with; the door must not have put itself there. */
Test(core_stream, a_stream_closed_before_it_opens, .timeout = 20)
{
    cfg = (srv_config){.max_line = 2048, .sendq = 1u << 20, .history = 20,
                       .announce_max = 100, .flood_rate = 20, .flood_burst = 40};
    px_loop *loop = tc_loop_new(PX_EXEC_INLINE, NULL);
    cr_assert_eq(chat_init(&cfg, loop, &chat_bus_local), 0);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    px_stream *st;
    cr_assert_eq(px_stream_open(loop, &st, sv[0], &chat_door_telnet.handlers, NULL, NULL), 0);
    px_loop_destroy(loop); /* never run: the stream gets on_close without on_open */
    close(sv[1]);
    unsigned sessions, names, rooms;
    chat_census(&sessions, &names, &rooms);
    cr_assert_eq(sessions + names + rooms, 0);
    chat_fini();
}
