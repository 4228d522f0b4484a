/* Per-stream ordering and non-overlap of handlers under every executor,
 * back-pressure (a slow handler stops reading its own stream only), and no
 * handler running inside the px_stream_open() that caused it. */
#include "helpers.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- ordering ---- */

enum { ORD_MAX_STREAMS = 64, ORD_WRITERS = 4, LINE_LEN = 8 };

typedef struct ord_stream {
    int idx;
    int peer;
    atomic_bool in_handler;
    atomic_int overlaps;
    /* touched only by this stream's handlers, which never overlap */
    unsigned next_seq;
    char partial[LINE_LEN];
    size_t partial_len;
    unsigned bad;
    atomic_int done;
    atomic_int closes;
    atomic_int close_cause;
} ord_stream;

typedef struct ord_test {
    int nstreams;
    unsigned nlines;
    ord_stream st[ORD_MAX_STREAMS];
    atomic_int streams_done;
} ord_test;

static ord_test *ord;

/* Line seq of stream i: "SS:NNNN\n" with the stream index in front, so a
 * byte delivered to the wrong stream shows too. */
static void ord_line(char out[LINE_LEN], int stream, unsigned seq)
{
    char tmp[16];
    snprintf(tmp, sizeof tmp, "%02d:%04u\n", stream % 100, seq % 10000);
    memcpy(out, tmp, LINE_LEN);
}

static void ord_data(px_stream *s, const char *bytes, size_t len, void *user)
{
    (void)s;
    ord_stream *o = user;
    if (atomic_exchange(&o->in_handler, true))
        atomic_fetch_add(&o->overlaps, 1);
    TC_CHECK(len > 0);
    for (size_t i = 0; i < len; i++) {
        o->partial[o->partial_len++] = bytes[i];
        if (o->partial_len < LINE_LEN)
            continue;
        char want[LINE_LEN];
        ord_line(want, o->idx, o->next_seq);
        if (o->next_seq >= ord->nlines || memcmp(want, o->partial, LINE_LEN) != 0)
            o->bad++;
        o->next_seq++;
        o->partial_len = 0;
        if (o->next_seq == ord->nlines) {
            atomic_store(&o->done, 1);
            atomic_fetch_add(&ord->streams_done, 1);
        }
    }
    if ((o->next_seq & 7) == 0)
        sched_yield(); /* widen the window for an overlapping handler */
    atomic_store(&o->in_handler, false);
}

static void ord_close(px_stream *s, int cause, void *user)
{
    (void)s;
    ord_stream *o = user;
    if (atomic_exchange(&o->in_handler, true))
        atomic_fetch_add(&o->overlaps, 1);
    atomic_store(&o->close_cause, cause);
    atomic_fetch_add(&o->closes, 1);
    atomic_store(&o->in_handler, false);
}

static const px_stream_handlers ord_handlers = {.on_data = ord_data, .on_close = ord_close};

/* Each writer owns every ORD_WRITERS-th stream and writes their lines
 * round-robin in chunks of varying size, so lines split across reads. */
static void *ord_writer(void *arg)
{
    int w = (int)(intptr_t)arg;
    int mine[ORD_MAX_STREAMS];
    size_t off[ORD_MAX_STREAMS];
    int n = 0;
    for (int i = w; i < ord->nstreams; i += ORD_WRITERS) {
        mine[n] = i;
        off[n] = 0;
        n++;
    }
    size_t total = (size_t)ord->nlines * LINE_LEN;
    char *text = malloc(total * (size_t)(n ? n : 1));
    if (text == NULL) {
        tc_fail_at(__FILE__, __LINE__, "malloc");
        return NULL;
    }
    for (int j = 0; j < n; j++)
        for (unsigned q = 0; q < ord->nlines; q++)
            ord_line(text + (size_t)j * total + (size_t)q * LINE_LEN, mine[j], q);
    unsigned step = (unsigned)w * 7u + 1u;
    for (int remaining = n; remaining > 0;) {
        remaining = 0;
        for (int j = 0; j < n; j++) {
            if (off[j] == total)
                continue;
            step = step * 1103515245u + 12345u;
            size_t chunk = 1 + (step >> 16) % 300;
            if (chunk > total - off[j])
                chunk = total - off[j];
            if (tc_write_all(ord->st[mine[j]].peer, text + (size_t)j * total + off[j], chunk) != 0) {
                tc_fail_at(__FILE__, __LINE__, "client write failed");
                free(text);
                return NULL;
            }
            off[j] += chunk;
            if (off[j] < total)
                remaining++;
        }
    }
    free(text);
    return NULL;
}

