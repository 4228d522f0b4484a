/* chat_frame_feed: line terminators, max_line, raw mode and the telnet
 * filter.  Every table input is fed whole, split at every offset (and at
 * every pair of offsets when short) and byte by byte, and must give the
 * same events and telnet answers each time. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/proto.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define PROTO_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define PROTO_SANITIZED 1
#endif
#endif

#ifdef PROTO_SANITIZED
size_t __sanitizer_get_current_allocated_bytes(void);
static size_t heap_in_use(void)
{
    return __sanitizer_get_current_allocated_bytes();
}
#else
#include <malloc.h>
static size_t heap_in_use(void)
{
    return mallinfo2().uordblks;
}
#endif

#define IAC "\xff"
#define DONT "\xfe"
#define DO "\xfd"
#define WONT "\xfc"
#define WILL "\xfb"
#define SB "\xfa"
#define GA "\xf9"
#define EL "\xf8"
#define EC "\xf7"
#define AYT "\xf6"
#define AO "\xf5"
#define IP "\xf4"
#define BRK "\xf3"
#define DM "\xf2"
#define NOP "\xf1"
#define SE "\xf0"
#define TM "\x06"

/* ---- recording ---- */

/* What a run produced: the events as text ("L(abc)" a line, "T" too long;
 * bytes outside printable ASCII, '(', ')' and '\' written \xHH) and the
 * concatenated telnet answers, raw. */
typedef struct trace {
    char *ev;
    size_t ev_len, ev_cap;
    char *reply;
    size_t reply_len, reply_cap;
} trace;

static void put(char **buf, size_t *len, size_t *cap, const void *p, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 64;
        while (c < *len + n + 1)
            c *= 2;
        *buf = realloc(*buf, c);
        cr_assert_not_null(*buf);
        *cap = c;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = '\0';
}

static void ev_put(trace *t, const char *s)
{
    put(&t->ev, &t->ev_len, &t->ev_cap, s, strlen(s));
}

static void trace_free(trace *t)
{
    free(t->ev);
    free(t->reply);
    memset(t, 0, sizeof *t);
}

static void record(trace *t, const chat_frame_out *out)
{
    switch (out->kind) {
    case CHAT_FRAME_NONE:
        break;
    case CHAT_FRAME_TOO_LONG:
        ev_put(t, "T");
        break;
    case CHAT_FRAME_LINE:
        ev_put(t, "L(");
        for (size_t i = 0; i < out->len; i++) {
            unsigned char c = (unsigned char)out->line[i];
            char tmp[8];
            if (c >= 0x20 && c < 0x7F && c != '(' && c != ')' && c != '\\')
                snprintf(tmp, sizeof tmp, "%c", c);
            else
                snprintf(tmp, sizeof tmp, "\\x%02X", c);
            ev_put(t, tmp);
        }
        ev_put(t, ")");
        break;
    }
}

/* Feeds p[0..n) the way a session does: call again with the rest until it
 * is consumed, sending (here: recording) the answers after each call. */
static void feed(chat_framer *f, const char *p, size_t n, trace *t)
{
    chat_frame_out out;
    memset(&out, 0, sizeof out);
    do {
        size_t used = chat_frame_feed(f, p, n, &out);
        cr_assert_leq(used, n);
        cr_assert(used > 0 || out.kind != CHAT_FRAME_NONE || n == 0,
                  "a feed of %zu bytes consumed nothing and reported nothing", n);
        cr_assert(out.kind != CHAT_FRAME_LINE || out.line == f->line);
        cr_assert_leq(out.reply_len, sizeof out.reply);
        record(t, &out);
        put(&t->reply, &t->reply_len, &t->reply_cap, out.reply, out.reply_len);
        out.reply_len = 0;
        p += used;
        n -= used;
    } while (n > 0);
}

/* Feeds in[0..n) cut at the given offsets (ascending) to a fresh framer. */
static void run_cuts(size_t max_line, bool telnet, const char *in, size_t n, const size_t *cuts,
                     size_t ncuts, trace *t)
{
    chat_framer f;
    cr_assert_eq(chat_framer_init(&f, max_line, telnet), 0);
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n;
        feed(&f, in + at, to - at, t);
        at = to;
    }
    chat_framer_free(&f);
}

