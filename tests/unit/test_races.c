/*
 * Random close/send races across threads (the library half of issue 7's stress tests;
 * it lives with the unit tests so that it runs under AddressSanitizer and
 * ThreadSanitizer with both backends).  Several threads send shared buffers to random
 * streams and close, abort or pause random streams, all at once, while the peers read.
 * Checked: every stream closes exactly once, every buffer is freed exactly once, and
 * each peer receives only whole records, in order per sending thread, except a record
 * cut short by an abort.  ST_STRESS=long (make stress) runs 50 times as many operations.
 */
#include "helpers.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NSTREAMS 32
#define NTHREADS 4
#define MAGIC 0x5A17C0DEu

typedef struct rec_hdr {
    uint32_t magic;
    uint32_t len;    /* payload bytes after the header */
    uint32_t thread; /* sender */
    uint32_t seq;    /* per sender thread and stream */
} rec_hdr;

typedef struct race_stream {
    px_stream *s;          /* retained by the test until the end */
    int peer;              /* the test's end of the socket pair */
    atomic_int closes;     /* on_close calls */
    atomic_bool aborted;   /* px_stream_abort was called */
    /* Peer-side parser. */
    unsigned char buf[1 << 16];
    size_t len;
    bool eof;
    uint32_t next_seq[NTHREADS];
    /* Sender side: per thread, the next seq it will send to this stream. */
    atomic_uint seq[NTHREADS];
} race_stream;

static race_stream streams[NSTREAMS];
static atomic_long bufs_made, bufs_freed, sends_ok, sends_full, sends_closed;
static atomic_long bad_records, cut_records, bad_why[4]; /* magic, order, bytes, cut */

static void on_data(px_stream *s, const char *b, size_t n, void *u)
{
    (void)s, (void)b, (void)n, (void)u;
}

static void on_close(px_stream *s, int cause, void *u)
{
    (void)s, (void)cause;
    race_stream *r = u;
    atomic_fetch_add(&r->closes, 1);
}

static const px_stream_handlers handlers = {.on_data = on_data, .on_close = on_close};

static void buf_free(const void *data, void *ctx)
{
    (void)ctx;
    free((void *)data);
    atomic_fetch_add(&bufs_freed, 1);
}

/* A record for stream r from thread t: header + payload of bytes (seq + i). */
static px_buf *make_record(unsigned t, uint32_t seq, uint32_t len)
{
    unsigned char *p = malloc(sizeof(rec_hdr) + len);
    if (!p)
        return NULL;
    rec_hdr h = {.magic = MAGIC, .len = len, .thread = t, .seq = seq};
    memcpy(p, &h, sizeof(h));
    for (uint32_t i = 0; i < len; i++)
        p[sizeof(h) + i] = (unsigned char)(seq + i);
    px_buf *b;
    if (px_buf_wrap(&b, p, sizeof(h) + len, buf_free, NULL) != 0) {
        free(p);
        return NULL;
    }
    atomic_fetch_add(&bufs_made, 1);
    return b;
}

typedef struct worker {
    unsigned id;
    long ops;
    unsigned rng;
} worker;

