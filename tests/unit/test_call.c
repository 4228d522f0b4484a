/*
 * px_stream_call and px_stream_resume.  A call runs exactly once, with the
 * stream's user pointer, in the order calls were made, never at the same time
 * as one of the stream's handlers, after on_open and before on_close; once
 * on_close is under way calls are refused with -EPIPE.  Bytes that arrive
 * while a call runs are delivered after it, intact.  px_stream_resume ends a
 * pause at once, kept bytes first.
 */
#include "helpers.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { CS_MAX_THREADS = 8 };

/* One call: what fn checks, and how often it ran. */
typedef struct cs_item {
    void *owner;    /* the user pointer fn must be given */
    int thread;     /* caller index, for the per-caller order check */
    int seq;        /* position among this caller's calls */
    int hook;       /* CS_HOOK_* */
    tc_gate *gate;  /* CS_HOOK_BLOCK: waits for it */
    atomic_int runs;
} cs_item;

enum {
    CS_HOOK_NONE = 0,
    CS_HOOK_RESUME,   /* px_stream_resume from inside the call */
    CS_HOOK_BLOCK,    /* wait on the item's gate */
};

/* What on_data does beyond checking and counting. */
enum {
    CS_DATA_PLAIN = 0,
    CS_DATA_KEEP_PAUSE_OFTEN, /* every third chunk: use half, keep the rest, pause 60 s */
    CS_DATA_CALLS_THEN_CLOSE, /* first chunk: make calls, then px_stream_close */
};

#define CS_LONG_PAUSE_MS 60000

typedef struct cs_state {
    unsigned seed;
    int data_mode;
    int close_calls;           /* CS_DATA_CALLS_THEN_CLOSE: how many */
    cs_item *close_items;

    /* handler overlap detection */
    atomic_bool in_open, in_data, in_call;
    atomic_int overlaps;
    atomic_int after_close;    /* handlers or calls that ran after on_close began */

    atomic_int opens, open_done, closes, cause;
    atomic_int data_calls;
    atomic_int data_before_open_done;
    atomic_int data_during_block; /* on_data while a blocking call had not returned */
    atomic_bool pause_next;    /* the next chunk: use half, keep the rest, pause 60 s */
    atomic_size_t got;         /* bytes taken so far, each checked against the pattern */
    atomic_size_t bad_at;      /* 1 + first bad offset, or 0 */
    atomic_int pauses;         /* pauses set by on_data */
    atomic_int calls_run;
    atomic_int calls_at_close; /* calls_run seen by on_close */
    atomic_int epipe_in_close; /* px_stream_call from on_close returned -EPIPE */
    atomic_size_t got_at_close;
    atomic_int order_bad;
    int last_seq[CS_MAX_THREADS]; /* touched by calls only (they never overlap) */

    /* CS_HOOK_BLOCK */
    atomic_int blocks_started, blocks_returned;
    atomic_int gate_timeouts;
} cs_state;

static void cs_init(cs_state *c, unsigned seed)
{
    memset(c, 0, sizeof *c);
    c->seed = seed;
    for (int i = 0; i < CS_MAX_THREADS; i++)
        c->last_seq[i] = -1;
}

static void cs_enter(cs_state *c, atomic_bool *mine)
{
    if (atomic_exchange(mine, true))
        atomic_fetch_add(&c->overlaps, 1);
    if ((mine != &c->in_open && atomic_load(&c->in_open)) ||
        (mine != &c->in_data && atomic_load(&c->in_data)) ||
        (mine != &c->in_call && atomic_load(&c->in_call)))
        atomic_fetch_add(&c->overlaps, 1);
    if (atomic_load(&c->closes) != 0)
        atomic_fetch_add(&c->after_close, 1);
}

static void cs_call(px_stream *s, void *arg, void *user);

static void cs_open(px_stream *s, void *user)
{
    (void)s;
    cs_state *c = user;
    cs_enter(c, &c->in_open);
    atomic_fetch_add(&c->opens, 1);
    atomic_store(&c->open_done, 1);
    atomic_store(&c->in_open, false);
}

static void cs_data(px_stream *s, const char *bytes, size_t len, void *user)
{
    cs_state *c = user;
    cs_enter(c, &c->in_data);
    TC_CHECK(len > 0);
    if (!atomic_load(&c->open_done))
        atomic_fetch_add(&c->data_before_open_done, 1);
    if (atomic_load(&c->blocks_started) != atomic_load(&c->blocks_returned))
        atomic_fetch_add(&c->data_during_block, 1);
    int n = atomic_fetch_add(&c->data_calls, 1) + 1;
    size_t take = len;
    bool keep = (c->data_mode == CS_DATA_KEEP_PAUSE_OFTEN && n % 3 == 1) ||
                atomic_exchange(&c->pause_next, false);
    keep = keep && len > 1;
    if (keep) {
        take = len / 2;
        TC_CHECK(px_stream_keep(s, len - take) == 0);
        px_stream_pause(s, CS_LONG_PAUSE_MS);
    }
    size_t at = atomic_load(&c->got);
    size_t bad = tc_check_fill(bytes, take, c->seed, at);
    if (bad != take) {
        size_t zero = 0;
        atomic_compare_exchange_strong(&c->bad_at, &zero, at + bad + 1);
    }
    atomic_store(&c->got, at + take);
    if (keep)
        atomic_fetch_add(&c->pauses, 1); /* after got: a waiter on pauses sees it */
    if (c->data_mode == CS_DATA_CALLS_THEN_CLOSE && n == 1) {
        for (int i = 0; i < c->close_calls; i++)
            TC_CHECK(px_stream_call(s, cs_call, &c->close_items[i]) == 0);
        px_stream_close(s);
    }
    atomic_store(&c->in_data, false);
}

static void cs_refused(px_stream *s, void *arg, void *user)
{
    (void)s;
    (void)arg;
    cs_state *c = user;
    atomic_fetch_add(&c->after_close, 1); /* must never run */
}

