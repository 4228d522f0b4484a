/*
 * Doors on a byte stream (door_stream.h): a client's stream handlers, cutting its
 * input into lines under the flood limit and holding it while the bus answers, and
 * the door functions that send to it and close it.  What a line does and how events
 * look are door_telnet.c's and door_raw.c's.
 */
#include "door_stream.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>

#define CLIENT(s) ((stream_client *)(s))

/* How long a session waits for the bus's answer at most; the Redis bus answers every
 * question (if only with "too slow" after 2 s), so this is a safety net. */
#define HOLD_MAX_MS 60000

int chat_stream_send(chat_session *s, px_buf *b)
{
    int rc = px_stream_send(CLIENT(s)->st, b);
    if (rc == PX_ESENDQ) {
        chat_set_reason(s, "too slow");
        px_stream_abort(CLIENT(s)->st);
    }
    return rc;
}

void chat_stream_close(chat_session *s, px_buf *last, bool graceful)
{
    px_stream *st = CLIENT(s)->st;
    if (last)
        px_stream_send(st, last); /* if it fits: nobody is dropped for a goodbye */
    if (graceful)
        px_stream_close(st);
    else
        px_stream_abort(st);
}

typedef struct stream_call {
    chat_session *s;
    void (*fn)(chat_session *s, void *arg);
    void *arg;
} stream_call;

static void call_run(px_stream *st, void *arg, void *user)
{
    (void)st;
    (void)user;
    stream_call *c = arg;
    c->fn(c->s, c->arg);
    free(c);
}

int chat_stream_call(chat_session *s, void (*fn)(chat_session *s, void *arg), void *arg)
{
    stream_call *c = malloc(sizeof(*c));
    if (!c)
        return -ENOMEM;
    *c = (stream_call){.s = s, .fn = fn, .arg = arg};
    int rc = px_stream_call(CLIENT(s)->st, call_run, c);
    if (rc)
        free(c);
    return rc;
}

void chat_stream_hold(chat_session *s)
{
    stream_client *c = CLIENT(s);
    c->held = true;
    c->held_until_ms = px_now_ms() + HOLD_MAX_MS;
    px_stream_pause(c->st, HOLD_MAX_MS);
}

/* Reading resumes, but not before the flood limit allows. */
void chat_stream_release(chat_session *s)
{
    stream_client *c = CLIENT(s);
    c->held = false;
    px_stream_resume(c->st);
    uint64_t now = px_now_ms();
    if (c->read_after_ms > now)
        px_stream_pause(c->st, c->read_after_ms - now);
}

void chat_stream_free(chat_session *s)
{
    stream_client *c = CLIENT(s);
    chat_framer_free(&c->framer);
    px_stream_release(c->st);
    free(c);
}

static void send_bytes(stream_client *c, const char *p, size_t n)
{
    px_buf *b;
    if (px_buf_new(&b, p, n) == 0) {
        chat_stream_send(&c->s, b);
        px_buf_release(b);
    }
}

void chat_stream_open(px_stream *st, const stream_door *d)
{
    stream_client *c = calloc(1, sizeof(*c));
    if (!c || chat_framer_init(&c->framer, chat_cfg->max_line, d->telnet) != 0) {
        free(c);
        srv_log(SRV_LOG_ERROR, "out of memory: refusing a client");
        px_stream_abort(st);
        return;
    }
    c->st = px_stream_retain(st);
    c->tokens = chat_cfg->flood_burst;
    c->tokens_ms = px_now_ms();
    char addr[64];
    if (px_stream_peer(st, addr, sizeof(addr)) < 0)
        strcpy(addr, "?");
    if (chat_session_init(&c->s, &d->door, addr) != 0) {
        px_stream_close(st);
        chat_stream_free(&c->s);
        return;
    }
    px_stream_set_user(st, c);
    chat_session_start(&c->s);
}

/* Takes one line's worth of flood tokens; returns how long the client must wait
 * before its next line (0: within the limit). */
static uint64_t flood_charge(stream_client *c)
{
    unsigned rate = chat_cfg->flood_rate;
    if (!rate)
        return 0;
    uint64_t now = px_now_ms();
    c->tokens += (double)(now - c->tokens_ms) * rate / 1000.0;
    if (c->tokens > chat_cfg->flood_burst)
        c->tokens = chat_cfg->flood_burst;
    c->tokens_ms = now;
    c->tokens -= 1.0;
    if (c->tokens >= 0)
        return 0;
    return (uint64_t)(-c->tokens * 1000.0 / rate) + 1;
}

/* Input that arrived while a question to the bus is in flight waits for its answer. */
static void on_data_held(stream_client *c, size_t len)
{
    if (px_now_ms() >= c->held_until_ms) { /* its answer was lost (out of memory) */
        chat_set_reason(&c->s, "no answer from the cluster");
        px_stream_abort(c->st);
        return;
    }
    if (px_stream_keep(c->st, len) != 0) {
        chat_set_reason(&c->s, "out of memory");
        px_stream_abort(c->st);
    }
    px_stream_pause(c->st, c->held_until_ms - px_now_ms());
}

/* A complete line; *len: what is left of the chunk (0 once kept for later). */
static void on_line(stream_client *c, const chat_frame_out *out, size_t *len,
                    stream_chunk *chunk)
{
    const stream_door *d = (const stream_door *)c->s.door;
    uint64_t wait = flood_charge(c);
    if (wait) {
        c->read_after_ms = px_now_ms() + wait;
        /* Over the rate: this line goes out, the rest of the chunk comes back after
         * the pause, and meanwhile the socket is not read, so TCP slows the sender.
         * Nothing is dropped. */
        if (*len && px_stream_keep(c->st, *len) == 0)
            *len = 0;
        px_stream_pause(c->st, wait); /* also when keep failed: the limit holds */
    }
    d->line(c, out->line, out->len, chunk);
    /* A question to the bus: the rest waits for its answer. */
    if (c->held && *len && px_stream_keep(c->st, *len) != 0) {
        chat_set_reason(&c->s, "out of memory");
        px_stream_abort(c->st);
    }
}

void chat_stream_on_data(px_stream *st, const char *bytes, size_t len, void *user)
{
    (void)st;
    stream_client *c = user;
    if (c && c->held) {
        on_data_held(c, len);
        return;
    }
    if (!c || !c->s.room)
        return;
    const stream_door *d = (const stream_door *)c->s.door;
    atomic_store(&c->s.last_active_ms, px_now_ms());
    chat_frame_out out = {0};
    stream_chunk chunk = {0};
    /* Stop at once when the session is leaving (/quit, dropped as too slow, out of
     * memory): nothing it sent after that may reach anyone. */
    while (len && c->s.room && !c->held && !atomic_load(&c->s.reason)) {
        size_t used = chat_frame_feed(&c->framer, bytes, len, &out);
        bytes += used;
        len -= used;
        if (out.reply_len) {
            send_bytes(c, out.reply, out.reply_len);
            out.reply_len = 0;
        }
        switch (out.kind) {
        case CHAT_FRAME_NONE: break;
        case CHAT_FRAME_TOO_LONG: d->too_long(c); break;
        case CHAT_FRAME_LINE: on_line(c, &out, &len, &chunk); break;
        }
    }
    if (d->chunk_end) /* lines accepted before any reason to stop still go out */
        d->chunk_end(c, &chunk);
    chat_framer_trim(&c->framer); /* an idle client keeps no line buffer */
}

void chat_stream_on_close(px_stream *st, int cause, void *user)
{
    stream_client *c = user;
    if (!c)
        return;
    px_stream_set_user(st, NULL);
    chat_session_closed(&c->s, cause);
}
