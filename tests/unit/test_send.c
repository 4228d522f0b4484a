/* Sending: one buffer shared by many streams, the bounded send queue, and
 * ordered delivery of many queued buffers. */
#include "helpers.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- one buffer, many streams ---- */

enum { SHARE_N = 50, SHARE_LEN = 512 * 1024 };

static atomic_int share_frees;

static void share_free(const void *data, void *ctx)
{
    (void)ctx;
    free((void *)data);
    atomic_fetch_add(&share_frees, 1);
}

Test(send, one_buffer_shared_by_many_streams, .timeout = 60)
{
    px_loop *loop = tc_loop_new(PX_EXEC_POOL, NULL);
    tc_runner r;
    tc_runner_start(&r, loop);

    static tc_sink sinks[SHARE_N];
    int peer[SHARE_N];
    px_stream *st[SHARE_N];
    px_stream_opts so = {.sendq_bytes = 4 * SHARE_LEN};
    for (int i = 0; i < SHARE_N; i++) {
        int sv[2];
        tc_socketpair(sv);
        /* so a whole SHARE_LEN cannot sit in the kernel: an unread peer
         * keeps its send incomplete */
        tc_small_sndbuf(sv[0], 16 * 1024);
        tc_sink_init(&sinks[i]);
        cr_assert_eq(px_stream_open(loop, &st[i], sv[0], &tc_sink_handlers, &sinks[i], &so), 0);
        peer[i] = sv[1];
    }

    char *mem = malloc(SHARE_LEN);
    cr_assert_not_null(mem);
    tc_fill(mem, SHARE_LEN, 11, 0);
    px_buf *b = NULL;
    cr_assert_eq(px_buf_wrap(&b, mem, SHARE_LEN, share_free, NULL), 0);
    for (int i = 0; i < SHARE_N; i++)
        cr_assert_eq(px_stream_send(st[i], b), 0, "send to stream %d", i);
    px_buf_release(b); /* the streams hold the only references now */
    cr_assert_eq(atomic_load(&share_frees), 0);

    char *got = malloc(SHARE_LEN);
    cr_assert_not_null(got);
    for (int i = 1; i < SHARE_N; i++) {
        memset(got, 0, SHARE_LEN);
        size_t n = 0;
        int rc = tc_read_exact(peer[i], got, SHARE_LEN, 20000, &n);
        cr_assert_eq(rc, 0, "peer %d read %zu of %d bytes: %s", i, n, SHARE_LEN, px_strerror(rc));
        cr_assert_eq(tc_check_fill(got, SHARE_LEN, 11, 0), SHARE_LEN, "peer %d got corrupted bytes", i);
    }
    /* Peer 0 has read nothing: its send cannot have completed. */
    cr_assert_gt(px_stream_queued_bytes(st[0]), 0);
    cr_assert_eq(atomic_load(&share_frees), 0, "buffer freed before the last send completed");

    memset(got, 0, SHARE_LEN);
    cr_assert_eq(tc_read_exact(peer[0], got, SHARE_LEN, 20000, NULL), 0);
    cr_assert_eq(tc_check_fill(got, SHARE_LEN, 11, 0), SHARE_LEN);
    cr_assert(tc_wait_ge(&share_frees, 1, 10000), "buffer not freed after every send completed");
    free(got);

    for (int i = 0; i < SHARE_N; i++) {
        close(peer[i]);
        cr_assert(tc_wait_ge(&sinks[i].closes, 1, 10000), "stream %d: no on_close after peer EOF", i);
        cr_assert_eq(atomic_load(&sinks[i].cause), 0);
    }
    tc_runner_finish(&r);
    cr_assert_eq(atomic_load(&share_frees), 1, "free_fn must run exactly once");
    for (int i = 0; i < SHARE_N; i++)
        cr_assert_eq(atomic_load(&sinks[i].closes), 1);
    tc_assert_no_failures();
}

/* ---- the bounded send queue ---- */

enum { SQ_BOUND = 64 * 1024, SQ_CHUNK = 4096, SQ_MAX_SENDS = 100000 };

static px_buf *chunk_at(size_t offset, size_t len)
{
    px_buf *b = NULL;
    void *d = NULL;
    cr_assert_eq(px_buf_alloc(&b, len, &d), 0);
    tc_fill(d, len, 5, offset);
    return b;
}

