/* Chat mode under limits and failures: --max-line, --flood, --sendq (slow readers),
 * --max-clients, --idle-timeout, clients vanishing, SIGTERM, and --raw. */
#include "harness.h"

#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

TestSuite(chat_limits, .timeout = 60, .fini = h_cleanup);

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* 8. --max-line 100 */
static void max_line(const char *dispatch)
{
    h_server s;
    h_proc a, b, c;
    h_proc *all[] = {&a, &b, &c};
    char nk[3][32];
    h_chat_start(&s, all, 3, nk, "--dispatch", dispatch, "--max-line", "100", NULL);
    static const char err[] = "*** Error: line too long (max 100 bytes); it was not sent.\r\n";

    char longl[160];
    memset(longl, 'L', 150);
    longl[150] = '\n';
    cr_assert(h_write(a.in, longl, 151));
    h_expect_line(&a, err);
    h_chat_relay(all, 3, 0, nk[0], "still connected");

    /* Exactly 100 bytes is accepted. */
    char hundred[101];
    memset(hundred, 'H', 100);
    hundred[100] = '\0';
    h_chat_relay(all, 3, 0, nk[0], hundred);

    /* A long line in many small writes, each group a round trip away from the next.
     * The error may come as soon as the line passes 100 bytes, before its end. */
    char chunk[16];
    memset(chunk, 'S', 10);
    h_proc *ac[] = {&a, &c};
    char want_i[64], line[1024];
    snprintf(want_i, sizeof want_i, "<%s> interleaved\r\n", nk[2]);
    int b_interleaved = 0;
    bool b_err = false;
    for (int i = 0; i < 15; i++) {
        cr_assert(h_write(b.in, chunk, 10));
        if (i % 5 == 4) { /* the server has read so far: c's line came through */
            h_chat_relay(ac, 2, 1, nk[2], "interleaved");
            /* b: the error (once) and c's lines, in whatever order they came. */
            while (b_interleaved < (i + 1) / 5) {
                cr_assert(h_read_line(&b.out, line, sizeof line, H_WAIT_MS) > 0, "b: no line");
                if (strcmp(line, err) == 0 && !b_err && i >= 9)
                    b_err = true;
                else {
                    cr_assert_str_eq(line, want_i, "b: unexpected line");
                    b_interleaved++;
                }
            }
        }
    }
    cr_assert(h_write(b.in, "tail\r\n", 6));
    if (!b_err)
        h_expect_line(&b, err);
    /* Nothing of either long line reached anyone: the next lines are markers. */
    h_chat_relay(all, 3, 1, nk[1], "b after long line");
    h_chat_relay(all, 3, 2, nk[2], "marker");
    h_server_stop_all(&s, all, 3);
}
H_EACH_DISPATCH(chat_limits, max_line)

/* Regression (review of src/server): one legal line (within --max-line) got every *other*
 * client dropped as "too slow".  Sanitising can triple a line (each invalid byte
 * becomes U+FFFD), so --sendq must hold two of the longest: --sendq 4K with the
 * default --max-line 2048 is refused at start, and with the smallest accepted value
 * a 1500-byte line of invalid UTF-8 (4500 bytes once sanitised) reaches everyone. */
Test(chat_limits, long_line_drops_everyone_else, .timeout = 60)
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
    h_proc a, b, c;
    h_proc *all[] = {&a, &b, &c};
    char nk[3][32], line[16384];
    h_chat_start(&s, all, 3, nk, "--sendq", "12416", "--flood", "0", NULL);
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
    h_server_stop_all(&s, all, 3);
}

/* 9. --flood 5:5: 40 lines at once are all delivered, in order, no faster than the rate
 * allows (lower bound only), and another client's line is not held up behind them. */