static void cs_close(px_stream *s, int cause, void *user)
{
    cs_state *c = user;
    /* in_data doubles as "a handler runs" here. */
    if (atomic_exchange(&c->in_data, true) || atomic_load(&c->in_call) ||
        atomic_load(&c->in_open))
        atomic_fetch_add(&c->overlaps, 1);
    atomic_store(&c->calls_at_close, atomic_load(&c->calls_run));
    atomic_store(&c->got_at_close, atomic_load(&c->got));
    if (px_stream_call(s, cs_refused, NULL) == -EPIPE)
        atomic_fetch_add(&c->epipe_in_close, 1);
    atomic_store(&c->cause, cause);
    atomic_store(&c->in_data, false);
    atomic_fetch_add(&c->closes, 1);
}

static void cs_call(px_stream *s, void *arg, void *user)
{
    cs_state *c = user;
    cs_item *it = arg;
    cs_enter(c, &c->in_call);
    TC_CHECK(it != NULL);
    TC_CHECK(user == it->owner);
    TC_CHECK(px_stream_user(s) == it->owner);
    atomic_fetch_add(&it->runs, 1);
    if (it->thread >= 0 && it->thread < CS_MAX_THREADS) {
        if (it->seq != c->last_seq[it->thread] + 1)
            atomic_fetch_add(&c->order_bad, 1);
        c->last_seq[it->thread] = it->seq;
    }
    if (it->hook == CS_HOOK_RESUME) {
        px_stream_resume(s);
    } else if (it->hook == CS_HOOK_BLOCK) {
        atomic_fetch_add(&c->blocks_started, 1);
        if (!tc_gate_wait(it->gate, 10000))
            atomic_fetch_add(&c->gate_timeouts, 1);
        atomic_fetch_add(&c->blocks_returned, 1);
    }
    atomic_fetch_add(&c->calls_run, 1);
    atomic_store(&c->in_call, false);
}

static const px_stream_handlers cs_handlers = {
    .on_open = cs_open, .on_data = cs_data, .on_close = cs_close};

/* A cs_state on the heap (free it), for the tests that hand it to other threads. */
static cs_state *cs_new(unsigned seed)
{
    cs_state *c = calloc(1, sizeof *c);
    cr_assert_not_null(c);
    cs_init(c, seed);
    return c;
}

/* A stream on fd with the cs handlers and c as its user (asserts it opened). */
static px_stream *cs_stream(px_loop *loop, int fd, cs_state *c)
{
    px_stream *s = NULL;
    cr_assert_eq(px_stream_open(loop, &s, fd, &cs_handlers, c, NULL), 0);
    return s;
}

static cs_item *cs_items(cs_state *c, int n, int thread)
{
    cs_item *it = calloc((size_t)n, sizeof *it);
    cr_assert_not_null(it);
    for (int i = 0; i < n; i++) {
        it[i].owner = c;
        it[i].thread = thread;
        it[i].seq = i;
        atomic_init(&it[i].runs, 0);
    }
    return it;
}

/* Every handler and call kept to its place. */
static void cs_assert_clean(cs_state *c)
{
    cr_assert_eq(atomic_load(&c->overlaps), 0, "%d handler/call overlaps",
                 atomic_load(&c->overlaps));
    cr_assert_eq(atomic_load(&c->after_close), 0, "%d handlers/calls ran after on_close",
                 atomic_load(&c->after_close));
    cr_assert_eq(atomic_load(&c->order_bad), 0, "%d calls ran out of order",
                 atomic_load(&c->order_bad));
    size_t bad = atomic_load(&c->bad_at);
    cr_assert_eq(bad, 0, "byte at offset %zu lost, altered or reordered", bad - 1);
    tc_assert_no_failures();
}

/* Writes the pattern from offset off, n bytes. */
static void cs_write(int fd, unsigned seed, size_t off, size_t n)
{
    char *buf = malloc(n);
    cr_assert_not_null(buf);
    tc_fill(buf, n, seed, off);
    cr_assert_eq(tc_write_all(fd, buf, n), 0);
    free(buf);
}

/* A bound on how long a blocking write to the peer may take, so that a stream
 * that stopped reading fails the test instead of hanging it. */
static void cs_send_timeout(int fd, unsigned ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (long)(ms % 1000) * 1000};
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
}

/* The end of a test seen from the peer: closes it, waits for on_close, then stops and
 * destroys the loop. */
static void cs_end(cs_state *c, int peer, tc_runner *r)
{
    close(peer);
    cr_assert(tc_wait_ge(&c->closes, 1, 10000));
    tc_runner_finish(r);
}

static void sleep_us(long us)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = us * 1000};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------------ */
/* 1. Calls from other threads while data flows: exactly once, with the user
 *    pointer, never alongside on_data, each caller's calls in order. */

enum { FLOW_CALLERS = 4, FLOW_PER = 500, FLOW_CHUNK = 2048 };

typedef struct flow {
    cs_state *c;
    px_stream *s;
    int peer;
    cs_item *items[FLOW_CALLERS];
    atomic_bool stop;
    atomic_size_t written;
    atomic_int write_err;
    atomic_int call_err;
} flow;

typedef struct flow_caller {
    flow *f;
    int t;
} flow_caller;

static void *flow_writer(void *arg)
{
    flow *f = arg;
    char buf[FLOW_CHUNK];
    size_t off = 0;
    while (!atomic_load(&f->stop)) {
        tc_fill(buf, sizeof buf, f->c->seed, off);
        int rc = tc_write_all(f->peer, buf, sizeof buf);
        if (rc != 0) {
            atomic_store(&f->write_err, rc);
            break;
        }
        off += sizeof buf;
        atomic_store(&f->written, off);
        sleep_us(200); /* pacing: a steady stream of chunks, not one flood */
    }
    return NULL;
}

static void *flow_call(void *arg)
{
    flow_caller *fc = arg;
    flow *f = fc->f;
    for (int i = 0; i < FLOW_PER; i++) {
        int rc = px_stream_call(f->s, cs_call, &f->items[fc->t][i]);
        if (rc != 0)
            atomic_fetch_add(&f->call_err, 1);
        if ((i & 7) == 7)
            sleep_us(100); /* pacing: spread the calls over the data */
    }
    return NULL;
}