static void run_ordering(px_executor ex, const px_loop_opts *opts, int nstreams, unsigned nlines)
{
    ord = calloc(1, sizeof *ord);
    cr_assert_not_null(ord);
    ord->nstreams = nstreams;
    ord->nlines = nlines;

    px_loop *loop = tc_loop_new(ex, opts);
    tc_runner r;
    tc_runner_start(&r, loop);
    for (int i = 0; i < nstreams; i++) {
        int sv[2];
        tc_socketpair(sv);
        ord_stream *o = &ord->st[i];
        o->idx = i;
        o->peer = sv[1];
        px_stream *s = NULL;
        cr_assert_eq(px_stream_open(loop, &s, sv[0], &ord_handlers, o, NULL), 0);
    }

    pthread_t w[ORD_WRITERS];
    for (int i = 0; i < ORD_WRITERS; i++)
        cr_assert_eq(pthread_create(&w[i], NULL, ord_writer, (void *)(intptr_t)i), 0);
    bool all = tc_wait_ge(&ord->streams_done, nstreams, 60000);
    for (int i = 0; i < ORD_WRITERS; i++)
        pthread_join(w[i], NULL);
    tc_assert_no_failures();
    cr_assert(all, "only %d of %d streams received all %u lines (%s)",
              atomic_load(&ord->streams_done), nstreams, nlines, px_executor_name(ex));

    for (int i = 0; i < nstreams; i++)
        close(ord->st[i].peer);
    for (int i = 0; i < nstreams; i++)
        cr_assert(tc_wait_ge(&ord->st[i].closes, 1, 10000), "stream %d: no on_close", i);
    tc_runner_finish(&r);

    for (int i = 0; i < nstreams; i++) {
        ord_stream *o = &ord->st[i];
        cr_assert_eq(atomic_load(&o->overlaps), 0, "stream %d: handlers overlapped", i);
        cr_assert_eq(o->bad, 0, "stream %d: %u lines out of order or corrupted", i, o->bad);
        cr_assert_eq(o->next_seq, nlines, "stream %d: %u lines, expected %u", i, o->next_seq, nlines);
        cr_assert_eq(o->partial_len, 0, "stream %d: trailing bytes", i);
        cr_assert_eq(atomic_load(&o->closes), 1);
        cr_assert_eq(atomic_load(&o->close_cause), 0);
    }
    free(ord);
}

Test(order, per_stream_pool, .timeout = 90)
{
    run_ordering(PX_EXEC_POOL, NULL, 64, 2000);
}

Test(order, per_stream_inline, .timeout = 90)
{
    run_ordering(PX_EXEC_INLINE, NULL, 64, 2000);
}

/* A thread per event: fewer messages keep it to a few seconds. */
Test(order, per_stream_thread, .timeout = 90)
{
    run_ordering(PX_EXEC_THREAD, NULL, 16, 300);
}

/* Several pool threads but few streams: consecutive events of one stream
 * are likely to be handed to different workers. */
Test(order, per_stream_pool_few_streams, .timeout = 90)
{
    run_ordering(PX_EXEC_POOL, &(px_loop_opts){.threads = 8}, 4, 5000);
}

/* ---- back-pressure ---- */

typedef struct bp_state {
    tc_gate gate;
    atomic_int slow_entered;
    atomic_int slow_calls;
    atomic_size_t slow_bytes;
    atomic_bool slow_in;
    atomic_int slow_overlap;
    atomic_bool gate_timeout;
    tc_sink fast;
    tc_sink slow_sink;
} bp_state;

