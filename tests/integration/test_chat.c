/* Chat mode (the default): welcome, messages, commands, history, ordering and the text
 * sanitiser, with raw TCP clients so that every byte is checked (docs/protocol.md).
 * Absence is asserted by order: after the forbidden line would have arrived, someone
 * sends a marker, and the marker must be the next line. */
#include "harness.h"

#include <criterion/criterion.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(chat, .timeout = 60, .fini = h_cleanup);

/* 1. Welcome lines and the join notice, with exact user counts. */

/* Connects p, the online-th client, and checks its two welcome lines word for word:
 * "*** Welcome to st_proactor, guestN! <online> user(s) online. Type /help for
 * commands." and "*** You are in lobby (<online> user(s))." Returns N. */
static int expect_welcome(h_server *s, h_proc *p, int online)
{
    char line[1024], want[256];
    const char *users = online == 1 ? "user" : "users";
    cr_assert(h_tcp_connect(p, "127.0.0.1", s->port));
    cr_assert(h_server_wait_connected(s, online));
    cr_assert(h_read_line(&p->out, line, sizeof line, H_WAIT_MS) > 0, "no welcome");
    int num = -1;
    cr_assert(sscanf(line, "*** Welcome to st_proactor, guest%d!", &num) == 1, "got \"%s\"",
              line);
    snprintf(want, sizeof want,
             "*** Welcome to st_proactor, guest%d! %d %s online. Type /help for commands.\r\n",
             num, online, users);
    cr_assert_str_eq(line, want);
    snprintf(want, sizeof want, "*** You are in lobby (%d %s).\r\n", online, users);
    h_expect_line(p, want);
    return num;
}

static void welcome(const char *dispatch)
{
    h_server s;
    cr_assert(h_server_start(&s, "--dispatch", dispatch, NULL), "no banner");
    h_proc a, b, c;
    char want[256];

    int na = expect_welcome(&s, &a, 1);

    int nb = expect_welcome(&s, &b, 2);
    cr_assert_neq(na, nb, "two clients got the same guest number");
    snprintf(want, sizeof want, "*** guest%d has joined lobby.\r\n", nb);
    h_expect_line(&a, want);

    int nc = expect_welcome(&s, &c, 3);
    snprintf(want, sizeof want, "*** guest%d has joined lobby.\r\n", nc);
    h_expect_line(&a, want);
    h_expect_line(&b, want);

    /* The newcomer got nothing else before the first live message. */
    h_proc *all[] = {&a, &b, &c};
    char nick[32];
    snprintf(nick, sizeof nick, "guest%d", na);
    h_chat_relay(all, 3, 0, nick, "first");
    h_server_stop_all(&s, all, 3);
}
H_EACH_DISPATCH(chat, welcome)

/* Regression (review of src/server): the guest nickname was registered (and so
 * reachable by /msg) before the welcome was even queued, so a PM aimed at the next guest
 * number could arrive first. On connect the client receives the welcome, then "*** You
 * are in lobby", then history, then live messages (docs/protocol.md). Probabilistic: a flood of /msg to the next guest
 * number races each connect. */
Test(chat, pm_before_welcome, .timeout = 120)
{
    h_server s;
    cr_assert(h_server_start(&s, "--flood", "0", "--history", "0", "--sendq", "64M", NULL),
              "no banner");
    enum { ROUNDS = 30, LINES = 100000 };
    int online = 0, bad = 0;
    char first[ROUNDS][2][256];
    for (int r = 0; r < ROUNDS && !bad; r++) {
        h_proc a, c;
        char na[32], nc[32], line[1024];
        cr_assert(h_chat_connect(&s, &a, ++online, na, sizeof na));
        int num = atoi(na + 5);
        char one[64];
        int len1 = snprintf(one, sizeof one, "/msg guest%d early\n", num + 1);
        char *buf = malloc((size_t)len1 * LINES);
        for (int i = 0; i < LINES; i++)
            memcpy(buf + (size_t)i * (size_t)len1, one, (size_t)len1);
        pid_t w = fork();
        if (w == 0) {
            h_write(a.in, buf, (size_t)len1 * LINES);
            _exit(0);
        }
        /* Let the flood get going, then connect while it runs. */
        cr_assert(h_wait_line(&a.out, "no user named", NULL, line, sizeof line, H_WAIT_MS));
        cr_assert(h_tcp_connect(&c, "127.0.0.1", s.port));
        free(buf);
        cr_assert(h_read_line(&c.out, first[r][0], sizeof first[r][0], H_WAIT_MS) > 0);
        cr_assert(h_read_line(&c.out, first[r][1], sizeof first[r][1], H_WAIT_MS) > 0);
        (void)nc;
        (void)line;
        if (strncmp(first[r][0], "*** Welcome", 11) != 0 ||
            strncmp(first[r][1], "*** You are in lobby", 20) != 0) {
            bad = 1;
            cr_log_error("round %d: first lines \"%.60s\" / \"%.60s\"", r, first[r][0],
                         first[r][1]);
        }
        h_proc_close(&a);
        h_proc_close(&c);
        waitpid(w, NULL, 0);
        online = 0;
        /* wait until both are gone */
        cr_assert(h_server_wait_disconnected(&s, 0));
    }
    cr_assert(!bad, "a PM arrived before the welcome lines");
    h_server_stop(&s);
}