TC_EXEC_PARAMS(call, from_threads_while_data_flows)

ParameterizedTest(px_executor *ex, call, from_threads_while_data_flows, .timeout = 90)
{
    tc_runner r;
    int sv[2];
    px_loop *loop = tc_start_pair(*ex, &r, sv);
    cs_send_timeout(sv[1], 20000);
    cs_state *c = cs_new(11);
    flow f = {.c = c, .peer = sv[1]};
    for (int t = 0; t < FLOW_CALLERS; t++)
        f.items[t] = cs_items(c, FLOW_PER, t);
    f.s = cs_stream(loop, sv[0], c);
    px_stream_retain(f.s);

    pthread_t w, th[FLOW_CALLERS];
    flow_caller fc[FLOW_CALLERS];
    cr_assert_eq(pthread_create(&w, NULL, flow_writer, &f), 0);
    cr_assert(tc_wait_ge_size(&c->got, 1, 5000), "no data arrived");
    int data_at_start = atomic_load(&c->data_calls);
    for (int t = 0; t < FLOW_CALLERS; t++) {
        fc[t] = (flow_caller){.f = &f, .t = t};
        cr_assert_eq(pthread_create(&th[t], NULL, flow_call, &fc[t]), 0);
    }
    for (int t = 0; t < FLOW_CALLERS; t++)
        pthread_join(th[t], NULL);
    bool all = tc_wait_ge(&c->calls_run, FLOW_CALLERS * FLOW_PER, 30000);
    int data_at_end = atomic_load(&c->data_calls);
    atomic_store(&f.stop, true);
    pthread_join(w, NULL);
    cr_assert_eq(atomic_load(&f.call_err), 0, "px_stream_call failed");
    cr_assert(all, "%d of %d calls ran", atomic_load(&c->calls_run), FLOW_CALLERS * FLOW_PER);
    cr_assert_eq(atomic_load(&f.write_err), 0, "writing to the stream failed: %s",
                 strerror(-atomic_load(&f.write_err)));
    size_t written = atomic_load(&f.written);
    cr_assert(tc_wait_ge_size(&c->got, written, 10000), "%zu of %zu bytes arrived",
              atomic_load(&c->got), written);

    px_stream_close(f.s);
    cr_assert_eq(tc_read_eof(sv[1], 10000, true), 0);
    cr_assert(tc_wait_ge(&c->closes, 1, 10000));
    px_stream_release(f.s);
    close(sv[1]);
    tc_runner_finish(&r);

    cr_assert_eq(atomic_load(&c->calls_run), FLOW_CALLERS * FLOW_PER);
    for (int t = 0; t < FLOW_CALLERS; t++) {
        cr_assert_eq(c->last_seq[t], FLOW_PER - 1);
        for (int i = 0; i < FLOW_PER; i++)
            cr_assert_eq(atomic_load(&f.items[t][i].runs), 1, "call %d/%d ran %d times", t, i,
                         atomic_load(&f.items[t][i].runs));
        free(f.items[t]);
    }
    cr_assert_eq(atomic_load(&c->opens), 1);
    cr_assert_eq(atomic_load(&c->closes), 1);
    cs_assert_clean(c);
    free(c);
    /* Last, as it fails alone when queued calls starve reading. */
    cr_assert_gt(data_at_end, data_at_start, "no on_data while the calls ran");
}

/* ------------------------------------------------------------------------ */
/* 2. 1000 calls from one thread run in the order made. */

enum { ORDER_N = 1000 };

TC_EXEC_PARAMS(call, run_in_order_made)

ParameterizedTest(px_executor *ex, call, run_in_order_made, .timeout = 60)
{
    tc_runner r;
    int sv[2];
    px_loop *loop = tc_start_pair(*ex, &r, sv);
    cs_state c;
    cs_init(&c, 2);
    cs_item *items = cs_items(&c, ORDER_N, 0);
    px_stream *s = cs_stream(loop, sv[0], &c);
    for (int i = 0; i < ORDER_N; i++)
        cr_assert_eq(px_stream_call(s, cs_call, &items[i]), 0);
    cr_assert(tc_wait_ge(&c.calls_run, ORDER_N, 30000), "%d of %d calls ran",
              atomic_load(&c.calls_run), ORDER_N);
    cr_assert_eq(c.last_seq[0], ORDER_N - 1);
    for (int i = 0; i < ORDER_N; i++)
        cr_assert_eq(atomic_load(&items[i].runs), 1, "call %d ran %d times", i,
                     atomic_load(&items[i].runs));
    cr_assert_eq(atomic_load(&c.opens), 1, "calls made before on_open ran without it");

    cs_end(&c, sv[1], &r);
    cr_assert_eq(atomic_load(&c.calls_run), ORDER_N);
    cs_assert_clean(&c);
    free(items);
}

Test(call, bad_arguments, .timeout = 20)
{
    tc_runner r;
    int sv[2];
    px_loop *loop = tc_start_pair(PX_EXEC_POOL, &r, sv);
    cs_state c;
    cs_init(&c, 3);
    px_stream *s = cs_stream(loop, sv[0], &c);
    cr_assert_eq(px_stream_call(NULL, cs_call, NULL), -EINVAL);
    cr_assert_eq(px_stream_call(s, NULL, NULL), -EINVAL);
    cs_end(&c, sv[1], &r);
    cr_assert_eq(atomic_load(&c.calls_run), 0);
    cs_assert_clean(&c);
}

/* ------------------------------------------------------------------------ */
/* 3. Calls made before a close run before on_close; afterwards calls are
 *    refused with -EPIPE and never run. */

typedef enum close_kind {
    CK_CLOSE,          /* px_stream_close from the test thread */
    CK_ABORT,          /* px_stream_abort from the test thread */
    CK_PEER_EOF,       /* the peer closes its end */
    CK_FROM_HANDLER,   /* on_data makes the calls, then px_stream_close */
} close_kind;

typedef struct close_param {
    px_executor ex;
    close_kind kind;
} close_param;

static const char *close_kind_name(close_kind k)
{
    static const char *names[] = {"close", "abort", "peer_eof", "from_handler"};
    return names[k];
}

