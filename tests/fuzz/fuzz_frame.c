/*
 * libFuzzer target: the line framer and telnet filter (src/server/proto.c).
 * Input: byte 0 picks the mode (telnet or raw) and a small max_line, so overlong lines
 * are common; bytes 1..4 seed the split points; the rest is the client's byte stream.
 * Checks: every feed makes progress and stays in bounds; lines respect max_line and the
 * mode's terminator rules; and the events are the same whether the stream is fed whole or
 * split at arbitrary points (the framer's promise).
 */
#include "server/proto.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EVENTS 4096

typedef struct event {
    chat_frame_kind kind;
    size_t len;
    uint32_t hash; /* of the line's bytes */
} event;

typedef struct run {
    event ev[MAX_EVENTS];
    size_t n;
    char replies[4096];
    size_t reply_len;
} run;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_frame: invariant broken: %s\n", what);
        abort();
    }
}

static uint32_t hash(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

/* Feeds data in chunks whose sizes come from a small generator seeded by `seed`
 * (seed 0: all at once) and records what comes out. */
static void feed(run *r, bool telnet, size_t max_line, const char *data, size_t n, uint32_t seed)
{
    chat_framer f;
    check(chat_framer_init(&f, max_line, telnet) == 0, "init");
    chat_frame_out out = {0};
    size_t off = 0;
    uint32_t x = seed;
    while (off < n) {
        size_t chunk = n - off;
        if (seed) {
            x = x * 1103515245u + 12345u;
            chunk = 1 + (x >> 16) % 7;
            if (chunk > n - off)
                chunk = n - off;
        }
        const char *p = data + off;
        size_t left = chunk;
        while (left) {
            size_t used = chat_frame_feed(&f, p, left, &out);
            check(used > 0 && used <= left, "a feed consumed nothing or too much");
            p += used;
            left -= used;
            check(out.reply_len <= sizeof(out.reply), "reply overflow");
            if (out.reply_len) {
                size_t k = out.reply_len;
                if (k > sizeof(r->replies) - r->reply_len)
                    k = sizeof(r->replies) - r->reply_len;
                memcpy(r->replies + r->reply_len, out.reply, k);
                r->reply_len += k;
                out.reply_len = 0;
            }
            if (out.kind == CHAT_FRAME_NONE)
                continue;
            if (out.kind == CHAT_FRAME_LINE) {
                if (telnet) {
                    check(out.len <= max_line, "telnet line longer than max_line");
                    check(!out.len || (!memchr(out.line, '\n', out.len) &&
                                       !memchr(out.line, '\r', out.len)),
                          "telnet line kept a terminator");
                } else {
                    check(out.len >= 1 && out.line[out.len - 1] == '\n', "raw line without LF");
                    check(out.len <= max_line + 2, "raw line longer than max_line + CRLF");
                    check(!memchr(out.line, '\n', out.len - 1), "raw line with an inner LF");
                }
            }
            if (r->n < MAX_EVENTS)
                r->ev[r->n++] = (event){out.kind, out.kind == CHAT_FRAME_LINE ? out.len : 0,
                                        out.kind == CHAT_FRAME_LINE ? hash(out.line, out.len)
                                                                    : 0};
            out.kind = CHAT_FRAME_NONE;
        }
        off += chunk;
        chat_framer_trim(&f);
    }
    chat_framer_free(&f);
}

static run whole, split;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 5)
        return 0;
    bool telnet = data[0] & 1;
    size_t max_line = 1 + (data[0] >> 1) % 64;
    uint32_t seed = (uint32_t)data[1] | (uint32_t)data[2] << 8 | (uint32_t)data[3] << 16 |
                    (uint32_t)data[4] << 24 | 1u;
    const char *p = (const char *)data + 5;
    size_t n = size - 5;
    memset(&whole, 0, sizeof whole);
    memset(&split, 0, sizeof split);
    feed(&whole, telnet, max_line, p, n, 0);
    feed(&split, telnet, max_line, p, n, seed);
    check(whole.n == split.n, "split input gave a different number of events");
    for (size_t i = 0; i < whole.n; i++)
        check(whole.ev[i].kind == split.ev[i].kind && whole.ev[i].len == split.ev[i].len &&
                  whole.ev[i].hash == split.ev[i].hash,
              "split input gave a different event");
    check(whole.reply_len == split.reply_len &&
              memcmp(whole.replies, split.replies, whole.reply_len) == 0,
          "split input gave different telnet answers");
    return 0;
}
