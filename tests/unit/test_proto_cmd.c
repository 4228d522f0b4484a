/* chat_cmd_parse, chat_nick_valid, chat_room_norm and chat_name_eq: table
 * tests of every command, alias, case and whitespace rule, and of the
 * edges of the name rules. */
#include <criterion/criterion.h>

#include <string.h>

#include "server/proto.h"

typedef struct cmd_case {
    const char *line;
    chat_cmd_kind kind;
    const char *name;   /* NULL: not checked */
    const char *target;
    const char *arg;
} cmd_case;

static const char *kind_name(chat_cmd_kind k)
{
    switch (k) {
    case CHAT_CMD_MESSAGE: return "MESSAGE";
    case CHAT_CMD_NICK: return "NICK";
    case CHAT_CMD_WHO: return "WHO";
    case CHAT_CMD_ME: return "ME";
    case CHAT_CMD_MSG: return "MSG";
    case CHAT_CMD_JOIN: return "JOIN";
    case CHAT_CMD_ROOMS: return "ROOMS";
    case CHAT_CMD_QUIT: return "QUIT";
    case CHAT_CMD_HELP: return "HELP";
    case CHAT_CMD_UNKNOWN: return "UNKNOWN";
    }
    return "?";
}

static void expect_field(const char *line, const char *what, const char *p, size_t len,
                         const char *want)
{
    size_t line_len = strlen(line);
    cr_assert(len == strlen(want) && (len == 0 || memcmp(p, want, len) == 0),
              "\"%s\": %s is \"%.*s\", want \"%s\"", line, what, (int)len, p, want);
    /* pointers point into the line (or just past its end) */
    cr_assert(p >= line && p + len <= line + line_len, "\"%s\": %s points outside the line",
              line, what);
}

static void run_cases(const cmd_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const cmd_case *c = &cases[i];
        chat_cmd cmd;
        memset(&cmd, 0xA5, sizeof cmd);
        chat_cmd_parse(c->line, strlen(c->line), &cmd);
        cr_assert_eq(cmd.kind, c->kind, "\"%s\": kind %s, want %s", c->line,
                     kind_name(cmd.kind), kind_name(c->kind));
        if (c->name)
            expect_field(c->line, "name", cmd.name, cmd.name_len, c->name);
        expect_field(c->line, "target", cmd.target, cmd.target_len, c->target);
        expect_field(c->line, "arg", cmd.arg, cmd.arg_len, c->arg);
    }
}

#define RUN(cases) run_cases(cases, sizeof cases / sizeof cases[0])

Test(proto_cmd, messages, .timeout = 10)
{
    static const cmd_case cases[] = {
        { "hello", CHAT_CMD_MESSAGE, NULL, "", "hello" },
        { "  spaced  out  ", CHAT_CMD_MESSAGE, NULL, "", "  spaced  out  " },
        { "a/b", CHAT_CMD_MESSAGE, NULL, "", "a/b" },
        { " /nick x", CHAT_CMD_MESSAGE, NULL, "", " /nick x" },
        { "//", CHAT_CMD_MESSAGE, NULL, "", "/" },
        { "//text", CHAT_CMD_MESSAGE, NULL, "", "/text" },
        { "//nick bob", CHAT_CMD_MESSAGE, NULL, "", "/nick bob" },
        { "///", CHAT_CMD_MESSAGE, NULL, "", "//" },
    };
    RUN(cases);
}

Test(proto_cmd, empty_line_is_empty_message, .timeout = 10)
{
    chat_cmd cmd;
    chat_cmd_parse("", 0, &cmd);
    cr_assert_eq(cmd.kind, CHAT_CMD_MESSAGE);
    cr_assert_eq(cmd.arg_len, 0);
    cr_assert_eq(cmd.target_len, 0);
    chat_cmd_parse(NULL, 0, &cmd);
    cr_assert_eq(cmd.kind, CHAT_CMD_MESSAGE);
    cr_assert_eq(cmd.arg_len, 0);
}