ParameterizedTestParameters(call, before_close_then_epipe)
{
    static close_param p[] = {
        {PX_EXEC_POOL, CK_CLOSE},         {PX_EXEC_THREAD, CK_CLOSE},
        {PX_EXEC_INLINE, CK_CLOSE},       {PX_EXEC_POOL, CK_ABORT},
        {PX_EXEC_THREAD, CK_ABORT},       {PX_EXEC_INLINE, CK_ABORT},
        {PX_EXEC_POOL, CK_PEER_EOF},      {PX_EXEC_THREAD, CK_PEER_EOF},
        {PX_EXEC_INLINE, CK_PEER_EOF},    {PX_EXEC_POOL, CK_FROM_HANDLER},
        {PX_EXEC_THREAD, CK_FROM_HANDLER}, {PX_EXEC_INLINE, CK_FROM_HANDLER},
    };
    return cr_make_param_array(close_param, p, sizeof p / sizeof p[0]);
}

enum { CLOSE_N = 200 };

static void noop_post(void *arg) { (void)arg; }

ParameterizedTest(close_param *p, call, before_close_then_epipe, .timeout = 30)
{
    tc_runner r;
    int sv[2];
    px_loop *loop = tc_start_pair(p->ex, &r, sv);
    cs_state c;
    cs_init(&c, 4);
    cs_item *items = cs_items(&c, CLOSE_N, 0);
    if (p->kind == CK_FROM_HANDLER) {
        c.data_mode = CS_DATA_CALLS_THEN_CLOSE;
        c.close_calls = CLOSE_N;
        c.close_items = items;
    }
    px_stream *s = cs_stream(loop, sv[0], &c);
    px_stream_retain(s);
    cr_assert(tc_wait_ge(&c.opens, 1, 5000));

    switch (p->kind) {
    case CK_FROM_HANDLER:
        cs_write(sv[1], c.seed, 0, 16);
        break;
    default:
        for (int i = 0; i < CLOSE_N; i++)
            cr_assert_eq(px_stream_call(s, cs_call, &items[i]), 0);
        if (p->kind == CK_CLOSE)
            px_stream_close(s);
        else if (p->kind == CK_ABORT)
            px_stream_abort(s);
        else
            close(sv[1]);
        break;
    }
    cr_assert(tc_wait_ge(&c.closes, 1, 10000), "on_close did not run (%s)",
              close_kind_name(p->kind));
    int expect_cause = p->kind == CK_ABORT ? -ECONNABORTED : 0;
    cr_assert_eq(atomic_load(&c.cause), expect_cause, "%s: cause %d", close_kind_name(p->kind),
                 atomic_load(&c.cause));
    cr_assert_eq(atomic_load(&c.calls_at_close), CLOSE_N,
                 "%s: %d of %d calls made before the close ran before on_close",
                 close_kind_name(p->kind), atomic_load(&c.calls_at_close), CLOSE_N);
    cr_assert_eq(atomic_load(&c.epipe_in_close), 1, "px_stream_call inside on_close was accepted");

    /* After on_close: refused, and nothing runs. */
    cs_item late = {.owner = &c, .thread = -1};
    for (int i = 0; i < 10; i++)
        cr_assert_eq(px_stream_call(s, cs_call, &late), -EPIPE);
    tc_run_on_loop(loop, noop_post, NULL); /* a full pass of the loop */
    tc_sleep_ms(50);                         /* and time for an executor thread */
    cr_assert_eq(atomic_load(&late.runs), 0, "a refused call ran");
    px_stream_release(s);
    if (p->kind != CK_PEER_EOF)
        close(sv[1]);
    tc_runner_finish(&r);

    cr_assert_eq(atomic_load(&c.calls_run), CLOSE_N);
    cr_assert_eq(atomic_load(&c.closes), 1);
    cr_assert_eq(c.last_seq[0], CLOSE_N - 1);
    for (int i = 0; i < CLOSE_N; i++)
        cr_assert_eq(atomic_load(&items[i].runs), 1);
    cs_assert_clean(&c);
    free(items);
}

/* Callers racing a close: every accepted call runs exactly once, before
 * on_close; once one is refused, all later ones are. */

/* Calls stay accepted until on_close is dispatched, so callers that never
 * stop would hold the close off: each caller makes at most RACE_AFTER calls
 * once the close has been asked for. */
enum { RACE_CALLERS = 4, RACE_MAX = 1000, RACE_AFTER = 50 };

typedef struct race {
    cs_state *c;
    px_stream *s;
    cs_item *items[RACE_CALLERS];
    atomic_int accepted[RACE_CALLERS];
    atomic_int accepted_after_refusal;
    atomic_int other_err;
    atomic_bool closing;
} race;

typedef struct race_caller {
    race *rc;
    int t;
} race_caller;

static void *race_call(void *arg)
{
    race_caller *rcl = arg;
    race *x = rcl->rc;
    bool refused = false;
    int after_close = 0;
    uint64_t end = tc_now_ms() + 15000;
    for (int i = 0; i < 4 * RACE_MAX && tc_now_ms() < end; i++) {
        if (atomic_load(&x->closing) && ++after_close > RACE_AFTER)
            break;
        int rc = px_stream_call(x->s, cs_call, &x->items[rcl->t][atomic_load(&x->accepted[rcl->t])]);
        if (rc == 0) {
            if (refused)
                atomic_fetch_add(&x->accepted_after_refusal, 1);
            atomic_fetch_add(&x->accepted[rcl->t], 1);
            if (atomic_load(&x->accepted[rcl->t]) == RACE_MAX)
                break;
        } else if (rc == -EPIPE) {
            if (refused && i % 64 == 0)
                break; /* refused for a while: enough */
            refused = true;
        } else {
            atomic_fetch_add(&x->other_err, 1);
            break;
        }
        if ((i & 3) == 3)
            sleep_us(100); /* pacing: still calling when the close comes */
    }
    return NULL;
}

TC_EXEC_PARAMS(call, race_with_close)