static void expect_same(const trace *got, const trace *want, const char *how)
{
    cr_assert_str_eq(got->ev, want->ev, "%s: events %s, fed whole %s", how, got->ev, want->ev);
    cr_assert_eq(got->reply_len, want->reply_len, "%s: %zu answer bytes, fed whole %zu", how,
                 got->reply_len, want->reply_len);
    cr_assert(got->reply_len == 0 || memcmp(got->reply, want->reply, got->reply_len) == 0,
              "%s: different answers", how);
}

/* The events of in fed whole must be want_ev (and the answers want_reply);
 * every split must give the same. */
static void check(size_t max_line, bool telnet, const char *in, size_t n, const char *want_ev,
                  const char *want_reply, size_t want_reply_len)
{
    trace whole = { 0 };
    ev_put(&whole, "");
    run_cuts(max_line, telnet, in, n, NULL, 0, &whole);
    cr_assert_str_eq(whole.ev, want_ev, "events: got %s, want %s", whole.ev, want_ev);
    cr_assert_eq(whole.reply_len, want_reply_len, "answers: got %zu bytes, want %zu",
                 whole.reply_len, want_reply_len);
    cr_assert(want_reply_len == 0 || memcmp(whole.reply, want_reply, want_reply_len) == 0,
              "answers differ");

    for (size_t k = 0; k <= n; k++) {
        trace t = { 0 };
        ev_put(&t, "");
        run_cuts(max_line, telnet, in, n, &k, 1, &t);
        char how[64];
        snprintf(how, sizeof how, "split at %zu", k);
        expect_same(&t, &whole, how);
        trace_free(&t);
    }
    if (n <= 48) {
        for (size_t a = 0; a <= n; a++) {
            for (size_t b = a; b <= n; b++) {
                size_t cuts[2] = { a, b };
                trace t = { 0 };
                ev_put(&t, "");
                run_cuts(max_line, telnet, in, n, cuts, 2, &t);
                char how[64];
                snprintf(how, sizeof how, "split at %zu and %zu", a, b);
                expect_same(&t, &whole, how);
                trace_free(&t);
            }
        }
    }
    size_t *all = malloc((n + 1) * sizeof *all);
    cr_assert_not_null(all);
    for (size_t i = 0; i < n; i++)
        all[i] = i;
    trace t = { 0 };
    ev_put(&t, "");
    run_cuts(max_line, telnet, in, n, all, n, &t);
    expect_same(&t, &whole, "byte by byte");
    trace_free(&t);
    free(all);
    trace_free(&whole);
}

#define CHECK(max, telnet, in, ev) check(max, telnet, in, sizeof in - 1, ev, "", 0)
#define CHECK_R(max, telnet, in, ev, reply) \
    check(max, telnet, in, sizeof in - 1, ev, reply, sizeof reply - 1)

/* ---- init ---- */

/* An idle client holds no line buffer: none at init, one while a line is
 * partial (never more than max_line + 2 bytes), none after a trim. */
Test(proto_frame, line_buffer_only_while_a_line_is_partial, .timeout = 10)
{
    chat_framer f;
    cr_assert_eq(chat_framer_init(&f, 100, true), 0);
    cr_assert_null(f.line);
    cr_assert_eq(f.max_line, 100);
    cr_assert(f.telnet);
    cr_assert_eq(f.len, 0);
    cr_assert(!f.discarding);
    cr_assert(!f.cr);
    chat_frame_out out = {0};
    char full[100];
    memset(full, 'a', sizeof full);
    cr_assert_eq(chat_frame_feed(&f, full, sizeof full, &out), sizeof full);
    cr_assert_not_null(f.line);
    cr_assert_leq(f.cap, 102);
    f.line[f.cap - 1] = 'x'; /* ASan checks the size */
    chat_framer_trim(&f);
    cr_assert_not_null(f.line, "trimmed while a line was partial");
    cr_assert_eq(chat_frame_feed(&f, "\n", 1, &out), 1);
    cr_assert_eq(out.kind, CHAT_FRAME_LINE);
    cr_assert_eq(out.len, 100);
    chat_framer_trim(&f);
    cr_assert_null(f.line);
    cr_assert_eq(f.cap, 0);
    chat_framer_free(&f);
    cr_assert_null(f.line);
    chat_framer_free(&f); /* a second free is harmless */
}