/* 2. Messages: "<nick> text" CRLF at every other member, never at the sender; LF, CRLF
 * and CR NUL end lines; a line split across many writes is one message. */
static void messages(const char *dispatch)
{
    h_server s;
    h_proc a, b, c;
    h_proc *all[] = {&a, &b, &c};
    char nk[3][32], want[256];
    h_chat_start(&s, all, 3, nk, "--dispatch", dispatch, NULL);

    h_chat_relay(all, 3, 0, nk[0], "hello from a");
    h_chat_relay(all, 3, 1, nk[1], "hello from b");
    h_chat_relay(all, 3, 2, nk[2], "hello from c");

    /* CRLF */
    cr_assert(h_send(&a, "crlf line\r\n"));
    snprintf(want, sizeof want, "<%s> crlf line\r\n", nk[0]);
    h_expect_line(&b, want);
    h_expect_line(&c, want);
    /* CR NUL (telnet), then a bare CR followed by something else */
    cr_assert(h_write(a.in, "cr nul line\r\0", 13));
    snprintf(want, sizeof want, "<%s> cr nul line\r\n", nk[0]);
    h_expect_line(&b, want);
    h_expect_line(&c, want);
    cr_assert(h_send(&a, "bare cr\rnext\n"));
    snprintf(want, sizeof want, "<%s> bare cr\r\n", nk[0]);
    h_expect_line(&b, want);
    h_expect_line(&c, want);
    snprintf(want, sizeof want, "<%s> next\r\n", nk[0]);
    h_expect_line(&b, want);
    h_expect_line(&c, want);

    /* One line in many writes, with another client's whole line in between (a round
     * trip: the server has read the first part by then). */
    const char *parts[] = {"sp", "lit ", "acr", "oss ", "ma", "ny ", "wri", "tes"};
    for (int i = 0; i < 4; i++)
        cr_assert(h_send(&a, parts[i]));
    h_chat_relay(all, 3, 1, nk[1], "in between");
    for (int i = 4; i < 8; i++)
        cr_assert(h_send(&a, parts[i]));
    cr_assert(h_send(&a, "\r\n"));
    snprintf(want, sizeof want, "<%s> split across many writes\r\n", nk[0]);
    h_expect_line(&b, want);
    h_expect_line(&c, want);

    /* Empty lines (also once sanitised) are ignored: the next relayed line is the marker. */
    cr_assert(h_send(&a, "\n\r\n\x1b[0m\n\x07\n"));
    h_chat_relay(all, 3, 0, nk[0], "after empties");
    /* The sender never got its own lines: its next line is c's marker. */
    h_chat_relay(all, 3, 2, nk[2], "marker");
    h_server_stop_all(&s, all, 3);
}
H_EACH_DISPATCH(chat, messages)

/* 3a. /nick */
Test(chat, nick)
{
    h_server s;
    h_proc a, b;
    h_proc *all[] = {&a, &b};
    char nk[2][32];
    h_chat_start(&s, all, 2, nk, NULL);

    cr_assert(h_send(&a, "/nick Alice\n"));
    h_expect_line(&a, "*** You are now known as Alice.\r\n");
    char want[256];
    snprintf(want, sizeof want, "*** %s is now known as Alice.\r\n", nk[0]);
    h_expect_line(&b, want);
    h_chat_relay(all, 2, 0, "Alice", "as alice");

    /* Invalid names: error to the sender only. */
    const char *bad[] = {"9lives", "has space", "bad!char", "abcdefghijklmnopq", "guest42",
                         "Guestly", "_under"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char cmd[128], line[1024];
        snprintf(cmd, sizeof cmd, "/nick %s\n", bad[i]);
        cr_assert(h_send(&b, cmd));
        cr_assert(h_read_line(&b.out, line, sizeof line, H_WAIT_MS) > 0, "no reply");
        cr_assert(strncmp(line, "*** Error: ", 11) == 0, "/nick %s: got \"%s\"", bad[i], line);
        cr_assert(strstr(line, "\r\n") == line + strlen(line) - 2);
    }
    /* Taken, ignoring case. */
    cr_assert(h_send(&b, "/nick aLiCe\n"));
    char line[1024];
    cr_assert(h_read_line(&b.out, line, sizeof line, H_WAIT_MS) > 0);
    cr_assert(strncmp(line, "*** Error: ", 11) == 0, "taken nick: got \"%s\"", line);
    /* A 16-character name is valid; nothing of the errors reached a. */
    cr_assert(h_send(&b, "/nick B_b-0123456789a\n"));
    h_expect_line(&b, "*** You are now known as B_b-0123456789a.\r\n");
    snprintf(want, sizeof want, "*** %s is now known as B_b-0123456789a.\r\n", nk[1]);
    h_expect_line(&a, want);
    h_chat_relay(all, 2, 1, "B_b-0123456789a", "marker");
    h_server_stop_all(&s, all, 2);
}