ParameterizedTest(px_executor *ex, call, race_with_close, .timeout = 60)
{
    tc_runner r;
    int sv[2];
    px_loop *loop = tc_start_pair(*ex, &r, sv);
    cs_state *c = cs_new(5);
    race x = {.c = c};
    for (int t = 0; t < RACE_CALLERS; t++) {
        x.items[t] = cs_items(c, RACE_MAX, t);
        atomic_init(&x.accepted[t], 0);
    }
    x.s = cs_stream(loop, sv[0], c);
    px_stream_retain(x.s);
    pthread_t th[RACE_CALLERS];
    race_caller rcl[RACE_CALLERS];
    for (int t = 0; t < RACE_CALLERS; t++) {
        rcl[t] = (race_caller){.rc = &x, .t = t};
        cr_assert_eq(pthread_create(&th[t], NULL, race_call, &rcl[t]), 0);
    }
    cr_assert(tc_wait_ge(&c->calls_run, 100, 10000), "calls are not running");
    px_stream_close(x.s);
    atomic_store(&x.closing, true);
    for (int t = 0; t < RACE_CALLERS; t++)
        pthread_join(th[t], NULL);
    cr_assert(tc_wait_ge(&c->closes, 1, 20000), "on_close did not run (%d calls ran)",
              atomic_load(&c->calls_run));
    int accepted = 0;
    for (int t = 0; t < RACE_CALLERS; t++)
        accepted += atomic_load(&x.accepted[t]);
    cr_assert_eq(atomic_load(&x.other_err), 0);
    cr_assert_eq(atomic_load(&x.accepted_after_refusal), 0, "a call was accepted after a refusal");
    cr_assert_eq(atomic_load(&c->calls_at_close), accepted,
                 "%d calls accepted, %d ran before on_close", accepted,
                 atomic_load(&c->calls_at_close));
    px_stream_release(x.s);
    close(sv[1]);
    tc_runner_finish(&r);
    cr_assert_eq(atomic_load(&c->calls_run), accepted);
    for (int t = 0; t < RACE_CALLERS; t++) {
        int n = atomic_load(&x.accepted[t]);
        cr_assert_eq(c->last_seq[t], n - 1);
        for (int i = 0; i < RACE_MAX; i++)
            cr_assert_eq(atomic_load(&x.items[t][i].runs), i < n ? 1 : 0, "call %d/%d ran %d times",
                         t, i, atomic_load(&x.items[t][i].runs));
        free(x.items[t]);
    }
    cs_assert_clean(c);
    free(c);
}

/* Calls still queued when the loop is destroyed run before on_close
 * (-ECANCELED), exactly once. */
TC_EXEC_PARAMS(call, pending_at_destroy)

ParameterizedTest(px_executor *ex, call, pending_at_destroy, .timeout = 30)
{
    tc_runner r;
    int sv[2];
    px_loop *loop = tc_start_pair(*ex, &r, sv);
    cs_state c;
    cs_init(&c, 6);
    cs_item *items = cs_items(&c, 50, 0);
    px_stream *s = cs_stream(loop, sv[0], &c);
    cr_assert(tc_wait_ge(&c.opens, 1, 5000));
    tc_runner_stop(&r);
    for (int i = 0; i < 50; i++)
        cr_assert_eq(px_stream_call(s, cs_call, &items[i]), 0);
    px_loop_destroy(loop);
    cr_assert_eq(atomic_load(&c.closes), 1);
    cr_assert_eq(atomic_load(&c.cause), -ECANCELED);
    cr_assert_eq(atomic_load(&c.calls_at_close), 50, "%d of 50 pending calls ran before on_close",
                 atomic_load(&c.calls_at_close));
    cr_assert_eq(atomic_load(&c.calls_run), 50);
    for (int i = 0; i < 50; i++)
        cr_assert_eq(atomic_load(&items[i].runs), 1);
    close(sv[1]);
    cs_assert_clean(&c);
    free(items);
}

/* ------------------------------------------------------------------------ */
/* 4. A call made from inside on_open runs after on_open has returned. */

static cs_item open_item;

static void open_then_call(px_stream *s, void *user)
{
    cs_state *c = user;
    cs_enter(c, &c->in_open);
    atomic_fetch_add(&c->opens, 1);
    TC_CHECK(px_stream_call(s, cs_call, &open_item) == 0);
    /* Widen the window in which a call run too early would overlap. */
    tc_sleep_ms(20);
    TC_CHECK(atomic_load(&c->calls_run) == 0);
    atomic_store(&c->open_done, 1);
    atomic_store(&c->in_open, false);
}

static void run_call_from_open(px_executor ex, bool data_waiting)
{
    tc_runner r;
    int sv[2];
    px_loop *loop = tc_start_pair(ex, &r, sv);
    cs_state c;
    cs_init(&c, 7);
    open_item = (cs_item){.owner = &c, .thread = 0};
    px_stream_handlers h = cs_handlers;
    h.on_open = open_then_call;
    if (data_waiting)
        cs_write(sv[1], c.seed, 0, 1000);
    px_stream *s;
    cr_assert_eq(px_stream_open(loop, &s, sv[0], &h, &c, NULL), 0);
    cr_assert(tc_wait_ge(&c.calls_run, 1, 5000), "the call made in on_open did not run");
    if (data_waiting)
        cr_assert(tc_wait_ge_size(&c.got, 1000, 5000), "%zu of 1000 waiting bytes arrived",
                  atomic_load(&c.got));
    cs_write(sv[1], c.seed, data_waiting ? 1000 : 0, 500);
    size_t total = data_waiting ? 1500 : 500;
    cr_assert(tc_wait_ge_size(&c.got, total, 5000), "%zu of %zu bytes arrived",
              atomic_load(&c.got), total);
    cs_end(&c, sv[1], &r);
    cr_assert_eq(atomic_load(&open_item.runs), 1);
    cr_assert_eq(atomic_load(&c.opens), 1);
    cr_assert_eq(atomic_load(&c.data_before_open_done), 0, "on_data before on_open returned");
    cs_assert_clean(&c);
}

TC_EXEC_TEST(call, from_on_open, run_call_from_open, false, .timeout = 30)