Test(proto_frame, init_refuses_impossible_size, .timeout = 10)
{
    chat_framer f;
    cr_assert_eq(chat_framer_init(&f, SIZE_MAX, true), -ENOMEM);
    cr_assert_eq(chat_framer_init(&f, SIZE_MAX - 1, false), -ENOMEM);
}

Test(proto_frame, empty_feed_reports_nothing, .timeout = 10)
{
    chat_framer f;
    cr_assert_eq(chat_framer_init(&f, 8, true), 0);
    chat_frame_out out = { 0 };
    cr_assert_eq(chat_frame_feed(&f, "", 0, &out), 0);
    cr_assert_eq(out.kind, CHAT_FRAME_NONE);
    cr_assert_eq(out.reply_len, 0);
    chat_framer_free(&f);
}

/* ---- terminators ---- */

Test(proto_frame, terminators, .timeout = 10)
{
    CHECK(64, true, "a\nb\r\nc\r\0d\re\n", "L(a)L(b)L(c)L(d)L(e)");
    CHECK(64, true, "hello world\r\n", "L(hello world)");
    CHECK(64, true, "no terminator", "");
    CHECK(64, true, "x\r\n\ry\r\0z\n", "L(x)L()L(y)L(z)");
}

Test(proto_frame, empty_lines_are_reported, .timeout = 10)
{
    CHECK(64, true, "\n\r\n\r\0\r\r\n", "L()L()L()L()L()");
    CHECK(0, true, "\n\r\n", "L()L()");
}

Test(proto_frame, nul_is_data_unless_after_cr, .timeout = 10)
{
    CHECK(64, true, "a\0b\n", "L(a\\x00b)");
    CHECK(64, true, "a\r\0\0b\n", "L(a)L(\\x00b)");
    CHECK(64, true, "a\n\0\n", "L(a)L(\\x00)");
}

/* A CR ends its line at once; a following LF or NUL, in a later feed,
 * belongs to it. */
Test(proto_frame, cr_at_end_of_feed, .timeout = 10)
{
    CHECK(64, true, "abc\r\ndef\r\0ghi\rjkl\n", "L(abc)L(def)L(ghi)L(jkl)");

    chat_framer f;
    cr_assert_eq(chat_framer_init(&f, 64, true), 0);
    chat_frame_out out = { 0 };
    cr_assert_eq(chat_frame_feed(&f, "abc\r", 4, &out), 4);
    cr_assert_eq(out.kind, CHAT_FRAME_LINE);
    cr_assert_eq(out.len, 3);
    cr_assert_eq(memcmp(out.line, "abc", 3), 0);
    cr_assert_eq(chat_frame_feed(&f, "\n", 1, &out), 1);
    cr_assert_eq(out.kind, CHAT_FRAME_NONE);
    cr_assert_eq(chat_frame_feed(&f, "\r", 1, &out), 1);
    cr_assert_eq(out.kind, CHAT_FRAME_LINE);
    cr_assert_eq(out.len, 0);
    cr_assert_eq(chat_frame_feed(&f, "\0", 1, &out), 1);
    cr_assert_eq(out.kind, CHAT_FRAME_NONE);
    cr_assert_eq(chat_frame_feed(&f, "x\n", 2, &out), 2);
    cr_assert_eq(out.kind, CHAT_FRAME_LINE);
    cr_assert_eq(out.len, 1);
    cr_assert_eq(out.line[0], 'x');
    chat_framer_free(&f);
}