/* 3b. /who, /rooms, /help: replies to the sender only. */
Test(chat, who_rooms_help)
{
    h_server s;
    h_proc a, b;
    h_proc *all[] = {&a, &b};
    char nk[2][32], want[256];
    h_chat_start(&s, all, 2, nk, NULL);
    cr_assert(h_send(&a, "/nick Ann\n"));
    h_expect_line(&a, "*** You are now known as Ann.\r\n");
    snprintf(want, sizeof want, "*** %s is now known as Ann.\r\n", nk[0]);
    h_expect_line(&b, want);

    cr_assert(h_send(&b, "/who\n"));
    char l1[1024], l2[1024];
    snprintf(want, sizeof want, "*** 2 users in lobby: Ann, %s\r\n", nk[1]);
    char want2[256];
    snprintf(want2, sizeof want2, "*** 2 users in lobby: %s, Ann\r\n", nk[1]);
    cr_assert(h_read_line(&b.out, l1, sizeof l1, H_WAIT_MS) > 0, "no /who reply");
    if (strcmp(l1, want) != 0 && strcmp(l1, want2) != 0) {
        ssize_t n2 = h_read_line(&b.out, l2, sizeof l2, 2000);
        cr_assert_fail("/who: want \"*** 2 users in lobby: Ann, %s\" (docs/protocol.md), got "
                       "\"%.*s\" then \"%.*s\"",
                       nk[1], (int)strcspn(l1, "\r\n"), l1,
                       n2 > 0 ? (int)strcspn(l2, "\r\n") : 0, n2 > 0 ? l2 : "");
    }
    cr_assert(h_send(&b, "/rooms\n"));
    h_expect_line(&b, "*** 1 room: lobby (2)\r\n");

    /* b's own commands are answered in order: the help text ends where
     * the reply to the /rooms after it begins.  (Another client's line
     * could arrive in between, since nothing orders it against b's
     * commands; nobody else talks here.) */
    cr_assert(h_send(&b, "/help\n/rooms\n"));
    char line[1024];
    bool saw[7] = {0};
    const char *cmds[] = {"/nick", "/who", "/me", "/msg", "/join", "/rooms", "/quit"};
    int lines = 0;
    snprintf(want, sizeof want, "*** 1 room: lobby (2)\r\n");
    for (;;) {
        cr_assert(h_read_line(&b.out, line, sizeof line, H_WAIT_MS) > 0, "help: no marker");
        if (strcmp(line, want) == 0)
            break;
        cr_assert(strncmp(line, "*** ", 4) == 0, "help line \"%s\" lacks \"*** \"", line);
        cr_assert(strstr(line, "\r\n") == line + strlen(line) - 2, "not CRLF: \"%s\"", line);
        for (int i = 0; i < 7; i++)
            if (strstr(line, cmds[i]))
                saw[i] = true;
        cr_assert(++lines < 100);
    }
    for (int i = 0; i < 7; i++)
        cr_assert(saw[i], "/help does not mention %s", cmds[i]);
    /* a got nothing of b's commands: its next line is b's marker. */
    h_chat_relay(all, 2, 1, nk[1], "marker b");
    h_server_stop_all(&s, all, 2);
}