/* A sink stream k on sv[0] of a running loop of executor ex, with options o (may be
 * NULL), whose socket send buffer is lowered to sndbuf bytes so that a peer that does
 * not read soon fills it. */
static px_stream *sink_stream(px_executor ex, tc_runner *r, int sv[2], int sndbuf, tc_sink *k,
                              const px_stream_opts *o)
{
    px_loop *loop = tc_start_pair(ex, r, sv);
    tc_small_sndbuf(sv[0], sndbuf);
    tc_sink_init(k);
    px_stream *s = NULL;
    cr_assert_eq(px_stream_open(loop, &s, sv[0], &tc_sink_handlers, k, o), 0);
    return s;
}

TC_EXEC_PARAMS(send, queue_is_bounded)

ParameterizedTest(px_executor *ex, send, queue_is_bounded, .timeout = 30)
{
    tc_runner r;
    int sv[2];
    tc_sink k;
    px_stream_opts so = {.sendq_bytes = SQ_BOUND};
    px_stream *s = sink_stream(*ex, &r, sv, 16 * 1024, &k, &so);

    /* The peer never reads: the queue must fill up. */
    size_t sent = 0;
    int rc = 0;
    int i;
    for (i = 0; i < SQ_MAX_SENDS; i++) {
        px_buf *b = chunk_at(sent, SQ_CHUNK);
        rc = px_stream_send(s, b);
        px_buf_release(b); /* on PX_ESENDQ we still owned it: this frees it */
        if (rc != 0)
            break;
        sent += SQ_CHUNK;
        cr_assert_leq(px_stream_queued_bytes(s), SQ_BOUND);
    }
    cr_assert_eq(rc, PX_ESENDQ, "after %d sends: rc %d (%s), expected PX_ESENDQ", i, rc, px_strerror(rc));
    cr_assert_leq(px_stream_queued_bytes(s), SQ_BOUND);
    /* Still open, and (the loop may still have been moving queued bytes into
     * the kernel a moment ago, but the peer never reads) full again after a
     * bounded number of further sends. */
    cr_assert_eq(atomic_load(&k.closes), 0, "PX_ESENDQ must not close the stream");
    for (i = 0; i < 64; i++) {
        px_buf *extra = chunk_at(sent, SQ_CHUNK);
        rc = px_stream_send(s, extra);
        px_buf_release(extra);
        if (rc != 0)
            break;
        sent += SQ_CHUNK;
    }
    cr_assert_eq(rc, PX_ESENDQ, "queue did not stay full: rc %d", rc);
    cr_assert_leq(px_stream_queued_bytes(s), SQ_BOUND);
    cr_assert_eq(atomic_load(&k.closes), 0);

    /* Drain: everything accepted arrives, in order, intact. */
    char *got = malloc(sent);
    cr_assert_not_null(got);
    size_t n = 0;
    rc = tc_read_exact(sv[1], got, sent, 20000, &n);
    cr_assert_eq(rc, 0, "read %zu of %zu queued bytes: %s", n, sent, px_strerror(rc));
    cr_assert_eq(tc_check_fill(got, sent, 5, 0), sent, "drained bytes corrupted or out of order");
    free(got);
    /* The loop may still be returning from the write the peer just read. */
    uint64_t end = tc_now_ms() + 10000;
    while (px_stream_queued_bytes(s) != 0 && tc_now_ms() < end)
        tc_sleep_ms(1);
    cr_assert_eq(px_stream_queued_bytes(s), 0);

    /* Room again. */
    px_buf *b = chunk_at(sent, SQ_CHUNK);
    cr_assert_eq(px_stream_send(s, b), 0);
    px_buf_release(b);
    char tail[SQ_CHUNK];
    cr_assert_eq(tc_read_exact(sv[1], tail, SQ_CHUNK, 10000, NULL), 0);
    cr_assert_eq(tc_check_fill(tail, SQ_CHUNK, 5, sent), SQ_CHUNK);

    /* Closing: sends fail with -EPIPE, while closing and once closed. */
    px_stream_retain(s);
    px_stream_close(s);
    b = chunk_at(0, 16);
    rc = px_stream_send(s, b);
    cr_assert_eq(rc, -EPIPE, "send while closing (%s): %d", px_executor_name(*ex), rc);
    cr_assert_eq(tc_read_eof(sv[1], 10000, false), 0, "peer should see EOF after close");
    cr_assert(tc_wait_ge(&k.closes, 1, 10000));
    cr_assert_eq(atomic_load(&k.cause), 0);
    rc = px_stream_send(s, b);
    cr_assert_eq(rc, -EPIPE, "send after on_close (%s): %d", px_executor_name(*ex), rc);
    px_buf_release(b);
    px_stream_release(s);
    close(sv[1]);

    tc_runner_finish(&r);
    cr_assert_eq(atomic_load(&k.closes), 1);
    tc_assert_no_failures();
}