Test(proto_frame, returns_after_each_line, .timeout = 10)
{
    chat_framer f;
    cr_assert_eq(chat_framer_init(&f, 64, true), 0);
    chat_frame_out out = { 0 };
    const char *in = "ab\ncd\r\nef";
    size_t used = chat_frame_feed(&f, in, 9, &out);
    cr_assert_eq(used, 3);
    cr_assert_eq(out.kind, CHAT_FRAME_LINE);
    cr_assert_eq(out.len, 2);
    cr_assert_eq(memcmp(out.line, "ab", 2), 0);
    used = chat_frame_feed(&f, in + 3, 6, &out);
    cr_assert_eq(used, 3);
    cr_assert_eq(out.kind, CHAT_FRAME_LINE);
    cr_assert_eq(memcmp(out.line, "cd", 2), 0);
    used = chat_frame_feed(&f, in + 6, 3, &out);
    cr_assert_eq(used, 3);
    cr_assert_eq(out.kind, CHAT_FRAME_NONE);
    cr_assert_eq(f.len, 2);
    chat_framer_free(&f);
}

/* ---- max_line ---- */

Test(proto_frame, exact_max_line_is_accepted, .timeout = 10)
{
    CHECK(4, true, "abcd\n", "L(abcd)");
    CHECK(4, true, "abcd\r\n", "L(abcd)");
    CHECK(4, true, "abcd\r\0", "L(abcd)");
    CHECK(4, true, "abcd\rabcd\n", "L(abcd)L(abcd)");
    CHECK(1, true, "a\n\nb\n", "L(a)L()L(b)");
}

Test(proto_frame, max_line_plus_one_is_too_long, .timeout = 10)
{
    CHECK(4, true, "abcde\n", "T");
    CHECK(4, true, "abcde\r\n", "T");
    CHECK(4, true, "abcdefghijklmnop\r\nok\r\n", "TL(ok)");
    CHECK(4, true, "abcdefgh\rok\n", "TL(ok)");
    CHECK(4, true, "abcdefgh\r\0ok\n", "TL(ok)");
    CHECK(4, true, "abcde\nabcde\nab\n", "TTL(ab)");
    CHECK(0, true, "a\n\n", "TL()");
}

Test(proto_frame, overlong_counts_data_after_telnet, .timeout = 10)
{
    /* telnet commands take no room in the line; IAC IAC takes one byte */
    CHECK(4, true, "ab" IAC NOP IAC NOP "cd\n", "L(abcd)");
    CHECK(4, true, "abc" IAC IAC "\n", "L(abc\\xFF)");
    CHECK(4, true, "abcd" IAC IAC "\nx\n", "TL(x)");
    CHECK(4, true, "abcdef" IAC EC "\n", "T");
}

Test(proto_frame, overlong_across_many_feeds, .timeout = 10)
{
    enum { MAX = 8, BIG = 100000 };
    char *big = malloc(BIG);
    cr_assert_not_null(big);
    for (size_t i = 0; i < BIG; i++)
        big[i] = (char)('a' + i % 26);
    for (int mode = 0; mode < 2; mode++) {
        chat_framer f;
        cr_assert_eq(chat_framer_init(&f, MAX, mode == 0), 0);
        trace t = { 0 };
        ev_put(&t, "");
        size_t at = 0, chunk = 1;
        while (at < BIG) {
            size_t k = chunk < BIG - at ? chunk : BIG - at;
            feed(&f, big + at, k, &t);
            at += k;
            chunk = chunk % 13 + 1;
            cr_assert_leq(f.len, MAX + 1);
        }
        cr_assert(f.discarding);
        feed(&f, "\nhi\n", 4, &t);
        cr_assert_leq(f.cap, MAX + 2, "the line buffer grew past max_line + 2");
        cr_assert_str_eq(t.ev, mode == 0 ? "TL(hi)" : "TL(hi\\x0A)");
        trace_free(&t);
        chat_framer_free(&f);
    }
    free(big);
}

/* ---- raw mode ---- */