Test(proto_cmd, every_command, .timeout = 10)
{
    static const cmd_case cases[] = {
        { "/nick bob", CHAT_CMD_NICK, "nick", "bob", "" },
        { "/who", CHAT_CMD_WHO, "who", "", "" },
        { "/me waves", CHAT_CMD_ME, "me", "", "waves" },
        { "/msg bob hi there", CHAT_CMD_MSG, "msg", "bob", "hi there" },
        { "/join dev", CHAT_CMD_JOIN, "join", "dev", "" },
        { "/rooms", CHAT_CMD_ROOMS, "rooms", "", "" },
        { "/quit", CHAT_CMD_QUIT, "quit", "", "" },
        { "/quit gone fishing", CHAT_CMD_QUIT, "quit", "", "gone fishing" },
        { "/help", CHAT_CMD_HELP, "help", "", "" },
    };
    RUN(cases);
}

Test(proto_cmd, case_insensitive, .timeout = 10)
{
    static const cmd_case cases[] = {
        { "/NICK Bob", CHAT_CMD_NICK, "NICK", "Bob", "" },
        { "/Who", CHAT_CMD_WHO, "Who", "", "" },
        { "/ME Waves", CHAT_CMD_ME, "ME", "", "Waves" },
        { "/mSg Bob Hi", CHAT_CMD_MSG, "mSg", "Bob", "Hi" },
        { "/JOIN #Dev", CHAT_CMD_JOIN, "JOIN", "#Dev", "" },
        { "/ROOMS", CHAT_CMD_ROOMS, "ROOMS", "", "" },
        { "/Quit Bye", CHAT_CMD_QUIT, "Quit", "", "Bye" },
        { "/HELP", CHAT_CMD_HELP, "HELP", "", "" },
    };
    RUN(cases);
}

Test(proto_cmd, aliases, .timeout = 10)
{
    static const cmd_case cases[] = {
        { "/names", CHAT_CMD_WHO, "names", "", "" },
        { "/list", CHAT_CMD_ROOMS, "list", "", "" },
        { "/exit", CHAT_CMD_QUIT, "exit", "", "" },
        { "/exit now", CHAT_CMD_QUIT, "exit", "", "now" },
        { "/j dev", CHAT_CMD_JOIN, "j", "dev", "" },
        { "/J #Dev", CHAT_CMD_JOIN, "J", "#Dev", "" },
        { "/NAMES", CHAT_CMD_WHO, "NAMES", "", "" },
        { "/m bob hi", CHAT_CMD_UNKNOWN, "m", "", "bob hi" },
    };
    RUN(cases);
}

Test(proto_cmd, unknown, .timeout = 10)
{
    static const cmd_case cases[] = {
        { "/", CHAT_CMD_UNKNOWN, "", "", "" },
        { "/ ", CHAT_CMD_UNKNOWN, "", "", "" },
        { "/ nick bob", CHAT_CMD_UNKNOWN, "", "", "nick bob" },
        { "/foo", CHAT_CMD_UNKNOWN, "foo", "", "" },
        { "/foo bar baz ", CHAT_CMD_UNKNOWN, "foo", "", "bar baz" },
        { "/nickname bob", CHAT_CMD_UNKNOWN, "nickname", "", "bob" },
        { "/nic", CHAT_CMD_UNKNOWN, "nic", "", "" },
        { "/whom", CHAT_CMD_UNKNOWN, "whom", "", "" },
        { "/h", CHAT_CMD_UNKNOWN, "h", "", "" },
        { "/nick/x", CHAT_CMD_UNKNOWN, "nick/x", "", "" },
        { "/\xc3\xa9t\xc3\xa9", CHAT_CMD_UNKNOWN, "\xc3\xa9t\xc3\xa9", "", "" },
    };
    RUN(cases);
}