Test(chat_limits, flood)
{
    h_server s;
    h_proc a, b, c;
    h_proc *all[] = {&a, &b, &c};
    char nk[3][32], line[1024], want[256];
    h_chat_start(&s, all, 3, nk, "--flood", "5:5", NULL);

    char burst[40 * 16];
    size_t len = 0;
    for (int i = 0; i < 40; i++)
        len += (size_t)snprintf(burst + len, sizeof burst - len, "flood %02d\n", i);
    long long t0 = h_now_ms();
    cr_assert(h_write(a.in, burst, len));
    sleep_ms(1000); /* pacing: the flood is under way */
    cr_assert(h_send(&b, "b marker\n"));

    int next = 0;
    bool saw_marker = false;
    long long t_last = 0;
    snprintf(want, sizeof want, "<%s> b marker\r\n", nk[1]);
    while (next < 40) {
        ssize_t n = h_read_line(&c.out, line, sizeof line, 20000);
        cr_assert(n > 0, "c: %s after %d flood lines", n ? "timeout" : "EOF", next);
        if (strcmp(line, want) == 0) {
            cr_assert(!saw_marker, "marker twice");
            saw_marker = true;
            continue;
        }
        char w[64];
        snprintf(w, sizeof w, "<%s> flood %02d\r\n", nk[0], next);
        cr_assert_str_eq(line, w, "c: flood line %d out of order", next);
        if (++next == 40)
            t_last = h_now_ms();
    }
    cr_assert(t_last - t0 >= 4000, "40 lines at 5/s (burst 5) took only %lld ms",
              t_last - t0);
    cr_assert(saw_marker, "b's marker did not arrive before the flooder's last line");
    /* b got all 40 too, around its own line; a was not dropped. */
    for (int i = 0; i < 40; i++) {
        char w[64];
        snprintf(w, sizeof w, "<%s> flood %02d\r\n", nk[0], i);
        h_expect_line(&b, w);
    }
    h_chat_relay(all, 3, 0, nk[0], "flooder still here");
    h_server_stop_all(&s, all, 3);
}

/* Connects a client with a tiny receive buffer that never reads. */
static void connect_small_rcvbuf(h_proc *p, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(fd >= 0);
    int sz = 2048;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    memset(p, 0, sizeof *p);
    p->pid = 0;
    p->in = fd;
    p->out.fd = fd;
    p->err.fd = -1;
    p->err.eof = true;
}

/* 10. --sendq 16384: a client that never reads is dropped as too slow; the others see
 * the notice and lose nothing. */
static void slow_reader(const char *dispatch)
{
    h_server s;
    h_proc a, b, x;
    h_proc *ab[] = {&a, &b};
    char nk[2][32], nx[32] = "", line[1024];
    h_chat_start(&s, ab, 2, nk, "--dispatch", dispatch, "--sendq", "16384", "--flood", "0", NULL);
    connect_small_rcvbuf(&x, s.port);
    cr_assert(h_server_wait_connected(&s, 3));
    /* x's nick from the join notice (x itself never reads). */
    cr_assert(h_read_line(&a.out, line, sizeof line, H_WAIT_MS) > 0);
    cr_assert(sscanf(line, "*** %31s has joined lobby.", nx) == 1, "got \"%s\"", line);
    h_expect_line(&b, line);

    char notice[128];
    snprintf(notice, sizeof notice, "*** %s has left (too slow).\r\n", nx);
    char pad[201];
    memset(pad, 'p', 180);
    pad[180] = '\0';
    int sent = 0, got = 0;
    bool dropped = false;
    /* The kernel's send buffer for x (autotuned up to net.ipv4.tcp_wmem's maximum, 4 MB
     * by default) takes about 2 MB before --sendq is even reached: allow for it. */
    enum { BATCH = 20, MAX_LINES = 30000 };
    int dropped_at = -1;
    while (sent < MAX_LINES && (!dropped || sent < 300)) {
        char buf[BATCH * 220];
        size_t len = 0;
        for (int i = 0; i < BATCH; i++, sent++)
            len += (size_t)snprintf(buf + len, sizeof buf - len, "%05d %s\n", sent, pad);
        cr_assert(h_write(a.in, buf, len));
        while (got < sent) {
            ssize_t n = h_read_line(&b.out, line, sizeof line, H_WAIT_MS);
            cr_assert(n > 0, "b: %s after %d lines", n ? "timeout" : "EOF", got);
            if (strcmp(line, notice) == 0) {
                cr_assert(!dropped, "two too-slow notices");
                dropped = true;
                dropped_at = got;
                continue;
            }
            char w[300];
            snprintf(w, sizeof w, "<%s> %05d %s\r\n", nk[0], got, pad);
            cr_assert_str_eq(line, w, "b: line %d lost or out of order", got);
            got++;
        }
    }
    if (!dropped) /* the notice may follow the last line */
        dropped = h_read_line(&b.out, line, sizeof line, H_WAIT_MS) > 0 &&
                  strcmp(line, notice) == 0;
    cr_assert(dropped, "%s was never dropped as too slow after %d lines", nx, sent);
    cr_assert_eq(got, sent);
    fprintf(stderr, "slow_reader(%s): %s dropped after %d lines of 187 bytes\n", dispatch,
            nx, dropped_at);
    cr_assert(h_server_wait_disconnected(&s, 2));
    h_expect_line(&a, notice);
    h_chat_relay(ab, 2, 1, nk[1], "after the slow one");
    h_proc_close(&x);
    h_server_stop_all(&s, ab, 2);
}
H_EACH_DISPATCH(chat_limits, slow_reader)