Test(proto_frame, raw_keeps_terminators, .timeout = 10)
{
    CHECK(64, false, "a\nb\r\nc\rd\n", "L(a\\x0A)L(b\\x0D\\x0A)L(c\\x0Dd\\x0A)");
    CHECK(64, false, "\n\r\n", "L(\\x0A)L(\\x0D\\x0A)");
    CHECK(64, false, "a\r\0b\n", "L(a\\x0D\\x00b\\x0A)");
    CHECK(64, false, "no end\r", "");
}

Test(proto_frame, raw_has_no_telnet, .timeout = 10)
{
    CHECK(64, false, IAC DO "\x01" IAC AYT IAC IAC "x" IAC SB "y" IAC SE "\n",
          "L(\\xFF\\xFD\\x01\\xFF\\xF6\\xFF\\xFFx\\xFF\\xFAy\\xFF\\xF0\\x0A)");
}

Test(proto_frame, raw_max_line, .timeout = 10)
{
    CHECK(3, false, "abc\n", "L(abc\\x0A)");
    CHECK(3, false, "abc\r\n", "L(abc\\x0D\\x0A)");
    CHECK(3, false, "abcd\nok\n", "TL(ok\\x0A)");
    CHECK(3, false, "abc\rd\nok\n", "TL(ok\\x0A)");
    CHECK(3, false, "abc\r\r\nok\r\n", "TL(ok\\x0D\\x0A)");
    CHECK(3, false, "ab\r\r\n", "L(ab\\x0D\\x0D\\x0A)");
    CHECK(0, false, "\n\r\nx\n", "L(\\x0A)L(\\x0D\\x0A)T");
}

/* ---- telnet ---- */

Test(proto_frame, option_requests_are_refused, .timeout = 10)
{
    CHECK_R(64, true, IAC DO "\x01" "a" IAC DO "\x03" "b\n", "L(ab)", IAC WONT "\x01" IAC WONT "\x03");
    CHECK_R(64, true, IAC WILL "\x18" IAC WILL "\x1f" "x\n", "L(x)", IAC DONT "\x18" IAC DONT "\x1f");
    CHECK_R(64, true, IAC DO "\xff" "\n", "L()", IAC WONT "\xff");
}

Test(proto_frame, wont_and_dont_get_no_answer, .timeout = 10)
{
    CHECK(64, true, IAC WONT "\x01" IAC DONT "\x01" IAC WONT TM IAC DONT TM "ok\n", "L(ok)");
}

Test(proto_frame, timing_mark_is_accepted, .timeout = 10)
{
    CHECK_R(64, true, "ab" IAC IP IAC DO TM "c\n", "L(c)", IAC WILL TM);
    CHECK_R(64, true, IAC WILL TM "\n", "L()", IAC DONT TM);
}

Test(proto_frame, are_you_there, .timeout = 10)
{
    CHECK_R(64, true, IAC AYT, "", "\r\n[yes]\r\n");
    CHECK_R(64, true, "a" IAC AYT "b\n", "L(ab)", "\r\n[yes]\r\n");
}

Test(proto_frame, interrupt_abort_erase_line, .timeout = 10)
{
    CHECK(64, true, "abc" IAC IP "def\n", "L(def)");
    CHECK(64, true, "abc" IAC AO "def\n", "L(def)");
    CHECK(64, true, "abc" IAC EL "def\n", "L(def)");
    CHECK(64, true, "abc" IAC EL "\n", "L()");
    CHECK(64, true, IAC IP "\n", "L()");
}

/* IP, AO and EL also end the discard of an overlong line: the client
 * abandoned it, so what it types next is a new line. */
Test(proto_frame, interrupt_ends_a_discard, .timeout = 10)
{
    CHECK(4, true, "abcdefgh" IAC IP "ok\n", "TL(ok)");
    CHECK(4, true, "abcdefgh" IAC EL "ok\n", "TL(ok)");
    CHECK(4, true, "abcdefgh" IAC AO "ok\n", "TL(ok)");
}

/* A CR's line is already out when IP comes: the LF after it still belongs
 * to that CR. */
Test(proto_frame, interrupt_keeps_pending_cr, .timeout = 10)
{
    CHECK(64, true, "ab\r" IAC IP "\ncd\n", "L(ab)L(cd)");
}

