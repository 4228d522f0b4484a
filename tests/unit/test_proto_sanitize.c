/* chat_sanitize: table tests per class of input, and a randomised check of
 * its guarantees (bounded, valid UTF-8, nothing unsafe left, idempotent). */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/utf8_strict.h"
#include "server/proto.h"

#define FFFD "\xef\xbf\xbd"

/* Sanitises in[0..n) into a buffer of exactly CHAT_SANITIZE_MAX(n) bytes
 * (so ASan sees any overrun); returns it, NUL-terminated in a copy. */
static char *sanitize(const char *in, size_t n, size_t *out_len)
{
    size_t cap = CHAT_SANITIZE_MAX(n);
    char *out = malloc(cap ? cap : 1);
    cr_assert_not_null(out);
    size_t len = chat_sanitize(in, n, out);
    cr_assert_leq(len, cap);
    char *copy = malloc(len + 1);
    cr_assert_not_null(copy);
    memcpy(copy, out, len);
    copy[len] = '\0';
    free(out);
    *out_len = len;
    return copy;
}

static void show(char *dst, size_t cap, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < cap; i++)
        o += (size_t)snprintf(dst + o, cap - o, "%02X ", (unsigned char)s[i]);
    dst[o] = '\0';
}

static void check(const char *in, size_t n, const char *want, size_t want_n)
{
    size_t len;
    char *got = sanitize(in, n, &len);
    char g[512], w[512];
    show(g, sizeof g, got, len);
    show(w, sizeof w, want, want_n);
    cr_assert(len == want_n && memcmp(got, want, len) == 0, "input [%s]: got [%s], want [%s]",
              in, g, w);
    free(got);
}

#define CHECK(in, want) check(in, sizeof in - 1, want, sizeof want - 1)
#define SAME(in) CHECK(in, in)

Test(proto_sanitize, empty, .timeout = 10)
{
    char out[1] = { 'x' };
    cr_assert_eq(chat_sanitize("", 0, out), 0);
}

Test(proto_sanitize, printable_ascii_unchanged, .timeout = 10)
{
    SAME("hello, world");
    SAME(" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~");
    SAME("   leading and trailing   ");
}

Test(proto_sanitize, valid_utf8_unchanged, .timeout = 10)
{
    SAME("caf\xc3\xa9 na\xc3\xafve \xc3\x9f");                     /* Latin */
    SAME("\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82");      /* Привет */
    SAME("\xce\x93\xce\xb5\xce\xb9\xce\xac");                      /* Γειά */
    SAME("\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d");                      /* שלום */
    SAME("\xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7");              /* مرحبا */
    SAME("\xe0\xa4\xa8\xe0\xa4\xae\xe0\xa4\xb8\xe0\xa5\x8d\xe0\xa4\xa4\xe0\xa5\x87"); /* नमस्ते */
    SAME("\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe7\x95\x8c");      /* 你好世界 */
    SAME("\xe3\x81\x93\xe3\x82\x93\xe3\x81\xab\xe3\x81\xa1\xe3\x81\xaf"); /* こんにちは */
    SAME("\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4");                  /* 한국어 */
    SAME("\xe0\xb8\xaa\xe0\xb8\xa7\xe0\xb8\xb1\xe0\xb8\xaa\xe0\xb8\x94\xe0\xb8\xb5"); /* สวัสดี */
    SAME("\xf0\x9f\x98\x80\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd");      /* 😀👍🏽 */
    SAME("\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7"); /* ZWJ family */
    SAME("\xf0\x9f\x87\xab\xf0\x9f\x87\xb7");                      /* flag FR */
    SAME("e\xcc\x81");                                             /* e + combining acute */
    SAME("\xc2\xa0\xc2\xa9\xc2\xbf");                              /* U+00A0, ©, ¿ */
    SAME("\xe2\x80\x8e\xe2\x80\x8f\xd8\x9c");                      /* LRM, RLM, ALM kept */
    SAME("\xef\xbf\xbd\xef\xbb\xbf\xef\xbf\xbf");                  /* U+FFFD, BOM, U+FFFF */
    SAME("\xf4\x8f\xbf\xbf\xf0\x90\x80\x80\xee\x80\x80");          /* U+10FFFF, U+10000, U+E000 */
    SAME("\xed\x9f\xbf\xe0\xa0\x80");                              /* U+D7FF, U+0800 */
}