Test(proto_cmd, whitespace, .timeout = 10)
{
    static const cmd_case cases[] = {
        { "/nick   bob   ", CHAT_CMD_NICK, "nick", "bob", "" },
        { "/nick\tbob", CHAT_CMD_NICK, "nick", "bob", "" },
        { "/nick", CHAT_CMD_NICK, "nick", "", "" },
        { "/nick   ", CHAT_CMD_NICK, "nick", "", "" },
        { "/nick bob extra words ", CHAT_CMD_NICK, "nick", "bob", "extra words" },
        { "/msg  bob   hi  there  ", CHAT_CMD_MSG, "msg", "bob", "hi  there" },
        { "/msg bob", CHAT_CMD_MSG, "msg", "bob", "" },
        { "/msg bob   ", CHAT_CMD_MSG, "msg", "bob", "" },
        { "/msg", CHAT_CMD_MSG, "msg", "", "" },
        { "/msg\t\tbob\t\thi\t", CHAT_CMD_MSG, "msg", "bob", "hi" },
        { "/me   ", CHAT_CMD_ME, "me", "", "" },
        { "/me  does  a  thing  ", CHAT_CMD_ME, "me", "", "does  a  thing" },
        { "/who  ", CHAT_CMD_WHO, "who", "", "" },
        { "/who lobby", CHAT_CMD_WHO, "who", "", "lobby" },
        { "/join  #dev  now", CHAT_CMD_JOIN, "join", "#dev", "now" },
        { "/quit   ", CHAT_CMD_QUIT, "quit", "", "" },
    };
    RUN(cases);
}

/* The line need not be NUL-terminated: only len bytes are read. */
Test(proto_cmd, uses_only_len_bytes, .timeout = 10)
{
    const char buf[] = "/nick bobXXXX";
    chat_cmd cmd;
    chat_cmd_parse(buf, 9, &cmd);
    cr_assert_eq(cmd.kind, CHAT_CMD_NICK);
    cr_assert_eq(cmd.target_len, 3);
    cr_assert_eq(memcmp(cmd.target, "bob", 3), 0);
    chat_cmd_parse(buf, 5, &cmd);
    cr_assert_eq(cmd.kind, CHAT_CMD_NICK);
    cr_assert_eq(cmd.target_len, 0);
    chat_cmd_parse(buf, 4, &cmd);
    cr_assert_eq(cmd.kind, CHAT_CMD_UNKNOWN);
    cr_assert_eq(cmd.name_len, 3);
    chat_cmd_parse(buf, 1, &cmd);
    cr_assert_eq(cmd.kind, CHAT_CMD_UNKNOWN);
    cr_assert_eq(cmd.name_len, 0);
}

/* ---- names ---- */