Test(proto_frame, erase_character, .timeout = 10)
{
    CHECK(64, true, "abc" IAC EC "d\n", "L(abd)");
    CHECK(64, true, "abc" IAC EC IAC EC IAC EC IAC EC "x\n", "L(x)");
    CHECK(64, true, IAC EC "x\n", "L(x)");
    CHECK(64, true, "a" IAC IAC IAC EC "\n", "L(a)");
}

Test(proto_frame, erase_character_multibyte, .timeout = 10)
{
    CHECK(64, true, "a\xc3\xa9" IAC EC "\n", "L(a)");             /* é */
    CHECK(64, true, "a\xe2\x82\xac" IAC EC "\n", "L(a)");         /* € */
    CHECK(64, true, "a\xf0\x9f\x98\x80" IAC EC "\n", "L(a)");     /* 😀 */
    CHECK(64, true, "\xe2\x82\xac\xe2\x82\xac" IAC EC "\n", "L(\\xE2\\x82\\xAC)");
    CHECK(64, true, "\xc3\xa9" IAC EC "\n", "L()");
    /* invalid UTF-8: a stray continuation or a lone lead goes byte by byte */
    CHECK(64, true, "a\x80\x80" IAC EC "\n", "L(a\\x80)");
    CHECK(64, true, "a\xc3" IAC EC "\n", "L(a)");
    CHECK(64, true, "\x80\x80\x80\x80\x80" IAC EC "\n", "L(\\x80\\x80\\x80\\x80)");
}

Test(proto_frame, other_commands_are_consumed, .timeout = 10)
{
    CHECK(64, true, "a" IAC NOP "b" IAC DM "c" IAC BRK "d" IAC GA "e" IAC SE "f" IAC "\x01" "g\n",
          "L(abcdefg)");
}

Test(proto_frame, iac_iac_is_data, .timeout = 10)
{
    CHECK(64, true, "a" IAC IAC "b\n", "L(a\\xFFb)");
    CHECK(64, true, IAC IAC IAC IAC "\n", "L(\\xFF\\xFF)");
    CHECK(64, true, "a\r" IAC IAC "\n", "L(a)L(\\xFF)");
}

Test(proto_frame, commands_inside_cr_nul_and_crlf, .timeout = 10)
{
    CHECK(64, true, "ab\r" IAC NOP "\0cd\n", "L(ab)L(cd)");
    CHECK_R(64, true, "ab\r" IAC AYT "\ncd\n", "L(ab)L(cd)", "\r\n[yes]\r\n");
    CHECK_R(64, true, "ab\r" IAC DO "\x01" "\0cd\n", "L(ab)L(cd)", IAC WONT "\x01");
    CHECK(64, true, "ab\r" IAC SB "\x18\x01" IAC SE "\ncd\n", "L(ab)L(cd)");
    CHECK(64, true, "ab\r" IAC NOP "x\n", "L(ab)L(x)");
}

Test(proto_frame, subnegotiation_is_skipped, .timeout = 10)
{
    CHECK(64, true, "a" IAC SB "\x18\x00xterm" IAC SE "b\n", "L(ab)");
    CHECK(64, true, "a" IAC SB "\x18" IAC IAC "\n\r" IAC IAC IAC SE "b\n", "L(ab)");
    CHECK(64, true, IAC SB IAC SE "\n", "L()");
    CHECK(64, true, IAC SB "\x01" SE "\n" IAC SE "x\n", "L(x)");
}

/* A subnegotiation that an IAC other than SE ends: the command is obeyed
 * and framing resumes, rather than skipping the rest of the session. */
Test(proto_frame, subnegotiation_ended_by_other_command, .timeout = 10)
{
    CHECK_R(64, true, IAC SB "\x18" IAC AYT "x\n", "L(x)", "\r\n[yes]\r\n");
    CHECK_R(64, true, IAC SB "\x18" IAC DO "\x01" "x\n", "L(x)", IAC WONT "\x01");
}

