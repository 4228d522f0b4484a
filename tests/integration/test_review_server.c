/* Review of src/server: reproductions of bugs found by reading the code. Each test
 * states the behaviour docs/protocol.md (or README.md) promises; a failure is the bug. */
#include "harness.h"

#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

TestSuite(review, .timeout = 60, .fini = h_cleanup);

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

/* 1. "/quit" ends the session: a line sent after it (in the same segment) must not be
 * relayed to the room, and the room's next line is the leave notice. */
static void quit_then_line(const char *dispatch)
{
    h_server s;
    cr_assert(h_server_start(&s, "--dispatch", dispatch, NULL), "no banner");
    h_proc a, b;
    h_proc *all[] = {&a, &b};
    char nk[2][32], want[256];
    h_chat_connect_n(&s, all, 2, 1, nk);
    cr_assert(h_send(&a, "/quit bye\nsaid after quit\n/nick Zed\n"));
    snprintf(want, sizeof want, "*** %s has left (quit: bye).\r\n", nk[0]);
    h_expect_line(&b, want);
    h_close_all(all, 2);
    h_server_stop(&s);
}
H_DISPATCH_TEST(review, quit_then_line, pool, .timeout = 60)
H_DISPATCH_TEST(review, quit_then_line, inline, .timeout = 60)

/* 2. A legal line (within --max-line) from one client must not get every *other*
 * client dropped as "too slow".  Sanitising can triple a line (each invalid byte
 * becomes U+FFFD), so --sendq must hold two of the longest: --sendq 4K with the
 * default --max-line 2048 is refused at start, and with the smallest accepted value
 * a 1500-byte line of invalid UTF-8 (4500 bytes once sanitised) reaches everyone. */
Test(review, long_line_drops_everyone_else, .timeout = 60)
{
    h_proc p;
    char *argv[] = {(char *)h_server_path(), "--port", "0", "--sendq", "4K", NULL};
    cr_assert_eq(h_spawn(&p, argv, true), 0);
    cr_assert(h_proc_wait(&p, H_WAIT_MS));
    cr_assert(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 2, "--sendq 4K was accepted");
    char err[1024];
    h_read_all(&p.err, err, sizeof err, H_WAIT_MS);
    cr_assert(strstr(err, "--sendq") != NULL, "error does not name --sendq: %s", err);
    h_proc_close(&p);

    h_server s;
    cr_assert(h_server_start(&s, "--sendq", "12416", "--flood", "0", NULL), "no banner");
    h_proc a, b, c;
    h_proc *all[] = {&a, &b, &c};
    char nk[3][32], line[16384];
    h_chat_connect_n(&s, all, 3, 1, nk);
    char msg[1502];
    memset(msg, 0xC0, 1500);
    msg[1500] = '\n';
    msg[1501] = '\0';
    cr_assert(h_send(&a, msg));
    char pre[64];
    snprintf(pre, sizeof pre, "<%s> ", nk[0]);
    for (int k = 1; k < 3; k++) {
        ssize_t n = h_read_line(&all[k]->out, line, sizeof line, H_WAIT_MS);
        cr_assert(n > 0, "client %d: %s", k, n ? "timeout" : "EOF (dropped)");
        cr_assert(strncmp(line, pre, strlen(pre)) == 0,
                  "client %d did not get a's line; got \"%.80s\" (dropped?)", k, line);
    }
    h_close_all(all, 3);
    h_server_stop(&s);
}

/* 3. A newcomer gets the room's --history lines, but never more than half its
 * --sendq: a history bigger than the queue used to get every newcomer dropped as
 * "too slow" on connect.  Now it gets the newest lines that fit, in order. */
static void history_vs_sendq(const char *dispatch)
{
    h_server s;
    cr_assert(h_server_start(&s, "--dispatch", dispatch, "--max-line", "200", "--sendq", "2K",
                             "--flood", "0", "--history", "20", NULL),
              "no banner");
    h_proc a, c;
    char na[32], nc[32], line[1024], want[512];
    cr_assert(h_chat_connect(&s, &a, 1, na, sizeof na));
    char pad[121];
    memset(pad, 'h', 120);
    pad[120] = '\0';
    for (int i = 0; i < 20; i++) {
        char buf[200];
        snprintf(buf, sizeof buf, "%02d %s\n", i, pad);
        cr_assert(h_send(&a, buf));
    }
    /* a never hears its own lines, so use /who to know they were handled. */
    cr_assert(h_send(&a, "/who\n"));
    cr_assert(h_wait_line(&a.out, "1 user in lobby", NULL, line, sizeof line, H_WAIT_MS));
    cr_assert(h_chat_connect(&s, &c, 2, nc, sizeof nc), "newcomer was refused");
    /* Then a marker from a: everything before it is history. */
    cr_assert(h_wait_line(&a.out, "has joined lobby", NULL, line, sizeof line, H_WAIT_MS));
    cr_assert(h_send(&a, "marker\n"));
    int first = -1, got = 0;
    for (;;) {
        ssize_t n = h_read_line(&c.out, line, sizeof line, H_WAIT_MS);
        cr_assert(n > 0, "newcomer: %s after %d history lines", n ? "timeout" : "EOF (dropped)",
                  got);
        snprintf(want, sizeof want, "<%s> marker\r\n", na);
        if (strcmp(line, want) == 0)
            break;
        int i = atoi(line + strlen(na) + 3);
        if (first < 0)
            first = i;
        snprintf(want, sizeof want, "<%s> %02d %s\r\n", na, first + got, pad);
        cr_assert_str_eq(line, want);
        got++;
    }
    cr_assert(got > 0 && got < 20, "replayed %d of 20 history lines (want the newest that fit 1K)",
              got);
    cr_assert_eq(first + got, 20, "the replay does not end with the newest line");
    h_proc_close(&a);
    h_proc_close(&c);
    h_server_stop(&s);
}
H_DISPATCH_TEST(review, history_vs_sendq, inline, .timeout = 60)
H_DISPATCH_TEST(review, history_vs_sendq, pool, .timeout = 60)