Test(proto_sanitize, tab_becomes_space, .timeout = 10)
{
    CHECK("a\tb\t\tc", "a b  c");
}

Test(proto_sanitize, c0_controls_removed, .timeout = 10)
{
    CHECK("a\x01\x02\x03\x04\x05\x06\x07z", "az");
    CHECK("a\x0a\x0b\x0c\x0d\x0e\x0fz", "az");
    CHECK("a\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1c\x1d\x1e\x1fz", "az");
    CHECK("line\r\nbreak", "linebreak");
    CHECK("\x07\x07\x07", "");
}

Test(proto_sanitize, nul_keeps_tail, .timeout = 10)
{
    CHECK("abc\0def", "abcdef");
    CHECK("\0\0x\0", "x");
}

Test(proto_sanitize, backspace_and_del_erase, .timeout = 10)
{
    CHECK("abc\bd", "abd");
    CHECK("abc\x7f\x7f", "a");
    CHECK("\b\x7fx", "x");
    CHECK("ab\b\b\b\bc", "c");
    CHECK("a\xc3\xa9\b", "a");                       /* é */
    CHECK("a\xe2\x82\xac\x7f", "a");                 /* € */
    CHECK("a\xf0\x9f\x98\x80\b", "a");               /* 😀 */
    CHECK("\xe4\xbd\xa0\xe5\xa5\xbd\b", "\xe4\xbd\xa0");
    CHECK("a\xff\b", "a");                           /* erases its own U+FFFD */
    CHECK("a\xe2\x82\b", "a" FFFD);                  /* two U+FFFD, one erased */
    CHECK("a\x1b[31m\b", "");                        /* erases the 'a' */
}

Test(proto_sanitize, csi_removed, .timeout = 10)
{
    CHECK("a\x1b[31mred\x1b[0mb", "aredb");
    CHECK("\x1b[2J\x1b[H\x1b[?1049h", "");
    CHECK("a\x1b[1;2;3;4 qb", "ab");          /* intermediate byte */
    CHECK("a\x1b[@b", "ab");                  /* lowest final byte */
    CHECK("a\x1b[~b", "ab");                  /* highest final byte */
    CHECK("a\x1b[12", "a");                   /* unterminated */
    CHECK("a\x1b[", "a");
    /* a byte that cannot be in a CSI ends it and is sanitised on its own */
    CHECK("a\x1b[12\nb", "ab");
    CHECK("a\x1b[3\xc3\xa9x", "a\xc3\xa9x");
    CHECK("a\x1b[3\x1b[31mb", "ab");
}

Test(proto_sanitize, osc_removed, .timeout = 10)
{
    CHECK("a\x1b]0;title\x07z", "az");
    CHECK("a\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\z", "alinkz");
    CHECK("a\x1b]52;c;ZXZpbA==\x07z", "az");
    CHECK("a\x1b]0;never ends", "a");
    CHECK("a\x1b]0;t\x1b", "a");
    /* another ESC ends the string and starts a sequence of its own */
    CHECK("a\x1b]0;t\x1b[31mz", "az");
}

Test(proto_sanitize, dcs_sos_pm_apc_removed, .timeout = 10)
{
    CHECK("a\x1bPq#0;2;0;0;0\x1b\\z", "az");
    CHECK("a\x1bXsos\x1b\\z", "az");
    CHECK("a\x1b^pm\x1b\\z", "az");
    CHECK("a\x1b_apc\x1b\\z", "az");
    CHECK("a\x1bPbel\x07" "does not end\x1b\\z", "az"); /* only ST ends a DCS */
    CHECK("a\x1bPunterminated", "a");
}