/* Regression (review of src/server): a --history bigger than the --sendq got every
 * newcomer dropped as "too slow" on connect. A newcomer gets the room's history, but
 * never more than half its --sendq: the newest lines that fit, in order. */
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
H_DISPATCH_TEST(chat_limits, history_vs_sendq, inline, .timeout = 60)
H_DISPATCH_TEST(chat_limits, history_vs_sendq, pool, .timeout = 60)

/* 11. --max-clients 2 */
Test(chat_limits, max_clients)
{
    h_server s;
    h_proc a, b, c;
    h_proc *ab[] = {&a, &b};
    char nk[2][32];
    h_chat_start(&s, ab, 2, nk, "--max-clients", "2", NULL);
    cr_assert(h_tcp_connect(&c, "127.0.0.1", s.port));
    h_expect_line(&c, "*** Server full (2 clients), try again later.\r\n");
    h_expect_eof(&c, H_WAIT_MS);
    h_proc_close(&c);
    /* No join or leave notice reached a or b: their next lines are the markers. */
    h_chat_relay(ab, 2, 0, nk[0], "unaffected");
    h_chat_relay(ab, 2, 1, nk[1], "me too");
    /* A place freed is usable again. */
    h_proc_close(&b);
    char want[128];
    snprintf(want, sizeof want, "*** %s has left (connection closed).\r\n", nk[1]);
    h_expect_line(&a, want);
    cr_assert(h_server_wait_disconnected(&s, 1));
    char nb[32];
    cr_assert(h_chat_connect(&s, &b, 2, nb, sizeof nb));
    snprintf(want, sizeof want, "*** %s has joined lobby.\r\n", nb);
    h_expect_line(&a, want);
    h_chat_relay(ab, 2, 1, nb, "back in");
    h_server_stop_all(&s, ab, 2);
}

/* 12. --idle-timeout 2 */
Test(chat_limits, idle_timeout)
{
    h_server s;
    cr_assert(h_server_start(&s, "--idle-timeout", "2", "--history", "0", NULL), "no banner");
    h_proc a, c;
    h_proc *ac[] = {&a, &c};
    char nk[2][32], line[1024], want[128];
    long long t0 = h_now_ms();
    h_chat_connect_n(&s, ac, 2, 1, nk);

    /* a speaks every 500 ms; c stays silent (it receives a's lines, which is not
     * activity of its own). */
    snprintf(want, sizeof want, "*** %s has left (idle timeout).\r\n", nk[1]);
    bool c_out = false, a_saw = false;
    long long t_out = 0;
    for (int i = 0; i < 16; i++) { /* 8 s */
        char text[32];
        snprintf(text, sizeof text, "tick %d\n", i);
        cr_assert(h_send(&a, text));
        sleep_ms(500); /* pacing: the behaviour is about time */
        /* Drain c without blocking: lines until EOF. */
        for (;;) {
            if (c_out)
                break;
            ssize_t n = h_read_line(&c.out, line, sizeof line, 1);
            if (n < 0)
                break;
            if (n == 0) {
                cr_assert_fail("c: EOF before \"*** Idle timeout.\"");
            }
            if (strcmp(line, "*** Idle timeout.\r\n") == 0) {
                h_expect_eof(&c, H_WAIT_MS);
                c_out = true;
                t_out = h_now_ms();
                break;
            }
            char w[64];
            snprintf(w, sizeof w, "<%s> tick ", nk[0]);
            cr_assert(strncmp(line, w, strlen(w)) == 0, "c: unexpected \"%s\"", line);
        }
        for (;;) {
            ssize_t n = h_read_line(&a.out, line, sizeof line, 1);
            if (n < 0)
                break;
            cr_assert(n > 0, "a was disconnected although active");
            cr_assert_str_eq(line, want, "a: unexpected line");
            a_saw = true;
        }
    }
    cr_assert(c_out, "silent client not timed out within 8 s");
    cr_assert(t_out - t0 >= 1500, "timed out after %lld ms, before 2 s", t_out - t0);
    if (!a_saw)
        h_expect_line(&a, want);
    /* a is still connected: a newcomer hears it. */
    h_proc d;
    char nd[32];
    cr_assert(h_chat_connect(&s, &d, 2, nd, sizeof nd));
    snprintf(want, sizeof want, "*** %s has joined lobby.\r\n", nd);
    h_expect_line(&a, want);
    h_proc *ad[] = {&a, &d};
    h_chat_relay(ad, 2, 0, nk[0], "still here");
    h_proc_close(&c);
    h_server_stop_all(&s, ad, 2);
}

/* Regression (review of src/server): an idle kick wrote the chat-mode "*** Idle
 * timeout." line into a raw relay. --raw: no welcome text, no prefix, no server text at
 * all; an idle client's stream just ends. */