static bp_state *bp;

static void slow_data(px_stream *s, const char *bytes, size_t len, void *user)
{
    (void)s;
    (void)bytes;
    (void)user;
    if (atomic_exchange(&bp->slow_in, true))
        atomic_fetch_add(&bp->slow_overlap, 1);
    atomic_fetch_add(&bp->slow_bytes, len);
    if (atomic_fetch_add(&bp->slow_calls, 1) == 0) {
        atomic_store(&bp->slow_entered, 1);
        if (!tc_gate_wait(&bp->gate, 20000))
            atomic_store(&bp->gate_timeout, true);
    }
    atomic_store(&bp->slow_in, false);
}

static void slow_close(px_stream *s, int cause, void *user)
{
    (void)s;
    (void)user;
    atomic_store(&bp->slow_sink.cause, cause);
    atomic_fetch_add(&bp->slow_sink.closes, 1);
}

static const px_stream_handlers slow_handlers = {.on_data = slow_data, .on_close = slow_close};

ParameterizedTestParameters(order, slow_handler_blocks_only_its_stream)
{
    /* inline handlers must never block, so only pool and thread */
    static px_executor p[] = {PX_EXEC_POOL, PX_EXEC_THREAD};
    return cr_make_param_array(px_executor, p, 2);
}

ParameterizedTest(px_executor *ex, order, slow_handler_blocks_only_its_stream, .timeout = 60)
{
    bp = calloc(1, sizeof *bp);
    cr_assert_not_null(bp);
    tc_gate_init(&bp->gate);
    tc_sink_init(&bp->fast);
    tc_sink_init(&bp->slow_sink);

    px_loop *loop = tc_loop_new(*ex, &(px_loop_opts){.threads = 4});
    tc_runner r;
    tc_runner_start(&r, loop);

    int a[2], b[2];
    tc_socketpair(a);
    tc_socketpair(b);
    px_stream *sa = NULL, *sb = NULL;
    cr_assert_eq(px_stream_open(loop, &sa, a[0], &slow_handlers, NULL, NULL), 0);
    cr_assert_eq(px_stream_open(loop, &sb, b[0], &tc_sink_handlers, &bp->fast, NULL), 0);

    cr_assert_eq(tc_write_all(a[1], "x", 1), 0);
    cr_assert(tc_wait_ge(&bp->slow_entered, 1, 10000), "slow handler never entered");

    /* While A's handler is blocked, A must not be read: its peer's writes
     * fill the socket and then fail with EAGAIN. */
    int fl = fcntl(a[1], F_GETFL);
    cr_assert_eq(fcntl(a[1], F_SETFL, fl | O_NONBLOCK), 0);
    static char chunk[4096];
    size_t written = 1;
    bool full = false;
    for (int i = 0; i < 16 * 1024; i++) { /* at most 64 MiB */
        ssize_t w = send(a[1], chunk, sizeof chunk, MSG_NOSIGNAL);
        if (w < 0) {
            cr_assert(errno == EAGAIN || errno == EWOULDBLOCK, "send: %s", strerror(errno));
            full = true;
            break;
        }
        written += (size_t)w;
    }
    cr_assert(full, "a stream whose handler is blocked kept being read (%zu bytes)", written);
    cr_assert_eq(fcntl(a[1], F_SETFL, fl), 0);

    /* Meanwhile B is served. */
    size_t fast_total = 0;
    for (int i = 0; i < 20; i++) {
        char msg[32];
        int len = snprintf(msg, sizeof msg, "message %d\n", i);
        cr_assert_eq(tc_write_all(b[1], msg, (size_t)len), 0);
        fast_total += (size_t)len;
        cr_assert(tc_wait_ge_size(&bp->fast.bytes, fast_total, 10000),
                  "other stream starved while one handler blocks (%zu of %zu bytes)",
                  atomic_load(&bp->fast.bytes), fast_total);
    }
    cr_assert_eq(atomic_load(&bp->slow_calls), 1, "slow stream re-entered while blocked");

    tc_gate_open(&bp->gate);
    cr_assert(tc_wait_ge_size(&bp->slow_bytes, written, 20000),
              "slow stream got %zu of %zu bytes after release", atomic_load(&bp->slow_bytes), written);
    cr_assert_eq(atomic_load(&bp->slow_overlap), 0);
    cr_assert(!atomic_load(&bp->gate_timeout));

    close(a[1]);
    close(b[1]);
    cr_assert(tc_wait_ge(&bp->slow_sink.closes, 1, 10000));
    cr_assert(tc_wait_ge(&bp->fast.closes, 1, 10000));
    tc_runner_finish(&r);
    tc_gate_destroy(&bp->gate);
    free(bp);
    tc_assert_no_failures();
}