TC_EXEC_TEST(call, from_on_open_with_data_waiting, run_call_from_open, true, .timeout = 30)

/* ------------------------------------------------------------------------ */
/* 5. px_stream_resume ends a long pause at once: kept bytes first, then new
 *    ones, none lost or reordered. */

typedef enum resume_how {
    RH_OTHER_THREAD, /* px_stream_resume from the test thread */
    RH_CALL,         /* from inside a px_stream_call */
    RH_LOOP,         /* from the loop thread (px_loop_post) */
} resume_how;

typedef struct resume_param {
    px_executor ex;
    resume_how how;
    bool pause_from_outside; /* pause set by the test while idle, nothing kept */
} resume_param;

ParameterizedTestParameters(resume, ends_long_pause)
{
    static resume_param p[] = {
        {PX_EXEC_POOL, RH_OTHER_THREAD, false}, {PX_EXEC_THREAD, RH_OTHER_THREAD, false},
        {PX_EXEC_INLINE, RH_OTHER_THREAD, false}, {PX_EXEC_POOL, RH_CALL, false},
        {PX_EXEC_THREAD, RH_CALL, false},        {PX_EXEC_INLINE, RH_CALL, false},
        {PX_EXEC_POOL, RH_LOOP, false},          {PX_EXEC_THREAD, RH_LOOP, false},
        {PX_EXEC_INLINE, RH_LOOP, false},        {PX_EXEC_POOL, RH_OTHER_THREAD, true},
        {PX_EXEC_THREAD, RH_OTHER_THREAD, true}, {PX_EXEC_INLINE, RH_OTHER_THREAD, true},
        {PX_EXEC_POOL, RH_CALL, true},           {PX_EXEC_THREAD, RH_CALL, true},
        {PX_EXEC_INLINE, RH_CALL, true},
    };
    return cr_make_param_array(resume_param, p, sizeof p / sizeof p[0]);
}

static px_stream *resume_target;

static void resume_on_loop(void *arg)
{
    (void)arg;
    px_stream_resume(resume_target);
}

#define RESUME_FIRST 1000
#define RESUME_MORE 3000
#define RESUME_ROUNDS 2      /* the second round pauses a stream whose kept bytes went out */
#define RESUME_BOUND_MS 3000 /* "promptly": far below the 60-s pause */

ParameterizedTest(resume_param *p, resume, ends_long_pause, .timeout = 40)
{
    tc_runner r;
    int sv[2];
    px_loop *loop = tc_start_pair(p->ex, &r, sv);
    cs_state c;
    cs_init(&c, 8);
    cs_item resume_item = {.owner = &c, .thread = -1, .hook = CS_HOOK_RESUME};
    px_stream *s = cs_stream(loop, sv[0], &c);
    px_stream_retain(s);
    resume_target = s;
    cr_assert(tc_wait_ge(&c.opens, 1, 5000));

    size_t off = 0;
    for (int round = 0; round < RESUME_ROUNDS; round++) {
        size_t held; /* bytes taken before the pause */
        if (p->pause_from_outside) {
            /* While idle, with a receive armed. */
            px_stream_pause(s, CS_LONG_PAUSE_MS);
            cs_write(sv[1], c.seed, off, RESUME_FIRST);
            held = off;
        } else {
            atomic_store(&c.pause_next, true);
            cs_write(sv[1], c.seed, off, RESUME_FIRST);
            cr_assert(tc_wait_ge(&c.pauses, round + 1, 5000), "round %d: on_data did not run",
                      round);
            held = atomic_load(&c.got);
            cr_assert_lt(held, off + RESUME_FIRST);
        }
        cs_write(sv[1], c.seed, off + RESUME_FIRST, RESUME_MORE);
        tc_sleep_ms(100); /* pacing: give a broken pause the chance to deliver */
        cr_assert_eq(atomic_load(&c.got), held, "round %d: bytes delivered during the pause",
                     round);

        uint64_t t0 = px_now_ms();
        switch (p->how) {
        case RH_OTHER_THREAD:
            px_stream_resume(s);
            break;
        case RH_CALL:
            cr_assert_eq(px_stream_call(s, cs_call, &resume_item), 0);
            cr_assert(tc_wait_ge(&c.calls_run, round + 1, 5000),
                      "round %d: a call did not run during a pause", round);
            break;
        case RH_LOOP:
            cr_assert_eq(px_loop_post(loop, resume_on_loop, &c), 0);
            break;
        }
        off += RESUME_FIRST + RESUME_MORE;
        bool all = tc_wait_ge_size(&c.got, off, RESUME_BOUND_MS);
        cr_assert(all, "round %d: %zu of %zu bytes %llu ms after the resume", round,
                  atomic_load(&c.got), off, (unsigned long long)(px_now_ms() - t0));
    }

    /* Reading goes on as usual afterwards. */
    cs_write(sv[1], c.seed, off, 100);
    off += 100;
    cr_assert(tc_wait_ge_size(&c.got, off, RESUME_BOUND_MS));

    px_stream_release(s);
    cs_end(&c, sv[1], &r);
    cr_assert_eq(atomic_load(&c.got), off);
    if (p->how == RH_CALL)
        cr_assert_eq(atomic_load(&resume_item.runs), RESUME_ROUNDS);
    cs_assert_clean(&c);
}

/* Resume on an open stream that is not paused changes nothing. */
TC_EXEC_PARAMS(resume, without_pause)

ParameterizedTest(px_executor *ex, resume, without_pause, .timeout = 20)
{
    tc_runner r;
    int sv[2];
    px_loop *loop = tc_start_pair(*ex, &r, sv);
    cs_state c;
    cs_init(&c, 9);
    px_stream *s = cs_stream(loop, sv[0], &c);
    px_stream_resume(s); /* before it even started */
    cs_write(sv[1], c.seed, 0, 100);
    px_stream_resume(s);
    cr_assert(tc_wait_ge_size(&c.got, 100, 5000));
    px_stream_resume(s);
    cs_write(sv[1], c.seed, 100, 100);
    cr_assert(tc_wait_ge_size(&c.got, 200, 5000));
    cs_end(&c, sv[1], &r);
    cs_assert_clean(&c);
}

