/* Telnet in chat mode: option negotiation refused byte for byte on a raw socket, IAC
 * sequences removed from lines, AYT and TIMING-MARK answered; and the real telnet client
 * in a pseudo-terminal talking to a raw client. */
#include "harness.h"

#include <criterion/criterion.h>

#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

TestSuite(chat_telnet, .timeout = 60, .fini = h_cleanup);

#define IAC "\xff"
#define DONT "\xfe"
#define DO "\xfd"
#define WONT "\xfc"
#define WILL "\xfb"
#define SB "\xfa"
#define SE "\xf0"
#define AYT "\xf6"
#define NOP "\xf1"

/* Reads raw bytes from p until want (n bytes) has appeared in what was read, or the
 * deadline. Returns true when found; everything read is left in got/got_len. */
static bool read_until_bytes(h_proc *p, const char *want, size_t n, char *got,
                             size_t *got_len, size_t cap)
{
    long long deadline = h_now_ms() + H_WAIT_MS;
    for (;;) {
        /* Whatever the line reader had buffered comes first. */
        if (p->out.len) {
            size_t c = p->out.len < cap - *got_len ? p->out.len : cap - *got_len;
            memcpy(got + *got_len, p->out.buf, c);
            *got_len += c;
            memmove(p->out.buf, p->out.buf + c, p->out.len - c);
            p->out.len -= c;
        }
        if (memmem(got, *got_len, want, n))
            return true;
        long long left = deadline - h_now_ms();
        if (left <= 0 || p->out.eof || *got_len == cap)
            return false;
        struct pollfd pfd = {.fd = p->out.fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)left) > 0)
            h_fill(&p->out);
    }
}

static void expect_reply(h_proc *p, const char *send, size_t send_len, const char *want,
                         size_t want_len, const char *what)
{
    char got[4096];
    size_t got_len = 0;
    cr_assert(h_write(p->in, send, send_len));
    bool ok = read_until_bytes(p, want, want_len, got, &got_len, sizeof got);
    if (!ok) {
        char hex[3 * 64 + 1] = "";
        for (size_t i = 0; i < got_len && i < 64; i++)
            snprintf(hex + 3 * i, 4, "%02x ", (unsigned char)got[i]);
        cr_assert_fail("%s: reply not seen; got %zu bytes: %s", what, got_len, hex);
    }
    /* Nothing but the reply (and CR/LF) was sent. */
    for (size_t i = 0; i < got_len;) {
        if (i + want_len <= got_len && memcmp(got + i, want, want_len) == 0) {
            i += want_len;
            continue;
        }
        cr_assert(got[i] == '\r' || got[i] == '\n', "%s: unexpected byte 0x%02x", what,
                  (unsigned char)got[i]);
        i++;
    }
}