/* 3c. /me, /msg, unknown commands, //text. */
static void me_msg(const char *dispatch)
{
    h_server s;
    h_proc a, b, c;
    h_proc *all[] = {&a, &b, &c};
    char nk[3][32], want[256];
    h_chat_start(&s, all, 3, nk, "--dispatch", dispatch, NULL);

    cr_assert(h_send(&a, "/me waves hello\n"));
    snprintf(want, sizeof want, "* %s waves hello\r\n", nk[0]);
    h_expect_line(&a, want);
    h_expect_line(&b, want);
    h_expect_line(&c, want);

    /* /msg: the target and the sender's confirmation only; the nick ignores case. */
    char cmd[128], upper[32];
    snprintf(upper, sizeof upper, "%s", nk[1]);
    for (char *p = upper; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    snprintf(cmd, sizeof cmd, "/msg %s psst, secret\n", upper);
    cr_assert(h_send(&a, cmd));
    snprintf(want, sizeof want, "[PM from %s] psst, secret\r\n", nk[0]);
    h_expect_line(&b, want);
    char line[1024];
    cr_assert(h_read_line(&a.out, line, sizeof line, H_WAIT_MS) > 0);
    cr_assert(strncmp(line, "[PM to ", 7) == 0 && strstr(line, "] psst, secret\r\n"),
              "sender confirmation: got \"%s\"", line);
    cr_assert(strncasecmp(line + 7, nk[1], strlen(nk[1])) == 0, "got \"%s\"", line);

    /* Unknown nick: an error to the sender. */
    cr_assert(h_send(&a, "/msg nobodyhere hi\n"));
    cr_assert(h_read_line(&a.out, line, sizeof line, H_WAIT_MS) > 0);
    cr_assert(strncmp(line, "*** Error: ", 11) == 0, "/msg to nobody: got \"%s\"", line);

    /* Unknown command: exact error, never relayed. */
    cr_assert(h_send(&a, "/frobnicate now\n"));
    h_expect_line(&a, "*** Unknown command '/frobnicate'. Type /help for commands.\r\n");

    /* //text sends /text. */
    cr_assert(h_send(&a, "//not a command\n"));
    snprintf(want, sizeof want, "<%s> /not a command\r\n", nk[0]);
    h_expect_line(&b, want);
    h_expect_line(&c, want);

    /* c saw neither the PM nor the errors; b saw no error: both get the marker next. */
    h_chat_relay(all, 3, 2, nk[2], "marker");
    h_chat_relay(all, 3, 1, nk[1], "marker b");
    h_server_stop_all(&s, all, 3);
}
H_EACH_DISPATCH(chat, me_msg)

/* Regression (review of src/server): the sender's echo of a long /msg was cut short.
 * "/msg NICK text": the sender sees "[PM to NICK] text" -- the whole text, as the
 * recipient gets it. */
Test(chat, pm_echo_whole_text, .timeout = 60)
{
    h_server s;
    h_proc a, b;
    h_proc *all[] = {&a, &b};
    char nk[2][32], line[4096], want[4096];
    h_chat_start(&s, all, 2, nk, NULL);
    char text[1001];
    memset(text, 't', 1000);
    text[1000] = '\0';
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "/msg %s %s\n", nk[1], text);
    cr_assert(h_send(&a, cmd));
    snprintf(want, sizeof want, "[PM from %s] %s\r\n", nk[0], text);
    h_expect_line(&b, want);
    snprintf(want, sizeof want, "[PM to %s] %s\r\n", nk[1], text);
    cr_assert(h_read_line(&a.out, line, sizeof line, H_WAIT_MS) > 0);
    cr_assert(strcmp(line, want) == 0, "sender's echo is %zu bytes, want %zu", strlen(line),
              strlen(want));
    h_server_stop_all(&s, all, 2);
}

/* Issue 17, item 6: a line that shows nothing reaches nobody (it used to arrive as a
 * blank "<guest1> " line), and a letter under 1,000 combining marks arrives with 4. */
Test(chat, invisible_and_heavy_unicode, .timeout = 60)
{
    h_server s;
    h_proc a, b;
    h_proc *all[] = {&a, &b};
    char nk[2][32], want[256];
    h_chat_start(&s, all, 2, nk, NULL);
    cr_assert(h_send(&a, "\xe2\x80\x8b\xe2\x80\x8b\n"));  /* U+200B only */
    cr_assert(h_send(&a, "\xe3\x85\xa4\n"));              /* U+3164 only */
    cr_assert(h_send(&a, "/me \xe1\x85\x9f\n"));          /* /me U+115F */
    char zalgo[1 + 2000 + 2] = "Z";
    for (int i = 0; i < 1000; i++)
        memcpy(zalgo + 1 + 2 * i, "\xcc\x81", 2);
    strcpy(zalgo + 2001, "\n");
    cr_assert(h_send(&a, zalgo));
    snprintf(want, sizeof want, "<%s> Z\xcc\x81\xcc\x81\xcc\x81\xcc\x81\r\n", nk[0]);
    h_expect_line(&b, want); /* the first line b gets: the invisible ones went nowhere */
    h_expect_line(&a, "*** Error: usage: /me ACTION\r\n");
    h_chat_relay(all, 2, 0, nk[0], "ok");
    h_server_stop_all(&s, all, 2);
}

/* Issue 17, item 5: server lines cannot be forged with a wrap of spaces, and names that
 * look like another's or like the server's cannot be taken. */
