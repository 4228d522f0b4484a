/*
 * px_stream_pause: a paused stream is not read until its deadline, while
 * other streams on the same loop keep being served.
 */
#include "helpers.h"

#include <string.h>
#include <unistd.h>

#define PAUSE_MS 1000 /* long enough that a loaded machine still serves the other stream first */

typedef struct pause_state {
    atomic_int chunks;
    _Atomic uint64_t first_ms, second_ms, paused_at_ms;
    bool pause_on_first;
} pause_state;

static void p_data(px_stream *s, const char *bytes, size_t len, void *user)
{
    (void)bytes;
    (void)len;
    pause_state *p = user;
    int n = atomic_fetch_add(&p->chunks, 1) + 1;
    uint64_t now = px_now_ms();
    if (n == 1) {
        atomic_store(&p->first_ms, now);
        if (p->pause_on_first) {
            atomic_store(&p->paused_at_ms, px_now_ms());
            px_stream_pause(s, PAUSE_MS);
        }
    } else if (n == 2) {
        atomic_store(&p->second_ms, now);
    }
}

static const px_stream_handlers p_handlers = {.on_data = p_data, .on_close = tc_close_noop};

TC_EXEC_PARAMS(pause, holds_reads)

ParameterizedTest(px_executor *ex, pause, holds_reads, .timeout = 20)
{
    tc_runner r;
    int a[2], b[2];
    px_loop *loop = tc_start_pair(*ex, &r, a);
    tc_socketpair(b);
    pause_state pa = {.pause_on_first = true}, pb = {.pause_on_first = false};
    px_stream *sa, *sb;
    cr_assert_eq(px_stream_open(loop, &sa, a[0], &p_handlers, &pa, NULL), 0);
    cr_assert_eq(px_stream_open(loop, &sb, b[0], &p_handlers, &pb, NULL), 0);

    cr_assert_eq(tc_write_all(a[1], "x", 1), 0);
    cr_assert(tc_wait_ge(&pa.chunks, 1, 5000));
    cr_assert_eq(tc_write_all(a[1], "y", 1), 0);

    /* While a is paused, b is served at once, twice. */
    cr_assert_eq(tc_write_all(b[1], "1", 1), 0);
    cr_assert(tc_wait_ge(&pb.chunks, 1, 5000));
    cr_assert_eq(tc_write_all(b[1], "2", 1), 0);
    cr_assert(tc_wait_ge(&pb.chunks, 2, 5000));
    uint64_t b_done = px_now_ms();

    cr_assert(tc_wait_ge(&pa.chunks, 2, 5000), "paused stream never read again");
    uint64_t gap = atomic_load(&pa.second_ms) - atomic_load(&pa.paused_at_ms);
    cr_assert_geq(gap, PAUSE_MS, "read again after %llu ms, paused for %d",
                  (unsigned long long)gap, PAUSE_MS);
    cr_assert_lt(b_done, atomic_load(&pa.second_ms), "the other stream waited for the pause");

    close(a[1]);
    close(b[1]);
    tc_runner_finish(&r);
}

/* A pause does not delay closing: abort during a pause ends the stream. */
Test(pause, close_during_pause, .timeout = 20)
{
    pause_state pa = {.pause_on_first = true};
    tc_runner r;
    int a[2];
    px_stream *sa = tc_start_stream(PX_EXEC_POOL, &r, a, &p_handlers, &pa, NULL);
    px_stream_retain(sa);
    cr_assert_eq(tc_write_all(a[1], "x", 1), 0);
    cr_assert(tc_wait_ge(&pa.chunks, 1, 5000));
    px_stream_pause(sa, 60000);
    px_stream_abort(sa);
    cr_assert_eq(tc_read_eof(a[1], 5000, true), 0, "abort did not close a paused stream");
    px_stream_release(sa);
    close(a[1]);
    tc_runner_finish(&r);
}

/* px_stream_keep: bytes given back come again, first, even with no new
 * input, and after the pause when one is set. */
typedef struct keep_state {
    atomic_int calls;
    char got[64];
    atomic_size_t got_len;
    _Atomic uint64_t kept_at, again_at;
} keep_state;

static void k_data(px_stream *s, const char *bytes, size_t len, void *user)
{
    keep_state *k = user;
    int n = atomic_fetch_add(&k->calls, 1) + 1;
    size_t at = atomic_load(&k->got_len);
    size_t take = len;
    if (n == 1 && len > 3) {
        take = len - 3; /* give back the last 3 bytes */
        TC_CHECK(px_stream_keep(s, 3) == 0);
        atomic_store(&k->kept_at, px_now_ms()); /* before the pause starts */
        px_stream_pause(s, 200);
    } else if (n == 2) {
        atomic_store(&k->again_at, px_now_ms());
    }
    if (at + take <= sizeof k->got) {
        memcpy(k->got + at, bytes, take);
        atomic_store(&k->got_len, at + take);
    }
}

static const px_stream_handlers k_handlers = {.on_data = k_data, .on_close = tc_close_noop};

TC_EXEC_PARAMS(pause, keep_redelivers)

ParameterizedTest(px_executor *ex, pause, keep_redelivers, .timeout = 20)
{
    keep_state k = {0};
    tc_runner r;
    int a[2];
    tc_start_stream(*ex, &r, a, &k_handlers, &k, NULL);
    cr_assert_eq(tc_write_all(a[1], "abcdef", 6), 0);
    cr_assert(tc_wait_ge_size(&k.got_len, 6, 5000), "kept bytes never came back");
    cr_assert_eq(memcmp(k.got, "abcdef", 6), 0, "bytes out of order: %.6s", k.got);
    uint64_t gap = atomic_load(&k.again_at) - atomic_load(&k.kept_at);
    cr_assert_geq(gap, 200, "kept bytes came back after %llu ms, paused for 200",
                  (unsigned long long)gap);
    /* New input comes after the kept bytes. */
    cr_assert_eq(tc_write_all(a[1], "gh", 2), 0);
    cr_assert(tc_wait_ge_size(&k.got_len, 8, 5000));
    cr_assert_eq(memcmp(k.got, "abcdefgh", 8), 0);
    close(a[1]);
    tc_runner_finish(&r);
}

/* Regression (review of src/proactor): px_stream_pause() made while the stream waited
 * for readiness (the usual idle state) was ignored: ep_wait read as soon as data
 * arrived. */
Test(pause, pause_while_idle_from_other_thread, .timeout = 20)
{
    pause_state p = {.pause_on_first = false};
    tc_runner r;
    int sv[2];
    px_stream *s = tc_start_stream(PX_EXEC_INLINE, &r, sv, &p_handlers, &p, NULL);
    cr_assert_eq(tc_write_all(sv[1], "a", 1), 0);
    cr_assert(tc_wait_ge(&p.chunks, 1, 5000));
    tc_loop_sync(r.loop, 3); /* read re-armed, EAGAIN seen: waiting on epoll */

    const unsigned pause_ms = 1500;
    uint64_t t0 = px_now_ms();
    px_stream_pause(s, pause_ms);
    cr_assert_eq(tc_write_all(sv[1], "b", 1), 0);
    cr_assert(tc_wait_ge(&p.chunks, 2, 5000), "never read again");
    uint64_t gap = atomic_load(&p.second_ms) - t0;
    cr_expect_geq(gap, pause_ms, "read %llu ms after px_stream_pause(%u)",
                  (unsigned long long)gap, pause_ms);
    close(sv[1]);
    tc_runner_finish(&r);
}