Test(proto_sanitize, two_byte_escapes_removed, .timeout = 10)
{
    CHECK("a\x1b" "cz", "az");       /* RIS */
    CHECK("a\x1b" "7\x1b" "8z", "az"); /* save/restore cursor */
    CHECK("a\x1b" "Mz", "az");
    CHECK("a\x1b" "=z", "az");
    CHECK("a\x1b(0z", "az");         /* charset designation: ESC ( 0 */
    CHECK("a\x1b#8z", "az");         /* DECALN */
    CHECK("a\x1b\x1b" "cz", "az");   /* a second ESC starts again */
    CHECK("a\x1b\nz", "az");
    CHECK("a\x1b\xc3\xa9z", "a\xc3\xa9z"); /* a character is not split */
}

Test(proto_sanitize, esc_at_end_dropped, .timeout = 10)
{
    CHECK("abc\x1b", "abc");
    CHECK("\x1b", "");
    CHECK("abc\x1b(", "abc");
}

Test(proto_sanitize, c1_removed, .timeout = 10)
{
    CHECK("a\xc2\x80z", "az");
    CHECK("a\xc2\x9b" "31mz", "a31mz"); /* 8-bit CSI: its parameters are plain text */
    CHECK("a\xc2\x9d\xc2\x9c\xc2\x9fz", "az");
    CHECK("\xc2\x85", "");
    SAME("\xc2\xa0");                   /* U+00A0 is not C1 */
}

Test(proto_sanitize, raw_c1_bytes_are_invalid, .timeout = 10)
{
    CHECK("a\x9b" "31m", "a" FFFD "31m");
    CHECK("\x80\x9f", FFFD FFFD);
}

Test(proto_sanitize, bidi_controls_removed, .timeout = 10)
{
    CHECK("a\xe2\x80\xaa\xe2\x80\xab\xe2\x80\xac\xe2\x80\xad\xe2\x80\xaez", "az");
    CHECK("a\xe2\x81\xa6\xe2\x81\xa7\xe2\x81\xa8\xe2\x81\xa9z", "az");
    CHECK("abc\xe2\x80\xae" "fdp.exe", "abcfdp.exe");
    /* neighbours of the ranges stay (U+2029, the other one, goes: see below) */
    SAME("\xe2\x80\xa7\xe2\x80\xaf\xe2\x81\xa5\xe2\x81\xaa");
}

Test(proto_sanitize, invalid_utf8_replaced_per_byte, .timeout = 10)
{
    CHECK("\xc0\x80", FFFD FFFD);                   /* overlong NUL */
    CHECK("\xc1\xbf", FFFD FFFD);                   /* overlong */
    CHECK("\xe0\x80\x80", FFFD FFFD FFFD);          /* overlong */
    CHECK("\xe0\x9f\xbf", FFFD FFFD FFFD);          /* overlong U+07FF */
    CHECK("\xf0\x80\x80\x80", FFFD FFFD FFFD FFFD); /* overlong */
    CHECK("\xf0\x8f\xbf\xbf", FFFD FFFD FFFD FFFD); /* overlong U+FFFF */
    CHECK("\xed\xa0\x80", FFFD FFFD FFFD);          /* U+D800 */
    CHECK("\xed\xbf\xbf", FFFD FFFD FFFD);          /* U+DFFF */
    CHECK("\xf4\x90\x80\x80", FFFD FFFD FFFD FFFD); /* U+110000 */
    CHECK("\xf5\x80\x80\x80", FFFD FFFD FFFD FFFD);
    CHECK("\xff", FFFD);
    CHECK("\xfe", FFFD);
    CHECK("\x80", FFFD);
    CHECK("a\xbf" "b", "a" FFFD "b");
}