Test(proto_frame, subnegotiation_length_is_counted, .timeout = 10)
{
    chat_framer f;
    cr_assert_eq(chat_framer_init(&f, 64, true), 0);
    trace t = { 0 };
    ev_put(&t, "");
    const char in[] = IAC SB "\x18\x00" "ab" IAC IAC "c";
    feed(&f, in, sizeof in - 1, &t);
    cr_assert_eq(f.sb_len, 6);
    feed(&f, IAC SE "z\n", 4, &t);
    cr_assert_str_eq(t.ev, "L(z)");
    trace_free(&t);
    chat_framer_free(&f);
}

Test(proto_frame, subnegotiation_100k_uses_no_memory, .timeout = 10)
{
    enum { PAYLOAD = 100 * 1024 };
    /* the payload, with every 0xFF doubled as the protocol escapes it */
    char *sb = malloc(2 * PAYLOAD);
    cr_assert_not_null(sb);
    size_t sb_n = 0;
    uint32_t x = 12345;
    for (size_t i = 0; i < PAYLOAD; i++) {
        x = x * 1103515245u + 12345u;
        char c = (char)(x >> 24);
        sb[sb_n++] = c;
        if ((unsigned char)c == 0xFF)
            sb[sb_n++] = c;
    }

    chat_framer f;
    cr_assert_eq(chat_framer_init(&f, 64, true), 0);
    chat_frame_out out = { 0 };
    int bad = 0;

    /* "pre" gets the line its buffer; the subnegotiation then adds nothing. */
    bad |= chat_frame_feed(&f, "pre" IAC SB, 5, &out) != 5 || out.kind != CHAT_FRAME_NONE;
    char *const line = f.line;
    size_t before = heap_in_use();
    for (size_t at = 0, chunk = 1; at < sb_n; chunk = chunk * 7 % 4099 + 1) {
        size_t k = chunk < sb_n - at ? chunk : sb_n - at;
        size_t used = chat_frame_feed(&f, sb + at, k, &out);
        bad |= (used != k || out.kind != CHAT_FRAME_NONE) << 1;
        at += k;
    }
    size_t after = heap_in_use();
    cr_assert_eq(f.line, line);
    bad |= (chat_frame_feed(&f, IAC SE "post\n", 7, &out) != 7) << 2;

    cr_assert_eq(bad, 0, "unexpected event or short consumption (%d)", bad);
    cr_assert_eq(before, after, "heap in use went from %zu to %zu bytes", before, after);
    cr_assert_eq(f.sb_len, PAYLOAD);
    cr_assert_eq(out.kind, CHAT_FRAME_LINE);
    cr_assert_eq(out.len, 7);
    cr_assert_eq(memcmp(out.line, "prepost", 7), 0);
    cr_assert_eq(out.reply_len, 0);
    chat_framer_free(&f);
    free(sb);
}

/* Many negotiations in one read (found by fuzz_frame: fed whole, answers past 64 bytes
 * were dropped; fed in pieces, none were): the feed returns early before an answer could
 * be dropped, so a caller that empties reply after each call gets every answer, in order. */