Test(chat, forgery_and_lookalike_names, .timeout = 60)
{
    h_server s;
    h_proc a, b;
    h_proc *all[] = {&a, &b};
    char nk[2][32], want[512];
    h_chat_start(&s, all, 2, nk, NULL);
    cr_assert(h_send(&a, "/nick alice\n"));
    h_expect_line(&a, "*** You are now known as alice.\r\n");
    snprintf(want, sizeof want, "*** %s is now known as alice.\r\n", nk[0]);
    h_expect_line(&b, want);
    static const char *const refused[][2] = {
        {"/nick aIice\n", "*** Error: the nickname aIice is taken.\r\n"},
        {"/nick a1ice\n", "*** Error: the nickname a1ice is taken.\r\n"},
        {"/nick Server\n", "*** Error: the nickname Server is reserved.\r\n"},
        {"/nick NickServ\n", "*** Error: the nickname NickServ is reserved.\r\n"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        cr_assert(h_send(&b, refused[i][0]));
        h_expect_line(&b, refused[i][1]);
    }
    char line[400] = "hi";
    memset(line + 2, ' ', 200);
    strcpy(line + 202, "*** alice has left (quit: bye).\n");
    cr_assert(h_send(&b, line));
    snprintf(want, sizeof want, "<%s> hi   *** alice has left (quit: bye).\r\n", nk[1]);
    h_expect_line(&a, want);
    h_server_stop_all(&s, all, 2);
}

/* 3d. /join: leave notice in the old room, join notice in the new, "You are in", the new
 * room's history; afterwards the two rooms are separate. */
static void join(const char *dispatch)
{
    h_server s;
    h_proc a, b, c, d;
    h_proc *all[] = {&a, &b, &c, &d};
    char nk[4][32], want[256];
    h_chat_start(&s, all, 4, nk, "--dispatch", dispatch, "--history", "5", NULL);

    /* c moves to dev (written "#Dev": '#' dropped, case-insensitive). */
    cr_assert(h_send(&c, "/join #Dev\n"));
    h_expect_line(&c, "*** You are in dev (1 user).\r\n");
    snprintf(want, sizeof want, "*** %s has left for dev.\r\n", nk[2]);
    h_expect_line(&a, want);
    h_expect_line(&b, want);
    h_expect_line(&d, want);
    h_proc *dev[] = {&c};
    (void)dev;
    cr_assert(h_send(&c, "dev one\n"));
    cr_assert(h_send(&c, "dev two\n"));

    /* Lobby traffic does not reach c, dev traffic does not reach the lobby. */
    h_proc *lobby[] = {&a, &b, &d};
    h_chat_relay(lobby, 3, 0, nk[0], "lobby only");

    /* d follows: dev sees the join notice; d gets "You are in" then dev's history. */
    cr_assert(h_send(&d, "/join dev\n"));
    h_expect_line(&d, "*** You are in dev (2 users).\r\n");
    snprintf(want, sizeof want, "<%s> dev one\r\n", nk[2]);
    h_expect_line(&d, want);
    snprintf(want, sizeof want, "<%s> dev two\r\n", nk[2]);
    h_expect_line(&d, want);
    snprintf(want, sizeof want, "*** %s has joined dev.\r\n", nk[3]);
    h_expect_line(&c, want);
    snprintf(want, sizeof want, "*** %s has left for dev.\r\n", nk[3]);
    h_expect_line(&a, want);
    h_expect_line(&b, want);

    /* The sender of /join is not in the old room any more: c's and d's next lines are
     * dev's marker, a's and b's the lobby's. */
    h_proc *dv[] = {&c, &d};
    h_chat_relay(dv, 2, 0, nk[2], "dev marker");
    h_proc *lb[] = {&a, &b};
    h_chat_relay(lb, 2, 1, nk[1], "lobby marker");
    h_chat_relay(dv, 2, 1, nk[3], "dev marker 2");

    cr_assert(h_send(&a, "/rooms\n"));
    char line[1024];
    cr_assert(h_read_line(&a.out, line, sizeof line, H_WAIT_MS) > 0);
    cr_assert(strcmp(line, "*** 2 rooms: lobby (2), dev (2)\r\n") == 0 ||
                  strcmp(line, "*** 2 rooms: dev (2), lobby (2)\r\n") == 0,
              "/rooms: got \"%s\"", line);
    /* Invalid room name: an error. */
    cr_assert(h_send(&a, "/join bad.room\n"));
    cr_assert(h_read_line(&a.out, line, sizeof line, H_WAIT_MS) > 0);
    cr_assert(strncmp(line, "*** Error: ", 11) == 0, "/join bad.room: got \"%s\"", line);
    h_chat_relay(lb, 2, 1, nk[1], "last");
    h_server_stop_all(&s, all, 4);
}
H_EACH_DISPATCH(chat, join)

/* 3e. /quit reason: Bye and EOF for the sender, the reason for the room; plain /quit. */
static void quit(const char *dispatch)
{
    h_server s;
    h_proc a, b, c;
    h_proc *all[] = {&a, &b, &c};
    char nk[3][32], want[256];
    h_chat_start(&s, all, 3, nk, "--dispatch", dispatch, NULL);

    cr_assert(h_send(&c, "/quit gone fishing\n"));
    h_expect_line(&c, "*** Bye.\r\n");
    h_expect_eof(&c, H_WAIT_MS);
    snprintf(want, sizeof want, "*** %s has left (quit: gone fishing).\r\n", nk[2]);
    h_expect_line(&a, want);
    h_expect_line(&b, want);
    cr_assert(h_server_wait_disconnected(&s, 2));

    cr_assert(h_send(&b, "/quit\n"));
    h_expect_line(&b, "*** Bye.\r\n");
    h_expect_eof(&b, H_WAIT_MS);
    snprintf(want, sizeof want, "*** %s has left (quit).\r\n", nk[1]);
    h_expect_line(&a, want);
    cr_assert(h_server_wait_disconnected(&s, 1));
    h_server_stop_all(&s, all, 3);
}
H_EACH_DISPATCH(chat, quit)

/* Regression (review of src/server): lines that follow "/quit" in the same segment were
 * still handled. "/quit" ends the session: a line sent after it must not be relayed to
 * the room, and the room's next line is the leave notice. */
static void quit_then_line(const char *dispatch)
{
    h_server s;
    h_proc a, b;
    h_proc *all[] = {&a, &b};
    char nk[2][32], want[256];
    h_chat_start(&s, all, 2, nk, "--dispatch", dispatch, NULL);
    cr_assert(h_send(&a, "/quit bye\nsaid after quit\n/nick Zed\n"));
    snprintf(want, sizeof want, "*** %s has left (quit: bye).\r\n", nk[0]);
    h_expect_line(&b, want);
    h_server_stop_all(&s, all, 2);
}
H_DISPATCH_TEST(chat, quit_then_line, pool, .timeout = 60)
H_DISPATCH_TEST(chat, quit_then_line, inline, .timeout = 60)

/* True when s is valid UTF-8. */
static bool utf8_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
                                                                                 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!len || i + len > n)
            return false;
        for (size_t k = 1; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
        i += len;
    }
    return true;
}