Test(proto_sanitize, truncated_sequences, .timeout = 10)
{
    CHECK("\xe2\x82", FFFD FFFD);                 /* € cut at the end */
    CHECK("a\xe2\x82" "b", "a" FFFD FFFD "b");    /* and in the middle */
    CHECK("\xf0\x9f\x98", FFFD FFFD FFFD);
    CHECK("\xc3", FFFD);
    CHECK("\xc3\xc3\xa9", FFFD "\xc3\xa9");      /* a lead restarts */
    CHECK("\xe2\x82\x1b[31m", FFFD FFFD);         /* ESC ends it, then CSI removed */
    CHECK("\xe2\x82\x00\xac", FFFD FFFD FFFD);     /* NUL inside is not skipped over */
}

Test(proto_sanitize, output_fits_worst_case, .timeout = 10)
{
    char in[64];
    memset(in, 0xff, sizeof in);
    size_t len;
    char *out = sanitize(in, sizeof in, &len);
    cr_assert_eq(len, CHAT_SANITIZE_MAX(sizeof in));
    free(out);
}

/* ---- randomised properties ---- */

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64: fixed seed, same sequence on every run */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Returns false on any invalid sequence (utf8_strict.h), else stores the code points in
 * cps (room for n). */
static bool utf8_valid(const unsigned char *s, size_t n, uint32_t *cps, size_t *ncp)
{
    *ncp = 0;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_strict_next(s + i, n - i, &cps[*ncp]);
        if (!len)
            return false;
        (*ncp)++;
        i += len;
    }
    return true;
}

Test(proto_sanitize, random_buffers_properties, .timeout = 10)
{
    /* pieces that make interesting inputs when strung together */
    static const char *const pieces[] = {
        "a", "Z", " ", "\t", "\b", "\x7f", "\0", "\r", "\n", "\x1b", "[", "]", "P", "\\",
        "\x07", "m", "3", ";", "\x1b[", "\x1b]", "\x1b\\", "\xc3\xa9", "\xe2\x82\xac",
        "\xf0\x9f\x98\x80", "\xc2\x9b", "\xc2\x85", "\xe2\x80\xae", "\xe2\x81\xa6",
        "\xef\xbf\xbd", "\xc0", "\x80", "\xbf", "\xe0", "\xed", "\xf4", "\xff", "\xc2",
        "\xe2\x82", "\xf0\x9f",
    };
    enum { ITER = 20000, MAXIN = 64 };
    uint64_t seed = 0xC0FFEE;
    char in[MAXIN];
    char out[CHAT_SANITIZE_MAX(MAXIN)];
    char again[CHAT_SANITIZE_MAX(CHAT_SANITIZE_MAX(MAXIN))];
    uint32_t cps[CHAT_SANITIZE_MAX(MAXIN)];

    for (int iter = 0; iter < ITER; iter++) {
        size_t n = 0;
        size_t want = rng_next(&seed) % (MAXIN + 1);
        while (n < want) {
            if (rng_next(&seed) % 4 == 0) {
                in[n++] = (char)rng_next(&seed); /* any byte */
            } else {
                const char *p = pieces[rng_next(&seed) % (sizeof pieces / sizeof pieces[0])];
                size_t k = p[0] ? strlen(p) : 1;
                for (size_t i = 0; i < k && n < want; i++)
                    in[n++] = p[i];
            }
        }

        size_t len = chat_sanitize(in, n, out);
        cr_assert_leq(len, CHAT_SANITIZE_MAX(n), "iteration %d: %zu bytes from %zu", iter, len, n);
        size_t ncp;
        cr_assert(utf8_valid((const unsigned char *)out, len, cps, &ncp),
                  "iteration %d: output is not valid UTF-8", iter);
        for (size_t i = 0; i < ncp; i++) {
            const char *why = utf8_unsafe(cps[i]);
            cr_assert(!why, "iteration %d: %s U+%04X left", iter, why, cps[i]);
        }
        size_t len2 = chat_sanitize(out, len, again);
        cr_assert(len2 == len && memcmp(out, again, len) == 0,
                  "iteration %d: sanitising twice changed the output", iter);
    }
}