/* 4. "/msg NICK text": the sender sees "[PM to NICK] text" -- the whole text, as the
 * recipient gets it. */
Test(review, pm_echo_whole_text, .timeout = 60)
{
    h_server s;
    cr_assert(h_server_start(&s, NULL), "no banner");
    h_proc a, b;
    h_proc *all[] = {&a, &b};
    char nk[2][32], line[4096], want[4096];
    h_chat_connect_n(&s, all, 2, 1, nk);
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
    h_close_all(all, 2);
    h_server_stop(&s);
}

/* 5. Everything relayed is valid UTF-8 (docs/protocol.md, Text safety): a /quit reason
 * cut at 100 bytes must not split a character in the leave notice others see. */
Test(review, quit_reason_valid_utf8, .timeout = 60)
{
    h_server s;
    cr_assert(h_server_start(&s, NULL), "no banner");
    h_proc a, b;
    h_proc *all[] = {&a, &b};
    char nk[2][32], line[1024];
    h_chat_connect_n(&s, all, 2, 1, nk);
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
    h_close_all(all, 2);
    h_server_stop(&s);
}

/* 6. --raw: no welcome text, no prefix, no server text at all -- yet an idle kick
 * writes the chat-mode "*** Idle timeout." line into a raw relay. */
Test(review, raw_idle_no_chat_text, .timeout = 60)
{
    h_server s;
    cr_assert(h_server_start(&s, "--raw", "--idle-timeout", "1", NULL), "no banner");
    h_proc a;
    cr_assert(h_tcp_connect(&a, "127.0.0.1", s.port));
    cr_assert(h_server_wait_connected(&s, 1));
    h_expect_eof(&a, H_WAIT_MS);
    h_proc_close(&a);
    h_server_stop(&s);
}

/* 7. Churn: clients rename, hop rooms, /msg and /who each other and vanish (quit,
 * reset, close) all at once, while an idle timer runs. Run under ASan/TSan: the
 * server must report nothing and exit 0 on SIGTERM with clients still connected. */
static void churn(const char *dispatch)
{
    h_server s;
    cr_assert(h_server_start(&s, "--dispatch", dispatch, "--flood", "0", "--idle-timeout", "1",
                             "--history", "5", NULL),
              "no banner");
    enum { N = 8, ROUNDS = 6 };
    h_proc c[N];
    char nk[N][32];
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < N; i++) {
            cr_assert(h_tcp_connect(&c[i], "127.0.0.1", s.port));
            snprintf(nk[i], sizeof nk[i], "n%d_%d", round, i);
        }
        for (int k = 0; k < 20; k++) {
            for (int i = 0; i < N; i++) {
                char buf[1024];
                int j = (i + k + 1) % N;
                snprintf(buf, sizeof buf,
                         "/nick %s%c\n/join r%d\nhello %d\n/msg %s%c pm %d\n/who\n/rooms\n"
                         "/me waves\n/msg n%d_%d x\n/join lobby\n/nick %s\n",
                         nk[i], 'a' + k % 3, (i + k) % 3, k, nk[j], 'a' + k % 3, k, round, j,
                         nk[i]);
                h_write(c[i].in, buf, strlen(buf)); /* may fail once the peer is gone */
            }
        }
        for (int i = 0; i < N; i++) {
            switch (i % 3) {
            case 0: h_send(&c[i], "/quit churn\n"); h_proc_close(&c[i]); break;
            case 1: h_tcp_reset(&c[i]); break;
            default: if (round + 1 < ROUNDS) h_proc_close(&c[i]); break;
            }
        }
    }
    h_server_stop(&s);
    for (int i = 2; i < N; i += 3)
        h_proc_close(&c[i]);
}
H_EACH_DISPATCH(review, churn, .timeout = 120)

/* 8. On connect the client receives the welcome, then "*** You are in lobby", then
 * history, then live messages (docs/protocol.md). The guest nickname is registered
 * (and so reachable by /msg) before the welcome is even queued, so a PM aimed at the
 * next guest number can arrive first. Probabilistic: a flood of /msg to the next guest
 * number races each connect. */
Test(review, pm_before_welcome, .timeout = 120)
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