/* Many pauses (each 60 s, with half a chunk kept) ended by resumes from
 * another thread and from calls, while data streams in: nothing is lost or
 * reordered and the stream never waits for a pause to expire. */

enum { STORM_BYTES = 256 * 1024, STORM_CHUNK = 1024 };

typedef struct storm {
    cs_state *c;
    px_stream *s;
    atomic_bool stop;
    atomic_int resumes, calls_made;
    cs_item item; /* every call of the resumer; outlives them all */
} storm;

static void *storm_resumer(void *arg)
{
    storm *st = arg;
    int i = 0;
    uint64_t end = tc_now_ms() + 30000;
    while (!atomic_load(&st->stop) && tc_now_ms() < end) {
        if (i++ % 2 == 0) {
            px_stream_resume(st->s);
            atomic_fetch_add(&st->resumes, 1);
        } else if (px_stream_call(st->s, cs_call, &st->item) == 0) {
            atomic_fetch_add(&st->calls_made, 1);
        }
        sleep_us(500);
    }
    return NULL;
}

TC_EXEC_PARAMS(resume, storm)

ParameterizedTest(px_executor *ex, resume, storm, .timeout = 60)
{
    tc_runner r;
    int sv[2];
    px_loop *loop = tc_start_pair(*ex, &r, sv);
    cs_send_timeout(sv[1], 20000);
    cs_state *c = cs_new(10);
    c->data_mode = CS_DATA_KEEP_PAUSE_OFTEN;
    storm st = {.c = c, .item = {.owner = c, .thread = -1, .hook = CS_HOOK_RESUME}};
    st.s = cs_stream(loop, sv[0], c);
    px_stream_retain(st.s);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, storm_resumer, &st), 0);
    char buf[STORM_CHUNK];
    for (size_t off = 0; off < STORM_BYTES; off += sizeof buf) {
        tc_fill(buf, sizeof buf, c->seed, off);
        cr_assert_eq(tc_write_all(sv[1], buf, sizeof buf), 0, "the stream stopped reading");
        if ((off / sizeof buf) % 8 == 0)
            sleep_us(200);
    }
    bool all = tc_wait_ge_size(&c->got, STORM_BYTES, 20000);
    atomic_store(&st.stop, true);
    pthread_join(th, NULL);
    cr_assert(all, "%zu of %d bytes arrived (%d pauses, %d resumes, %d calls)",
              atomic_load(&c->got), STORM_BYTES, atomic_load(&c->pauses),
              atomic_load(&st.resumes), atomic_load(&st.calls_made));
    cr_assert_gt(atomic_load(&c->pauses), 1);
    cr_assert(tc_wait_ge(&c->calls_run, atomic_load(&st.calls_made), 10000),
              "%d of %d calls ran", atomic_load(&c->calls_run), atomic_load(&st.calls_made));
    px_stream_release(st.s);
    cs_end(c, sv[1], &r);
    cr_assert_eq(atomic_load(&c->got), (size_t)STORM_BYTES);
    cs_assert_clean(c);
    free(c);
}

/* ------------------------------------------------------------------------ */
/* 6. Bytes that arrive while a call runs are delivered after it, intact and
 *    in order (and an end of file that follows them comes after them). */

typedef struct during_param {
    px_executor ex;
    bool then_eof;
} during_param;

ParameterizedTestParameters(call, data_during_call_comes_after)
{
    static during_param p[] = {
        {PX_EXEC_POOL, false}, {PX_EXEC_THREAD, false}, {PX_EXEC_INLINE, false},
        {PX_EXEC_POOL, true},  {PX_EXEC_THREAD, true},  {PX_EXEC_INLINE, true},
    };
    return cr_make_param_array(during_param, p, sizeof p / sizeof p[0]);
}

enum { DURING_PIECE = 700, DURING_PIECES = 5, DURING_ROUNDS = 3 };

ParameterizedTest(during_param *p, call, data_during_call_comes_after, .timeout = 30)
{
    tc_runner r;
    int sv[2];
    px_loop *loop = tc_start_pair(p->ex, &r, sv);
    cs_state c;
    cs_init(&c, 12);
    tc_gate gates[DURING_ROUNDS];
    cs_item blockers[DURING_ROUNDS], afters[DURING_ROUNDS];
    for (int i = 0; i < DURING_ROUNDS; i++) {
        tc_gate_init(&gates[i]);
        blockers[i] = (cs_item){.owner = &c, .seq = 2 * i, .hook = CS_HOOK_BLOCK,
                                .gate = &gates[i]};
        afters[i] = (cs_item){.owner = &c, .seq = 2 * i + 1};
    }
    px_stream *s = cs_stream(loop, sv[0], &c);
    px_stream_retain(s);
    /* Some data first, so that reading is under way when the call comes. */
    cs_write(sv[1], c.seed, 0, 100);
    size_t off = 100;
    cr_assert(tc_wait_ge_size(&c.got, off, 5000));

    /* Several rounds: each one receives into a stream whose earlier held
     * bytes were already delivered. */
    for (int round = 0; round < DURING_ROUNDS; round++) {
        bool last = round == DURING_ROUNDS - 1;
        tc_sleep_ms(20); /* pacing: let the stream drain and wait for more */
        cr_assert_eq(px_stream_call(s, cs_call, &blockers[round]), 0);
        cr_assert(tc_wait_ge(&c.blocks_started, round + 1, 5000), "round %d: the call did not start",
                  round);
        cr_assert_eq(px_stream_call(s, cs_call, &afters[round]), 0); /* queued behind it */
        size_t before = off;
        for (int i = 0; i < DURING_PIECES; i++) {
            cs_write(sv[1], c.seed, off, DURING_PIECE);
            off += DURING_PIECE;
            tc_sleep_ms(10); /* pacing: separate arrivals */
        }
        if (last && p->then_eof)
            shutdown(sv[1], SHUT_WR);
        tc_sleep_ms(50); /* pacing: let the loop see what arrived */
        cr_assert_eq(atomic_load(&c.got), before, "round %d: bytes delivered while a call ran",
                     round);
        cr_assert_eq(atomic_load(&c.closes), 0, "round %d: on_close while a call ran", round);
        tc_gate_open(&gates[round]);

        cr_assert(tc_wait_ge_size(&c.got, off, 5000),
                  "round %d: %zu of %zu bytes arrived after the call", round, atomic_load(&c.got),
                  off);
        cr_assert(tc_wait_ge(&c.calls_run, 2 * (round + 1), 5000));
    }
    if (p->then_eof) {
        cr_assert(tc_wait_ge(&c.closes, 1, 5000), "end of file after the call not seen");
        cr_assert_eq(atomic_load(&c.cause), 0);
        cr_assert_eq(atomic_load(&c.got_at_close), off, "on_close came before all the bytes");
    } else {
        cs_write(sv[1], c.seed, off, 100);
        off += 100;
        cr_assert(tc_wait_ge_size(&c.got, off, 5000));
    }
    px_stream_release(s);
    cs_end(&c, sv[1], &r);
    cr_assert_eq(atomic_load(&c.got), off);
    cr_assert_eq(atomic_load(&c.gate_timeouts), 0);
    cr_assert_eq(atomic_load(&c.data_during_block), 0, "on_data ran while the call was blocked");
    for (int i = 0; i < DURING_ROUNDS; i++) {
        cr_assert_eq(atomic_load(&blockers[i].runs), 1);
        cr_assert_eq(atomic_load(&afters[i].runs), 1);
        tc_gate_destroy(&gates[i]);
    }
    cr_assert_eq(c.last_seq[0], 2 * DURING_ROUNDS - 1);
    cs_assert_clean(&c);
}