/* Input that is already safe (no more than CHAT_SPACES_MAX spaces in a row) is never
 * touched. */
Test(proto_sanitize, random_safe_text_unchanged, .timeout = 10)
{
    static const char *const chars[] = {
        "a", "q", " ", "~", "\xc2\xa0", "\xc3\xa9", "\xd7\xa9", "\xe2\x82\xac", "\xe2\x80\x8e",
        "\xe4\xbd\xa0", "\xef\xbf\xbd", "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf",
    };
    uint64_t seed = 42;
    char in[256], out[CHAT_SANITIZE_MAX(256)];
    for (int iter = 0; iter < 5000; iter++) {
        size_t n = 0, want = rng_next(&seed) % 60;
        unsigned spaces = 0;
        for (size_t k = 0; k < want; k++) {
            const char *c = chars[rng_next(&seed) % (sizeof chars / sizeof chars[0])];
            bool space = strcmp(c, " ") == 0 || strcmp(c, "\xc2\xa0") == 0;
            bool zero = strcmp(c, "\xe2\x80\x8e") == 0; /* LRM: no width, no end of a run */
            if (space && spaces == CHAT_SPACES_MAX)
                c = "a", space = false;
            spaces = space ? spaces + 1 : zero ? spaces : 0;
            memcpy(in + n, c, strlen(c));
            n += strlen(c);
        }
        size_t len = chat_sanitize(in, n, out);
        cr_assert(len == n && memcmp(in, out, n) == 0, "iteration %d: safe text changed", iter);
    }
}

/* Issue 17, item 6: line and paragraph separators (a line break the terminal does not
 * show), tag characters (invisible data) and interlinear annotation characters (hidden
 * text) are removed; their neighbours stay. */
Test(proto_sanitize, separators_tags_and_annotations_removed, .timeout = 10)
{
    CHECK("a\xe2\x80\xa8" "b\xe2\x80\xa9" "c", "abc");             /* U+2028, U+2029 */
    CHECK("a\xf3\xa0\x80\x81\xf3\xa0\x81\xbf" "b", "ab");        /* U+E0001, U+E007F */
    CHECK("a\xef\xbf\xb9" "x\xef\xbf\xba" "y\xef\xbf\xbb" "b", "axyb"); /* U+FFF9-B */
    SAME("\xf3\xa0\x84\x80\xef\xbf\xb8\xef\xbf\xbc"); /* U+E0100, U+FFF8, U+FFFC */
}

/* Issue 17, item 6: at most CHAT_MARKS_MAX combining marks on one character, however
 * many were sent; a backspace that erases one makes room for another. */
#define ACUTE "\xcc\x81"
#define ACUTE4 ACUTE ACUTE ACUTE ACUTE
Test(proto_sanitize, combining_marks_capped, .timeout = 10)
{
    CHECK("a" ACUTE4 ACUTE ACUTE, "a" ACUTE4);
    CHECK("a" ACUTE4 ACUTE "b" ACUTE4 ACUTE4, "a" ACUTE4 "b" ACUTE4);
    CHECK(ACUTE4 ACUTE4, ACUTE4); /* no base at all */
    CHECK("a" ACUTE4 "\x08" ACUTE ACUTE, "a" ACUTE4);
    CHECK("a" ACUTE4 "\x01" ACUTE, "a" ACUTE4); /* a removed control does not reset */
    SAME("e\xcc\x81\xcc\x82 \xe0\xa4\x95\xe0\xa5\x8d\xe0\xa4\xb7"); /* real accents, Devanagari */
    char *zalgo = malloc(2 + 1000 * 2);
    cr_assert(zalgo);
    zalgo[0] = 'Z';
    for (int i = 0; i < 1000; i++)
        memcpy(zalgo + 1 + 2 * i, ACUTE, 2);
    check(zalgo, 1 + 2000, "Z" ACUTE4, 1 + 8);
    free(zalgo);
}