Test(chat_limits, raw_idle_no_chat_text, .timeout = 60)
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

/* 13. A reset mid-line and a half close: leave notices with reasons; serving goes on. */
static void vanish(const char *dispatch)
{
    h_server s;
    h_proc a, b, r, h;
    h_proc *all[] = {&a, &b, &r, &h};
    char nk[4][32], want[128];
    h_chat_start(&s, all, 4, nk, "--dispatch", dispatch, NULL);

    cr_assert(h_send(&r, "half a li"));
    h_chat_relay(all, 4, 0, nk[0], "round trip"); /* the server has r's bytes */
    h_tcp_reset(&r);
    snprintf(want, sizeof want, "*** %s has left (connection reset).\r\n", nk[2]);
    h_expect_line(&a, want);
    h_expect_line(&b, want);
    h_expect_line(&h, want);
    cr_assert(h_server_wait_disconnected(&s, 3));

    cr_assert(h_send(&h, "last words\n"));
    cr_assert(shutdown(h.in, SHUT_WR) == 0);
    snprintf(want, sizeof want, "<%s> last words\r\n", nk[3]);
    h_expect_line(&a, want);
    h_expect_line(&b, want);
    snprintf(want, sizeof want, "*** %s has left (connection closed).\r\n", nk[3]);
    h_expect_line(&a, want);
    h_expect_line(&b, want);
    h_expect_eof(&h, H_WAIT_MS);
    cr_assert(h_server_wait_disconnected(&s, 2));

    h_proc *ab[] = {&a, &b};
    h_chat_relay(ab, 2, 1, nk[1], "still serving");
    h_proc c;
    char nc[32];
    cr_assert(h_chat_connect(&s, &c, 3, nc, sizeof nc));
    h_proc_close(&h);
    h_close_all(ab, 2);
    h_proc_close(&c);
    h_server_stop(&s);
}
H_EACH_DISPATCH(chat_limits, vanish)

/* Regression (review of src/server), churn: clients rename, hop rooms, /msg and /who
 * each other and vanish (quit, reset, close) all at once, while an idle timer runs. Run under ASan/TSan: the
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
H_EACH_DISPATCH(chat_limits, churn, .timeout = 120)

/* 14. SIGTERM: every client gets "*** Server shutting down." then EOF; exit 0. */
static void sigterm(const char *dispatch)
{
    h_server s;
    h_proc a, b, c;
    h_proc *all[] = {&a, &b, &c};
    char nk[3][32];
    h_chat_start(&s, all, 3, nk, "--dispatch", dispatch, NULL);
    h_chat_relay(all, 3, 0, nk[0], "before");
    cr_assert(h_proc_stop(&s.proc, SIGTERM, H_WAIT_MS), "server still running after SIGTERM");
    int st = s.proc.status;
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "wait status 0x%x, want exit 0",
              (unsigned)st);
    for (int i = 0; i < 3; i++) {
        char line[1024];
        bool bye = false;
        for (int k = 0; k < 10; k++) {
            ssize_t n = h_read_line(&all[i]->out, line, sizeof line, H_WAIT_MS);
            cr_assert(n >= 0, "client %d: no EOF", i);
            if (n == 0)
                break;
            if (strcmp(line, "*** Server shutting down.\r\n") == 0) {
                bye = true;
                h_expect_eof(all[i], H_WAIT_MS);
                break;
            }
            /* Only leave notices of the others may come first. */
            cr_assert(strstr(line, " has left (server shutting down).\r\n"),
                      "client %d: unexpected \"%s\"", i, line);
        }
        cr_assert(bye, "client %d did not get \"*** Server shutting down.\"", i);
    }
    h_server_stop_all(&s, all, 3);
}
H_EACH_DISPATCH(chat_limits, sigterm)

/* 15. --raw: no welcome, no prefix; the raw overlong error. */
Test(chat_limits, raw_mode)
{
    h_server s;
    cr_assert(h_server_start(&s, "--raw", "--max-line", "100", NULL), "no banner");
    h_proc a, b;
    h_proc *ab[] = {&a, &b};
    h_connect_all(&s, ab, 2, 0);
    /* The first line either gets is the other's line, byte for byte. */
    h_relay(ab, 2, 0, "/who \x1b[31mraw\n");
    h_relay(ab, 2, 1, "back\r\n");
    char longl[160];
    memset(longl, 'L', 150);
    longl[150] = '\n';
    cr_assert(h_write(a.in, longl, 151));
    h_expect_line(&a, "Error: line too long (max 100 bytes)\r\n");
    h_relay(ab, 2, 0, "after long\n");
    h_relay(ab, 2, 1, "marker\n");
    h_server_stop_all(&s, ab, 2);
}