Test(proto_frame, many_answers_in_one_read_are_all_given, .timeout = 10)
{
    char in[30 * 3];
    for (int i = 0; i < 30; i++) {
        in[3 * i] = '\xff';
        in[3 * i + 1] = '\xfd';
        in[3 * i + 2] = (char)(i + 10); /* not TIMING-MARK: refused with WONT */
    }
    chat_framer f;
    cr_assert_eq(chat_framer_init(&f, 64, true), 0);
    chat_frame_out out = { 0 };
    char got[30 * 3];
    size_t got_len = 0, off = 0;
    int calls = 0;
    while (off < sizeof in) {
        size_t used = chat_frame_feed(&f, in + off, sizeof in - off, &out);
        cr_assert_gt(used, 0);
        off += used;
        cr_assert_leq(got_len + out.reply_len, sizeof got);
        memcpy(got + got_len, out.reply, out.reply_len);
        got_len += out.reply_len;
        out.reply_len = 0;
        calls++;
    }
    cr_assert_gt(calls, 1, "90 bytes of answers came out of one call");
    cr_assert_eq(got_len, sizeof got);
    for (int i = 0; i < 30; i++) {
        cr_assert_eq((unsigned char)got[3 * i], 0xFF);
        cr_assert_eq((unsigned char)got[3 * i + 1], 0xFC);
        cr_assert_eq(got[3 * i + 2], (char)(i + 10));
    }
    /* A caller that does not empty reply: the feed still makes progress and drops only
     * the answer that does not fit (AYT's 9 bytes into 4). */
    out.reply_len = 60;
    size_t used = chat_frame_feed(&f, IAC AYT, 2, &out); /* stops after the IAC */
    cr_assert_eq(used, 1);
    cr_assert_eq(chat_frame_feed(&f, AYT, 1, &out), 1); /* first byte of a call: goes on */
    cr_assert_eq(out.reply_len, 60);
    /* answers accumulate across feeds until the caller empties them */
    out.reply_len = 55;
    cr_assert_eq(chat_frame_feed(&f, IAC AYT, 2, &out), 2);
    cr_assert_eq(out.reply_len, 64);
    cr_assert_eq(memcmp(out.reply + 55, "\r\n[yes]\r\n", 9), 0);
    out.reply_len = 0;
    cr_assert_eq(chat_frame_feed(&f, IAC AYT, 2, &out), 2);
    cr_assert_eq(out.reply_len, 9);
    cr_assert_eq(memcmp(out.reply, "\r\n[yes]\r\n", 9), 0);
    chat_framer_free(&f);
}

Test(proto_frame, line_stays_valid_until_next_feed, .timeout = 10)
{
    chat_framer f;
    cr_assert_eq(chat_framer_init(&f, 64, true), 0);
    chat_frame_out out = { 0 };
    cr_assert_eq(chat_frame_feed(&f, "first\nsecond\n", 13, &out), 6);
    const char *line = out.line;
    size_t len = out.len;
    cr_assert_eq(len, 5);
    cr_assert_eq(memcmp(line, "first", 5), 0);
    cr_assert_eq(chat_frame_feed(&f, "second\n", 7, &out), 7);
    cr_assert_eq(memcmp(out.line, "second", 6), 0);
    chat_framer_free(&f);
}

/* ---- randomised split invariance ---- */

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64: fixed seed, same sequence on every run */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

Test(proto_frame, random_splits_give_same_events, .timeout = 10)
{
    static const unsigned char alphabet[] = {
        'a', 'b', 0xC3, 0xA9, '\r', '\n', '\0', 0xFF, 0xFF, 0xFF, 0xFD, 0xFB, 0xFC,
        0xFE, 0xFA, 0xF0, 0xF7, 0xF8, 0xF4, 0xF5, 0xF6, 0xF1, 0x06, 0x01,
    };
    uint64_t seed = 0x5eed;
    char in[48];
    size_t cuts[48];
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = rng_next(&seed) % sizeof in;
        for (size_t i = 0; i < n; i++)
            in[i] = (char)alphabet[rng_next(&seed) % sizeof alphabet];
        size_t max_line = rng_next(&seed) % 6;
        bool telnet = rng_next(&seed) % 4 != 0;

        trace whole = { 0 };
        ev_put(&whole, "");
        run_cuts(max_line, telnet, in, n, NULL, 0, &whole);

        size_t ncuts = 0;
        for (size_t i = 1; i < n; i++)
            if (rng_next(&seed) % 3 == 0)
                cuts[ncuts++] = i;
        trace t = { 0 };
        ev_put(&t, "");
        run_cuts(max_line, telnet, in, n, cuts, ncuts, &t);
        expect_same(&t, &whole, "random split");
        trace_free(&t);

        for (size_t i = 0; i < n; i++)
            cuts[i] = i;
        trace b = { 0 };
        ev_put(&b, "");
        run_cuts(max_line, telnet, in, n, cuts, n, &b);
        expect_same(&b, &whole, "byte by byte");
        trace_free(&b);
        trace_free(&whole);
    }
}