static void negotiation(const char *dispatch)
{
    h_server s;
    h_proc a, b;
    h_proc *ab[] = {&a, &b};
    char nk[2][32], want[256];
    h_chat_start(&s, ab, 2, nk, "--dispatch", dispatch, NULL);

#define REPLY(send, want, what) expect_reply(&a, send, sizeof(send) - 1, want, sizeof(want) - 1, what)
    REPLY(IAC DO "\x01", IAC WONT "\x01", "DO ECHO");
    REPLY(IAC DO "\x03", IAC WONT "\x03", "DO SUPPRESS-GO-AHEAD");
    REPLY(IAC WILL "\x1f", IAC DONT "\x1f", "WILL NAWS");
    REPLY(IAC WILL "\x18", IAC DONT "\x18", "WILL TERMINAL-TYPE");
    REPLY(IAC DO "\x06", IAC WILL "\x06", "DO TIMING-MARK");
    REPLY(IAC AYT, "[yes]", "AYT");
#undef REPLY

    /* IAC sequences in the middle of a line are removed. */
    static const char mid[] = "he" IAC NOP "l" IAC DO "\x01" "lo\r\n";
    expect_reply(&a, mid, sizeof mid - 1, IAC WONT "\x01", 3, "DO ECHO mid-line");
    snprintf(want, sizeof want, "<%s> hello\r\n", nk[0]);
    h_expect_line(&b, want);
    /* A subnegotiation of any length is skipped. */
    char sb[600];
    size_t n = 0;
    n += (size_t)snprintf(sb, sizeof sb, "sub" IAC SB "\x18");
    memset(sb + n, 'Z', 500);
    n += 500;
    memcpy(sb + n, IAC SE "neg\n", 6);
    n += 6;
    cr_assert(h_write(a.in, sb, n));
    snprintf(want, sizeof want, "<%s> subneg\r\n", nk[0]);
    h_expect_line(&b, want);
    /* IAC IAC is the byte 0xFF, invalid UTF-8: U+FFFD. */
    cr_assert(h_write(a.in, "x" IAC IAC "y\r\n", sizeof("x" IAC IAC "y\r\n") - 1));
    snprintf(want, sizeof want, "<%s> x\xef\xbf\xbdy\r\n", nk[0]);
    h_expect_line(&b, want);
    /* IAC EL erases the partial line, IAC EC its last character. */
    cr_assert(h_write(a.in, "junk" IAC "\xf8" "ab" IAC "\xf7" "c\r\n", sizeof("junk" IAC "\xf8" "ab" IAC "\xf7" "c\r\n") - 1));
    snprintf(want, sizeof want, "<%s> ac\r\n", nk[0]);
    h_expect_line(&b, want);
    /* a got nothing else (the replies were consumed above): its next line is b's. */
    h_chat_relay(ab, 2, 1, nk[1], "marker");
    h_proc_close(&a);
    h_proc_close(&b);
    h_server_stop(&s);
}
H_EACH_DISPATCH(chat_telnet, negotiation)

/* The real telnet client in a pty logs in, sends a line, receives one. */
Test(chat_telnet, real_telnet_client)
{
    h_server s;
    cr_assert(h_server_start(&s, NULL), "no banner");
    h_proc b, t;
    char nb[32];
    cr_assert(h_chat_connect(&s, &b, 1, nb, sizeof nb));

    char port[16];
    snprintf(port, sizeof port, "%d", s.port);
    char *argv[] = {"telnet", "127.0.0.1", port, NULL};
    cr_assert(h_pty_spawn(&t, argv) == 0, "cannot start telnet in a pty");
    cr_assert(h_server_wait_connected(&s, 2), "telnet did not connect");
    char line[1024];
    cr_assert(h_wait_line(&t.out, "*** Welcome to st_proactor, ", NULL, line, sizeof line,
                          H_WAIT_MS),
              "telnet showed no welcome");
    char nt[32] = "";
    sscanf(line + strcspn(line, "*"), "*** Welcome to st_proactor, %31[^!]", nt);
    cr_assert(nt[0], "no nick in \"%s\"", line);
    cr_assert(h_wait_line(&t.out, "*** You are in lobby (2 users).", NULL, NULL, 0, H_WAIT_MS),
              "telnet showed no \"You are in\"");
    char want[256];
    snprintf(want, sizeof want, "*** %s has joined lobby.\r\n", nt);
    h_expect_line(&b, want);

    /* Typed into telnet (the pty turns \r into \n in cooked mode; telnet sends CRLF). */
    cr_assert(h_send(&t, "hello from telnet\r"));
    snprintf(want, sizeof want, "<%s> hello from telnet\r\n", nt);
    h_expect_line(&b, want);

    cr_assert(h_send(&b, "hello, telnet user\n"));
    snprintf(want, sizeof want, "<%s> hello, telnet user", nb);
    cr_assert(h_wait_line(&t.out, want, NULL, NULL, 0, H_WAIT_MS),
              "telnet did not show b's message");

    cr_assert(h_send(&t, "/quit done\r"));
    snprintf(want, sizeof want, "*** %s has left (quit: done).\r\n", nt);
    h_expect_line(&b, want);
    cr_assert(h_server_wait_disconnected(&s, 1));
    cr_assert(h_proc_wait(&t, H_WAIT_MS), "telnet did not exit after the server closed");
    h_proc_close(&t);
    h_proc_close(&b);
    h_server_stop(&s);
}