/* ---- no handler inside px_stream_open ---- */

/* Regression (review of src/proactor): handlers ran inside px_stream_open() when it was
 * called on the loop thread (a post, a timer, an inline handler) with the inline
 * executor; for a descriptor that cannot be polled, on_close ran and the stream was
 * freed before px_stream_open() returned 0 with *out pointing at it. */

static atomic_bool inside_open;
static atomic_int called_inside;
static atomic_int handlers_run;

static void note_handler(void)
{
    atomic_fetch_add(&handlers_run, 1);
    if (atomic_load(&inside_open))
        atomic_fetch_add(&called_inside, 1);
}

static void note_open(px_stream *s, void *user)
{
    (void)s;
    (void)user;
    note_handler();
}

static void note_close(px_stream *s, int cause, void *user)
{
    (void)s;
    (void)cause;
    (void)user;
    note_handler();
}

typedef struct open_arg {
    int fd;
    px_loop *loop;
    int rc;
    atomic_bool done;
} open_arg;

static void open_on_loop(void *arg)
{
    open_arg *a = arg;
    px_stream_handlers h = {.on_open = note_open, .on_data = tc_data_noop,
                            .on_close = note_close};
    px_stream *s = NULL;
    atomic_store(&inside_open, true);
    a->rc = px_stream_open(a->loop, &s, a->fd, &h, NULL, NULL);
    atomic_store(&inside_open, false);
    atomic_store(&a->done, true);
}

/* Opens a stream on fd from a post on r's running loop, and waits until the open has
 * returned 0 and a handler has run.  Returns how many handlers ran inside the open. */
static int open_from_loop_thread(tc_runner *r, int fd)
{
    atomic_store(&called_inside, 0);
    atomic_store(&handlers_run, 0);
    open_arg a = {.fd = fd, .loop = r->loop};
    cr_assert_eq(px_loop_post(r->loop, open_on_loop, &a), 0);
    cr_assert(tc_wait_flag(&a.done, 5000));
    cr_assert_eq(a.rc, 0);
    cr_assert(tc_wait_ge(&handlers_run, 1, 5000));
    return atomic_load(&called_inside);
}

Test(order, no_handler_inside_stream_open, .timeout = 20)
{
    tc_runner r;
    int sv[2];
    tc_start_pair(PX_EXEC_INLINE, &r, sv);
    cr_expect_eq(open_from_loop_thread(&r, sv[0]), 0,
                 "on_open ran inside px_stream_open (header: handlers are never called "
                 "from inside the call that caused them)");
    close(sv[1]);
    tc_runner_finish(&r);
}

Test(order, unpollable_fd_on_loop_thread, .timeout = 20)
{
    px_loop *loop = tc_loop_new(PX_EXEC_INLINE, NULL);
    tc_runner r;
    tc_runner_start(&r, loop);
    char path[] = "/tmp/px_review_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    cr_expect_eq(open_from_loop_thread(&r, fd), 0,
                 "on_close ran (and the stream was freed) inside px_stream_open, which "
                 "then returned 0 with a dangling *out");
    tc_runner_finish(&r);
}