/* ------------------------------------------------------------------------ */
/* "Reading goes on meanwhile": a stream whose calls keep coming (here, a call
 * that queues the next one) still reads and still sends. */

typedef struct chain {
    atomic_bool stop;
    atomic_int links;
    cs_item item;
} chain;

static chain *chain_g;

static void chain_fn(px_stream *s, void *arg, void *user)
{
    cs_call(s, arg, user);
    atomic_fetch_add(&chain_g->links, 1);
    if (!atomic_load(&chain_g->stop))
        TC_CHECK(px_stream_call(s, chain_fn, arg) == 0);
}

TC_EXEC_PARAMS(call, reading_and_sending_go_on_while_calls_keep_coming)

ParameterizedTest(px_executor *ex, call, reading_and_sending_go_on_while_calls_keep_coming,
                  .timeout = 30)
{
    tc_runner r;
    int sv[2];
    px_loop *loop = tc_start_pair(*ex, &r, sv);
    cs_state c;
    cs_init(&c, 13);
    chain ch = {.item = {.owner = &c, .thread = -1}};
    chain_g = &ch;
    px_stream *s = cs_stream(loop, sv[0], &c);
    px_stream_retain(s);
    cr_assert(tc_wait_ge(&c.opens, 1, 5000));
    cr_assert_eq(px_stream_call(s, chain_fn, &ch.item), 0);
    cr_assert(tc_wait_ge(&ch.links, 10, 5000), "the chain of calls did not start");

    cs_write(sv[1], c.seed, 0, 1000);
    bool read = tc_wait_ge_size(&c.got, 1000, 3000);
    px_buf *b;
    cr_assert_eq(px_buf_new(&b, "hello", 5), 0);
    cr_assert_eq(px_stream_send(s, b), 0);
    px_buf_release(b);
    char echo[5];
    int sent = tc_read_exact(sv[1], echo, 5, 3000, NULL);
    int links = atomic_load(&ch.links);
    atomic_store(&ch.stop, true);

    bool read_later = tc_wait_ge_size(&c.got, 1000, 5000);
    px_stream_release(s);
    cs_end(&c, sv[1], &r);
    cr_assert(read, "no on_data in 3 s while calls kept coming (%d calls ran; %s once they "
              "stopped)", links, read_later ? "delivered" : "not even");
    cr_assert_eq(sent, 0, "a send did not go out in 3 s while calls kept coming (%d calls ran): %s",
                 links, strerror(-sent));
    cr_assert_eq(memcmp(echo, "hello", 5), 0);
    cs_assert_clean(&c);
}

/* A call that keeps queuing the next one cannot hold off a close: once
 * px_stream_abort has been called no call is accepted, and on_close follows the
 * calls accepted before it. */
static atomic_int endless_refused;

static void endless_fn(px_stream *s, void *arg, void *user)
{
    cs_call(s, arg, user);
    atomic_fetch_add(&chain_g->links, 1);
    int rc = px_stream_call(s, endless_fn, arg);
    if (rc == -EPIPE)
        atomic_fetch_add(&endless_refused, 1);
    else
        TC_CHECK(rc == 0);
}

TC_EXEC_PARAMS(call, endless_calls_do_not_hold_off_a_close)

ParameterizedTest(px_executor *ex, call, endless_calls_do_not_hold_off_a_close, .timeout = 30)
{
    tc_runner r;
    int sv[2];
    px_loop *loop = tc_start_pair(*ex, &r, sv);
    cs_state c;
    cs_init(&c, 17);
    chain ch = {.item = {.owner = &c, .thread = -1}};
    chain_g = &ch;
    atomic_store(&endless_refused, 0);
    px_stream *s = cs_stream(loop, sv[0], &c);
    cr_assert(tc_wait_ge(&c.opens, 1, 5000));
    cr_assert_eq(px_stream_call(s, endless_fn, &ch.item), 0);
    cr_assert(tc_wait_ge(&ch.links, 10, 5000), "the chain of calls did not start");
    px_stream_abort(s);
    bool closed = tc_wait_ge(&c.closes, 1, 3000);
    close(sv[1]);
    tc_runner_finish(&r);
    cr_assert(closed, "on_close did not come within 3 s of the abort (%d calls ran)",
              atomic_load(&ch.links));
    cr_assert_eq(atomic_load(&endless_refused), 1, "the chain was refused %d times",
                 atomic_load(&endless_refused));
}