Test(proto_cmd, nick_valid, .timeout = 10)
{
    static const char *const good[] = {
        "a", "Z", "bob", "Bob_the-2nd", "abcdefghijklmnop", "a-", "x_", "gues", "Guesser",
        "gust", "aguest", "g", "q1234567890",
    };
    static const char *const bad[] = {
        "", "1bob", "_bob", "-bob", "abcdefghijklmnopq", "bob smith", "bob!", "b\xc3\xa9",
        "guest", "Guest", "GUEST7", "guest_x", "guestbook", "#bob", "bob\t", "a.b",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        cr_assert(chat_nick_valid(good[i], strlen(good[i])), "\"%s\" should be valid", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert(!chat_nick_valid(bad[i], strlen(bad[i])), "\"%s\" should be invalid", bad[i]);
    /* only len bytes count */
    cr_assert(chat_nick_valid("bob!!!", 3));
    cr_assert(!chat_nick_valid("bob", 0));
    cr_assert(!chat_nick_valid("bo\0b", 4));
}

static void expect_room(const char *in, const char *want)
{
    char out[25];
    memset(out, 'X', sizeof out);
    size_t len = chat_room_norm(in, strlen(in), out);
    if (!want) {
        cr_assert_eq(len, 0, "\"%s\" should be invalid, got \"%.*s\"", in, (int)len, out);
        return;
    }
    cr_assert_eq(len, strlen(want), "\"%s\": length %zu, want %zu", in, len, strlen(want));
    cr_assert_str_eq(out, want, "\"%s\": got \"%s\", want \"%s\"", in, out, want);
}

Test(proto_cmd, room_norm, .timeout = 10)
{
    expect_room("lobby", "lobby");
    expect_room("#lobby", "lobby");
    expect_room("Dev", "dev");
    expect_room("#C_Lang-2", "c_lang-2");
    expect_room("1", "1");
    expect_room("_", "_");
    expect_room("-x", "-x");
    expect_room("abcdefghijklmnopqrstuvwx", "abcdefghijklmnopqrstuvwx");     /* 24 */
    expect_room("#ABCDEFGHIJKLMNOPQRSTUVWX", "abcdefghijklmnopqrstuvwx");    /* 24 after # */
    expect_room("abcdefghijklmnopqrstuvwxy", NULL);                          /* 25 */
    expect_room("#abcdefghijklmnopqrstuvwxy", NULL);
    expect_room("", NULL);
    expect_room("#", NULL);
    expect_room("##dev", NULL);
    expect_room("dev#", NULL);
    expect_room("my room", NULL);
    expect_room("caf\xc3\xa9", NULL);
    expect_room("a.b", NULL);
}

Test(proto_cmd, room_norm_uses_only_len_bytes, .timeout = 10)
{
    char out[25];
    cr_assert_eq(chat_room_norm("#DevXYZ", 4, out), 3);
    cr_assert_str_eq(out, "dev");
    cr_assert_eq(chat_room_norm("de\0v", 4, out), 0);
}

Test(proto_cmd, name_eq, .timeout = 10)
{
    cr_assert(chat_name_eq("bob", 3, "bob", 3));
    cr_assert(chat_name_eq("Bob", 3, "bOB", 3));
    cr_assert(chat_name_eq("a_-1Z", 5, "A_-1z", 5));
    cr_assert(chat_name_eq("", 0, "", 0));
    cr_assert(!chat_name_eq("bob", 3, "bobby", 5));
    cr_assert(!chat_name_eq("bob", 3, "bod", 3));
    cr_assert(!chat_name_eq("a", 1, "", 0));
    /* ASCII only: '@' and '`' are not letters, bytes >= 0x80 compare as-is */
    cr_assert(!chat_name_eq("@", 1, "`", 1));
    cr_assert(!chat_name_eq("[", 1, "{", 1));
    cr_assert(!chat_name_eq("\xc3\xa9", 2, "\xc3\x89", 2));
    cr_assert(chat_name_eq("bobX", 3, "BOBY", 3));
}

/* Issue 17, item 5: names that look alike are one name (aIice beside alice, b0b beside
 * bob, rn for m), and the server's and its staff's names are nobody's. */
Test(proto_cmd, name_keys_and_lookalikes, .timeout = 10)
{
    static const char *const alike[][2] = {
        {"alice", "aIice"}, {"alice", "a1ice"}, {"ALICE", "alice"}, {"bob", "b0b"},
        {"Oscar", "0scar"}, {"modern", "modem"}, {"vvilma", "wilma"}, {"Bill", "b1ll"},
    };
    static const char *const unlike[][2] = {
        {"alice", "alicia"}, {"bob", "bobo"}, {"ana", "anna"}, {"rn", "r"}, {"ab", "ba"},
    };
    for (size_t i = 0; i < sizeof alike / sizeof alike[0]; i++)
        cr_assert(chat_name_alike(alike[i][0], strlen(alike[i][0]), alike[i][1],
                                  strlen(alike[i][1])),
                  "%s and %s should look alike", alike[i][0], alike[i][1]);
    for (size_t i = 0; i < sizeof unlike / sizeof unlike[0]; i++)
        cr_assert(!chat_name_alike(unlike[i][0], strlen(unlike[i][0]), unlike[i][1],
                                   strlen(unlike[i][1])),
                  "%s and %s should differ", unlike[i][0], unlike[i][1]);
    char key[CHAT_NAME_KEY_MAX + 1];
    cr_assert_eq(chat_name_key("M0dern-IL1", 10, key), 9);
    cr_assert_str_eq(key, "m0dem-111");
    /* Guest names are their own keys: the cluster's scripts make them, with no folding. */
    cr_assert_eq(chat_name_key("guest1017", 9, key), 9);
    cr_assert_str_eq(key, "guest1017");
    static const char *const reserved[] = {"Server", "admin", "Adm1n", "NickServ", "st_proactor",
                                           "ROOT", "sysop", "Moderator", "ChanServ"};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        cr_assert(chat_nick_reserved(reserved[i], strlen(reserved[i])), "%s not reserved",
                  reserved[i]);
    cr_assert(!chat_nick_reserved("servers", 7) && !chat_nick_reserved("alice", 5));
    cr_assert(chat_nick_valid("GUE5T", 5), "gue5t is not guest");
    cr_assert(!chat_nick_valid("GUEST5", 6));
}