/* Regression (review of src/server): a /quit reason cut at 100 bytes split a UTF-8
 * character in the leave notice. Everything relayed is valid UTF-8 (docs/protocol.md,
 * Text safety). */
Test(chat, quit_reason_valid_utf8, .timeout = 60)
{
    h_server s;
    h_proc a, b;
    h_proc *all[] = {&a, &b};
    char nk[2][32], line[1024];
    h_chat_start(&s, all, 2, nk, NULL);
    char cmd[256] = "/quit ";
    size_t len = strlen(cmd);
    memset(cmd + len, 'r', 99);
    len += 99;
    for (int i = 0; i < 10; i++) {
        memcpy(cmd + len, "\xC3\xA9", 2); /* é */
        len += 2;
    }
    cmd[len++] = '\n';
    cr_assert(h_write(a.in, cmd, len));
    ssize_t n = h_read_line(&b.out, line, sizeof line, H_WAIT_MS);
    cr_assert(n > 0);
    cr_assert(strstr(line, "has left (quit: "), "got \"%s\"", line);
    cr_assert(utf8_ok((const unsigned char *)line, (size_t)n),
              "leave notice relayed to others is not valid UTF-8");
    h_server_stop_all(&s, all, 2);
}

/* 4. History: a newcomer gets exactly the last N lines after "You are in", before live
 * ones; --history 0 gives none. */
static void history(const char *n_hist, int n)
{
    h_server s;
    h_proc a, b, c;
    h_proc *ab[] = {&a, &b};
    char nk[2][32], nc[32], want[256];
    h_chat_start(&s, ab, 2, nk, "--history", n_hist, NULL);
    for (int i = 1; i <= 6; i++) {
        char text[32];
        snprintf(text, sizeof text, "msg %d", i);
        h_chat_relay(ab, 2, i % 2, nk[i % 2], text);
    }
    cr_assert(h_chat_connect(&s, &c, 3, nc, sizeof nc));
    for (int i = 7 - n; i <= 6; i++) {
        snprintf(want, sizeof want, "<%s> msg %d\r\n", nk[i % 2], i);
        h_expect_line(&c, want);
    }
    snprintf(want, sizeof want, "*** %s has joined lobby.\r\n", nc);
    h_expect_line(&a, want);
    h_expect_line(&b, want);
    h_proc *all[] = {&a, &b, &c};
    h_chat_relay(all, 3, 0, nk[0], "live");
    h_server_stop_all(&s, all, 3);
}

Test(chat, history_3)
{
    history("3", 3);
}