/* ---- many queued buffers, in order ---- */

/* Reads the `total` bytes the stream was given (the pattern chunk_at wrote), checks every
 * one, then closes the peer and checks the stream closed once, cleanly. */
static void expect_all_then_close(int peer, size_t total, tc_sink *k, tc_runner *r)
{
    char *got = malloc(total);
    cr_assert_not_null(got);
    size_t n = 0;
    int rc = tc_read_exact(peer, got, total, 30000, &n);
    cr_assert_eq(rc, 0, "read %zu of %zu bytes: %s", n, total, px_strerror(rc));
    size_t bad = tc_check_fill(got, total, 5, 0);
    cr_assert_eq(bad, total, "byte %zu of %zu wrong", bad, total);
    free(got);

    close(peer);
    cr_assert(tc_wait_ge(&k->closes, 1, 10000));
    cr_assert_eq(atomic_load(&k->cause), 0);
    tc_runner_finish(r);
    cr_assert_eq(atomic_load(&k->closes), 1);
    tc_assert_no_failures();
}

enum { ORD_BUFS = 1000 };

TC_EXEC_PARAMS(send, many_buffers_in_order)

ParameterizedTest(px_executor *ex, send, many_buffers_in_order, .timeout = 30)
{
    tc_runner r;
    int sv[2];
    tc_sink k;
    px_stream *s = sink_stream(*ex, &r, sv, 8 * 1024, &k, NULL);

    /* Sizes vary from 1 to 211 bytes; the pattern runs on across buffers,
     * so any reordering, loss, duplication or interleaving shows. */
    size_t total = 0;
    for (int i = 0; i < ORD_BUFS; i++) {
        size_t len = 1 + (size_t)(i * 37) % 211;
        px_buf *b = chunk_at(total, len);
        cr_assert_eq(px_stream_send(s, b), 0, "send %d", i);
        px_buf_release(b);
        total += len;
    }
    expect_all_then_close(sv[1], total, &k, &r);
}

/* ---- small buffers copied together, mixed with large ones ---- */

/* Backends copy runs of small buffers into one block of at most PX_STAGE_BYTES before
 * writing.  Mixed with buffers larger than that block (copied in part, the rest written
 * later) and runs of large ones (written as they are), every byte still arrives once, in
 * order, through a socket buffer small enough to force short writes. */
TC_EXEC_PARAMS(send, staged_and_large_buffers_in_order)

ParameterizedTest(px_executor *ex, send, staged_and_large_buffers_in_order, .timeout = 60)
{
    tc_runner r;
    int sv[2];
    tc_sink k;
    px_stream_opts so = {.sendq_bytes = 64u << 20};
    px_stream *s = sink_stream(*ex, &r, sv, 16 * 1024, &k, &so);

    size_t total = 0;
    for (int i = 0; i < 6000; i++) {
        size_t len = 1 + (size_t)(i * 37) % 97;
        if (i % 1500 == 700)
            len = 65536 + 4099; /* longer than the staging block (PX_STAGE_BYTES) */
        else if (i >= 3000 && i < 3040)
            len = 700 + (size_t)i % 300; /* a run that averages above PX_STAGE_AVG (512) */
        px_buf *b = chunk_at(total, len);
        cr_assert_eq(px_stream_send(s, b), 0, "send %d", i);
        px_buf_release(b);
        total += len;
    }
    expect_all_then_close(sv[1], total, &k, &r);
}