/* Issue 17, item 6: a line that shows nothing is empty, and so is an argument. */
Test(proto_sanitize, nothing_visible, .timeout = 10)
{
    static const char *const blank[] = {
        "\xe2\x80\x8b",                 /* U+200B zero-width space */
        "\xe3\x85\xa4\xe3\x85\xa4",      /* U+3164 Hangul filler */
        "\xe1\x85\x9f",                 /* U+115F Hangul choseong filler */
        " \xc2\xa0\xe3\x80\x80\xef\xbb\xbf", /* spaces, U+3000, U+FEFF */
        "\xe2\xa0\x80",                 /* U+2800 Braille blank */
        ACUTE4,                          /* marks on nothing */
    };
    for (size_t i = 0; i < sizeof(blank) / sizeof(blank[0]); i++) {
        char clean[64];
        chat_cmd c;
        cr_assert(!chat_line_parse(blank[i], strlen(blank[i]), clean, &c), "line %zu shown", i);
        char line[64];
        snprintf(line, sizeof line, "/me %s", blank[i]);
        cr_assert(chat_line_parse(line, strlen(line), clean, &c));
        cr_assert(c.kind == CHAT_CMD_ME && c.arg_len == 0, "/me with line %zu has text", i);
    }
    char clean[64];
    chat_cmd c;
    cr_assert(chat_line_parse("\xe2\x80\x8bhi", 5, clean, &c) && c.arg_len == 5,
              "visible text beside invisible is kept whole");
}

/* Issue 17, item 5: "hi" + 200 spaces + "*** guest2 has left (quit: bye)." wrapped on an
 * 80-column terminal to a line that starts with "***": runs of spaces, of any width,
 * keep CHAT_SPACES_MAX. */
Test(proto_sanitize, space_runs_capped, .timeout = 10)
{
    CHECK("a     b", "a   b");
    CHECK("a\t\t\t\t\tb", "a   b");
    /* U+00A0, U+3000, U+2003 */
    CHECK("a \xc2\xa0\xe3\x80\x80\xe2\x80\x83 b", "a \xc2\xa0\xe3\x80\x80" "b");
    CHECK("a   \x01 b", "a   b"); /* a removed control does not end the run */
    CHECK("a   \x08  b", "a   b"); /* a backspace makes room for one more */
    SAME("a   b   c");
    /* Blanks that take room count as spaces, characters of no width between them do
     * not break the run (review of the first version: " " + U+200B a hundred times,
     * or U+2800, U+3164, kept every blank). */
    CHECK("a \xe2\x80\x8b \xe2\x80\x8b \xe2\x80\x8b \xe2\x80\x8b b",
          "a \xe2\x80\x8b \xe2\x80\x8b \xe2\x80\x8b\xe2\x80\x8b" "b");
    CHECK("a\xe2\xa0\x80\xe2\xa0\x80\xe2\xa0\x80\xe2\xa0\x80" "b",
          "a\xe2\xa0\x80\xe2\xa0\x80\xe2\xa0\x80" "b");  /* U+2800 */
    CHECK("a\xe3\x85\xa4\xe3\x85\xa4 \xe3\x85\xa4" "b",
          "a\xe3\x85\xa4\xe3\x85\xa4 " "b");                /* U+3164 */
    CHECK("a \xef\xb8\x8f \xef\xb8\x8f \xef\xb8\x8f \xef\xb8\x8f" "b",
          "a \xef\xb8\x8f \xef\xb8\x8f \xef\xb8\x8f\xef\xb8\x8f" "b"); /* U+FE0F */
    char in[300] = "hi";
    memset(in + 2, ' ', 200);
    strcpy(in + 202, "*** guest2 has left (quit: bye).");
    check(in, strlen(in), "hi   *** guest2 has left (quit: bye).",
          strlen("hi   *** guest2 has left (quit: bye)."));
}