Test(chat, history_0)
{
    history("0", 0);
}

/* 5. Order: 4 senders x 200 lines in one room, 3 receivers: each sender's lines in
 * order, none lost or doubled, and the same global sequence at every receiver. */
#define O_SENDERS 4
#define O_RECV 3
#define O_LINES 200
static void order(const char *dispatch)
{
    h_server s;
    cr_assert(h_server_start(&s, "--dispatch", dispatch, "--flood", "0", NULL), "no banner");
    h_proc cl[O_SENDERS + O_RECV];
    h_proc *all[O_SENDERS + O_RECV];
    for (int i = 0; i < O_SENDERS + O_RECV; i++)
        all[i] = &cl[i];
    char nk[O_SENDERS + O_RECV][32];
    h_chat_connect_n(&s, all, O_SENDERS + O_RECV, 1, nk);

    /* Interleaved batches so that the senders are handled concurrently. */
    enum { BATCH = 10 };
    for (int base = 0; base < O_LINES; base += BATCH)
        for (int k = 0; k < O_SENDERS; k++) {
            char buf[BATCH * 40];
            size_t len = 0;
            for (int j = base; j < base + BATCH; j++)
                len += (size_t)snprintf(buf + len, sizeof buf - len, "s%d m%03d\n", k, j);
            cr_assert(h_write(cl[k].in, buf, len));
        }

    enum { TOTAL = O_SENDERS * O_LINES };
    static char seq[O_RECV][TOTAL][48];
    for (int r = 0; r < O_RECV; r++) {
        h_proc *rc = &cl[O_SENDERS + r];
        int next[O_SENDERS] = {0};
        for (int i = 0; i < TOTAL; i++) {
            char line[256];
            ssize_t n = h_read_line(&rc->out, line, sizeof line, H_WAIT_MS);
            cr_assert(n > 0, "receiver %d: %s after %d lines", r, n ? "timeout" : "EOF", i);
            int k = -1, m = -1;
            char nick[32];
            cr_assert(sscanf(line, "<%31[^>]> s%d m%d", nick, &k, &m) == 3,
                      "receiver %d: unexpected line \"%s\"", r, line);
            cr_assert(k >= 0 && k < O_SENDERS);
            cr_assert_str_eq(nick, nk[k]);
            cr_assert_eq(m, next[k], "receiver %d: sender %d's line %d came when %d was due",
                         r, k, m, next[k]);
            next[k]++;
            snprintf(seq[r][i], sizeof seq[r][i], "%.47s", line);
        }
    }
    for (int r = 1; r < O_RECV; r++)
        for (int i = 0; i < TOTAL; i++)
            cr_assert_str_eq(seq[r][i], seq[0][i],
                             "receivers 0 and %d differ at position %d", r, i);
    /* Nothing more (no duplicates): the next line everywhere is a marker. */
    h_proc *recv[O_RECV];
    for (int r = 0; r < O_RECV; r++)
        recv[r] = &cl[O_SENDERS + r];
    h_chat_relay(recv, O_RECV, 0, nk[O_SENDERS], "end marker");
    h_close_all(all, O_SENDERS + O_RECV);
    h_server_stop(&s);
}
H_EACH_DISPATCH(chat, order)

/* 6. Hostile text is neutralised; valid UTF-8 passes byte for byte. */
static void expect_sanitised(h_proc *const ab[], const char *nick, const char *in, size_t len,
                             const char *out)
{
    char want[1024];
    cr_assert(h_write(ab[0]->in, in, len));
    snprintf(want, sizeof want, "<%s> %s\r\n", nick, out);
    h_expect_line(ab[1], want);
}