static unsigned rnd(unsigned *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

/* Each send of a thread to a stream carries the next seq of (thread, stream); seqs are
 * taken under no lock, so one thread's sends to one stream must be in seq order. */
static void *work(void *arg)
{
    worker *w = arg;
    for (long k = 0; k < w->ops; k++) {
        race_stream *r = &streams[rnd(&w->rng) % NSTREAMS];
        unsigned what = rnd(&w->rng) % 1000;
        if (what < 960) {
            uint32_t seq = atomic_load(&r->seq[w->id]);
            px_buf *b = make_record(w->id, seq, rnd(&w->rng) % 3000);
            if (!b)
                continue;
            int rc = px_stream_send(r->s, b);
            if (rc == 0) {
                atomic_store(&r->seq[w->id], seq + 1);
                atomic_fetch_add(&sends_ok, 1);
            } else if (rc == PX_ESENDQ) {
                atomic_fetch_add(&sends_full, 1);
            } else {
                TC_CHECK(rc == -EPIPE);
                atomic_fetch_add(&sends_closed, 1);
            }
            px_buf_release(b);
        } else if (what < 975) {
            (void)px_stream_queued_bytes(r->s);
            px_stream_pause(r->s, rnd(&w->rng) % 3);
        } else if (what < 990) {
            px_stream_close(r->s);
        } else {
            atomic_store(&r->aborted, true);
            px_stream_abort(r->s);
        }
    }
    return NULL;
}

/* Parses what a peer has buffered: whole records must be valid and in seq order per
 * sending thread (gaps are sends refused or dropped by an abort; the order holds). */
static void parse(race_stream *r)
{
    size_t at = 0;
    while (r->len - at >= sizeof(rec_hdr)) {
        rec_hdr h;
        memcpy(&h, r->buf + at, sizeof(h));
        if (h.magic != MAGIC || h.thread >= NTHREADS || h.len >= 3000) {
            atomic_fetch_add(&bad_why[0], 1);
            atomic_fetch_add(&bad_records, 1);
            r->len = 0;
            return;
        }
        if (r->len - at < sizeof(h) + h.len)
            break;
        bool in_order = h.seq >= r->next_seq[h.thread], same = true;
        for (uint32_t i = 0; i < h.len && same; i++)
            same = r->buf[at + sizeof(h) + i] == (unsigned char)(h.seq + i);
        if (!in_order || !same) {
            atomic_fetch_add(&bad_why[in_order ? 2 : 1], 1);
            atomic_fetch_add(&bad_records, 1);
        }
        r->next_seq[h.thread] = h.seq + 1;
        at += sizeof(h) + h.len;
    }
    memmove(r->buf, r->buf + at, r->len - at);
    r->len -= at;
}

static atomic_bool readers_stop;

static void *read_peers(void *arg)
{
    (void)arg;
    for (;;) {
        struct pollfd p[NSTREAMS];
        int n = 0, idx[NSTREAMS];
        for (int i = 0; i < NSTREAMS; i++)
            if (!streams[i].eof) {
                p[n] = (struct pollfd){.fd = streams[i].peer, .events = POLLIN};
                idx[n++] = i;
            }
        if (!n || (atomic_load(&readers_stop) && !n))
            return NULL;
        if (poll(p, (nfds_t)n, 50) <= 0) {
            if (atomic_load(&readers_stop))
                return NULL;
            continue;
        }
        for (int k = 0; k < n; k++) {
            if (!p[k].revents)
                continue;
            race_stream *r = &streams[idx[k]];
            ssize_t got = read(r->peer, r->buf + r->len, sizeof(r->buf) - r->len);
            if (got <= 0) {
                r->eof = true;
                if (r->len) {
                    /* A record cut short: only an abort may do that. */
                    if (!atomic_load(&r->aborted))
                        atomic_fetch_add(&bad_why[3], 1);
                    atomic_fetch_add(atomic_load(&r->aborted) ? &cut_records : &bad_records, 1);
                    r->len = 0;
                }
                continue;
            }
            r->len += (size_t)got;
            parse(r);
        }
    }
}

static void race_round(px_executor ex, long ops_per_thread)
{
    px_loop *loop = tc_loop_new(ex, &(px_loop_opts){.sendq_bytes = 64 * 1024, .linger_ms = 2000});
    tc_runner run;
    tc_runner_start(&run, loop);
    memset(streams, 0, sizeof(streams));
    atomic_store(&bufs_made, 0);
    atomic_store(&bufs_freed, 0);
    atomic_store(&bad_records, 0);
    for (int i = 0; i < 4; i++)
        atomic_store(&bad_why[i], 0);
    atomic_store(&readers_stop, false);
    for (int i = 0; i < NSTREAMS; i++) {
        int sv[2];
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        int small = 8192;
        setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
        streams[i].peer = sv[1];
        cr_assert_eq(px_stream_open(loop, &streams[i].s, sv[0], &handlers, &streams[i], NULL), 0);
        px_stream_retain(streams[i].s);
    }
    pthread_t reader, th[NTHREADS];
    worker w[NTHREADS];
    cr_assert_eq(pthread_create(&reader, NULL, read_peers, NULL), 0);
    for (unsigned t = 0; t < NTHREADS; t++) {
        w[t] = (worker){.id = t, .ops = ops_per_thread, .rng = 2463534242u + t * 7919u};
        cr_assert_eq(pthread_create(&th[t], NULL, work, &w[t]), 0);
    }
    for (unsigned t = 0; t < NTHREADS; t++)
        pthread_join(th[t], NULL);
    /* Close what is still open; every stream must then close exactly once. */
    for (int i = 0; i < NSTREAMS; i++)
        px_stream_close(streams[i].s);
    for (int i = 0; i < NSTREAMS; i++) {
        atomic_int *c = &streams[i].closes;
        cr_assert(tc_wait_ge(c, 1, 20000), "stream %d never closed", i);
    }
    atomic_store(&readers_stop, true);
    pthread_join(reader, NULL);
    for (int i = 0; i < NSTREAMS; i++) {
        px_stream_release(streams[i].s);
        close(streams[i].peer);
    }
    tc_runner_finish(&run);
    for (int i = 0; i < NSTREAMS; i++)
        cr_expect_eq(atomic_load(&streams[i].closes), 1, "stream %d closed %d times", i,
                     atomic_load(&streams[i].closes));
    cr_expect_eq(atomic_load(&bufs_freed), atomic_load(&bufs_made), "%ld of %ld buffers freed",
                 atomic_load(&bufs_freed), atomic_load(&bufs_made));
    cr_expect_eq(atomic_load(&bad_records), 0,
                 "%ld bad records: %ld without the header, %ld out of order, %ld damaged, %ld cut "
                 "short by a graceful close", atomic_load(&bad_records), atomic_load(&bad_why[0]),
                 atomic_load(&bad_why[1]), atomic_load(&bad_why[2]), atomic_load(&bad_why[3]));
    tc_assert_no_failures();
}

static long race_ops(void)
{
    const char *e = getenv("ST_STRESS");
    long ops = e && strcmp(e, "long") == 0 ? 200000 : 4000;
    return ops;
}

TestSuite(races, .timeout = 600);

Test(races, send_close_abort_pause_from_threads_pool)
{
    for (int round = 0; round < 3; round++)
        race_round(PX_EXEC_POOL, race_ops());
}

Test(races, send_close_abort_pause_from_threads_thread)
{
    for (int round = 0; round < 3; round++)
        race_round(PX_EXEC_THREAD, race_ops());
}

Test(races, send_close_abort_pause_from_threads_inline)
{
    for (int round = 0; round < 3; round++)
        race_round(PX_EXEC_INLINE, race_ops());
}