Test(chat, hostile_text)
{
    h_server s;
    h_proc a, b;
    h_proc *ab[] = {&a, &b};
    char nk[2][32];
    h_chat_start(&s, ab, 2, nk, NULL);
#define SAN(in, out) expect_sanitised(ab, nk[0], in, sizeof(in) - 1, out)
    SAN("\x1b[31mred\x1b[0m plain\n", "red plain");                   /* CSI colour */
    SAN("a\x1b]0;evil title\x07" "b\n", "ab");                         /* OSC, BEL */
    SAN("a\x1b]2;t\x1b\\b\n", "ab");                                   /* OSC, ST */
    SAN("x\x1b[2J\x1b[H\x1b[10;20Hy\x1b[Az\n", "xyz");                 /* cursor moves */
    SAN("p\x1bPdcs data\x1b\\q\n", "pq");                              /* DCS */
    SAN("m\x1b" "cn\n", "mn");                                         /* ESC x */
    SAN("c1\xc2\x9b" "31m\xc2\x85 end\n", "c131m end");                /* C1: CSI, NEL */
    SAN("abc\x08\x08X\n", "aX");                                       /* BS */
    SAN("abc\x7f" "d\n", "abd");                                       /* DEL */
    SAN("\xe4\xb8\xad\x7f" "z\n", "z");                                /* DEL erases a whole char */
    SAN("left \xe2\x80\xae" "desrever\xe2\x80\xac right\n", "left desrever right"); /* bidi */
    SAN("iso \xe2\x81\xa6" "x\xe2\x81\xa9\n", "iso x");                /* isolates */
    SAN("head\0tail\n", "headtail");                                   /* NUL mid-line */
    SAN("bell\x07 tab\there\n", "bell tab here");                      /* C0, TAB */
    SAN("bad \xc3\x28 x\n", "bad \xef\xbf\xbd( x");                    /* invalid UTF-8 */
    SAN("over \xc0\xaf\n", "over \xef\xbf\xbd\xef\xbf\xbd");           /* overlong */
    SAN("sur \xed\xa0\x80\n", "sur \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); /* surrogate */
    SAN("lone \x80 \xfe\n", "lone \xef\xbf\xbd \xef\xbf\xbd");
    /* Valid UTF-8 in several scripts, and emoji: byte-identical. */
    const char *ok[] = {
        "caf\xc3\xa9 na\xc3\xafve \xc3\x85ngstr\xc3\xb6m",           /* Latin */
        "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82",            /* Cyrillic */
        "\xce\x93\xce\xb5\xce\xb9\xce\xac",                            /* Greek */
        "\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe7\x95\x8c",            /* CJK */
        "\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d \xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7", /* He, Ar */
        "\xe0\xa4\xa8\xe0\xa4\xae\xe0\xa4\xb8\xe0\xa5\x8d\xe0\xa4\xa4\xe0\xa5\x87", /* Devanagari */
        "\xf0\x9f\x98\x80\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd \xf0\x9f\x87\xab\xf0\x9f\x87\xb7", /* emoji */
        "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7",          /* ZWJ */
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        char in[256];
        int n = snprintf(in, sizeof in, "%s\n", ok[i]);
        expect_sanitised(ab, nk[0], in, (size_t)n, ok[i]);
    }
    /* A line that is only escapes is empty after sanitising: ignored. */
    cr_assert(h_send(&a, "\x1b[2J\x1b[H\n"));
    h_chat_relay(ab, 2, 0, nk[0], "marker");
#undef SAN
    h_server_stop_all(&s, ab, 2);
}

/* The real nc: two netcat clients chat through the server (nc sends LF endings). */

/* Starts nc as the online-th client, reads its welcome (copying the nickname into nick)
 * and checks "*** You are in lobby (<online> user(s))." */
static void nc_join(h_server *s, h_proc *p, int online, char nick[32])
{
    char line[1024], want[64];
    cr_assert(h_nc_start(p, "127.0.0.1", s->port), "cannot start nc");
    cr_assert(h_server_wait_connected(s, online));
    cr_assert(h_read_line(&p->out, line, sizeof line, H_WAIT_MS) > 0);
    cr_assert(sscanf(line, "*** Welcome to st_proactor, %31[^!]", nick) == 1, "got \"%s\"",
              line);
    snprintf(want, sizeof want, "*** You are in lobby (%d %s).\r\n", online,
             online == 1 ? "user" : "users");
    h_expect_line(p, want);
}

static void with_nc(const char *dispatch)
{
    h_server s;
    cr_assert(h_server_start(&s, "--dispatch", dispatch, NULL), "no banner");
    h_proc a, b;
    char na[32] = "", nb[32] = "", want[256];
    nc_join(&s, &a, 1, na);
    nc_join(&s, &b, 2, nb);
    snprintf(want, sizeof want, "*** %s has joined lobby.\r\n", nb);
    h_expect_line(&a, want);
    h_proc *ab[] = {&a, &b};
    h_chat_relay(ab, 2, 0, na, "hello via nc");
    h_chat_relay(ab, 2, 1, nb, "hi back via nc");
    cr_assert(h_send(&b, "/me nods\n"));
    snprintf(want, sizeof want, "* %s nods\r\n", nb);
    h_expect_line(&a, want);
    h_expect_line(&b, want);
    /* nc ends (netcat-openbsd keeps the socket open at stdin EOF without -N, so it is
     * stopped instead): the server sees the connection close. */
    cr_assert(h_proc_stop(&b, SIGTERM, H_WAIT_MS), "nc did not exit");
    snprintf(want, sizeof want, "*** %s has left (connection closed).\r\n", nb);
    h_expect_line(&a, want);
    cr_assert(h_server_wait_disconnected(&s, 1));
    h_proc_close(&a);
    h_proc_close(&b);
    h_server_stop(&s);
}
H_EACH_DISPATCH(chat, with_nc)
