/*
 * One-shot and periodic timers: a binary min-heap of deadlines under the
 * loop's lock, so any thread may start or cancel; callbacks run on the loop
 * thread, outside the lock.
 */
#include "internal.h"

#include <limits.h>
#include <stdlib.h>
#include <time.h>

uint64_t px_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static bool timer_before(const px_timer *a, const px_timer *b)
{
    return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->seq < b->seq);
}

static void heap_set(px_loop *loop, unsigned i, px_timer *t)
{
    loop->heap[i] = t;
    t->heap_idx = i;
}

static void heap_up(px_loop *loop, unsigned i)
{
    px_timer *t = loop->heap[i];
    while (i > 0) {
        unsigned parent = (i - 1) / 2;
        if (!timer_before(t, loop->heap[parent]))
            break;
        heap_set(loop, i, loop->heap[parent]);
        i = parent;
    }
    heap_set(loop, i, t);
}

static void heap_down(px_loop *loop, unsigned i)
{
    px_timer *t = loop->heap[i];
    for (;;) {
        unsigned c = 2 * i + 1;
        if (c >= loop->heap_len)
            break;
        if (c + 1 < loop->heap_len && timer_before(loop->heap[c + 1], loop->heap[c]))
            c++;
        if (!timer_before(loop->heap[c], t))
            break;
        heap_set(loop, i, loop->heap[c]);
        i = c;
    }
    heap_set(loop, i, t);
}

/* Under loop->lock.  Returns 0 or -ENOMEM. */
static int heap_push(px_loop *loop, px_timer *t)
{
    if (loop->heap_len == loop->heap_cap) {
        unsigned cap = loop->heap_cap ? loop->heap_cap * 2 : 16;
        px_timer **h = realloc(loop->heap, cap * sizeof(*h));
        if (!h)
            return -ENOMEM;
        loop->heap = h;
        loop->heap_cap = cap;
    }
    t->seq = loop->timer_seq++;
    heap_set(loop, loop->heap_len++, t);
    heap_up(loop, t->heap_idx);
    return 0;
}

/* Under loop->lock. */
static void heap_remove(px_loop *loop, px_timer *t)
{
    unsigned i = t->heap_idx;
    t->heap_idx = UINT_MAX;
    px_timer *last = loop->heap[--loop->heap_len];
    if (i == loop->heap_len)
        return;
    heap_set(loop, i, last);
    heap_down(loop, i);
    heap_up(loop, last->heap_idx);
}

static void timer_unref(px_timer *t)
{
    if (px__refs_dec(&t->refs) == 0)
        free(t);
}

int px_timer_start(px_loop *loop, px_timer **out, uint64_t delay_ms,
                   uint64_t period_ms, void (*fn)(px_timer *t, void *user),
                   void *user)
{
    if (!loop || !fn || (!out && period_ms))
        return -EINVAL;
    px_timer *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->loop = loop;
    t->period_ms = period_ms;
    t->fn = fn;
    t->user = user;
    t->due_ms = px__deadline(px_now_ms(), delay_ms);
    atomic_init(&t->refs, out ? 2 : 1);
    atomic_init(&t->cancelled, false);
    pthread_mutex_lock(&loop->lock);
    int rc = heap_push(loop, t);
    bool first = rc == 0 && t->heap_idx == 0;
    pthread_mutex_unlock(&loop->lock);
    if (rc) {
        free(t);
        return rc;
    }
    if (first && !px__on_loop(loop))
        px__wake(loop);
    if (out)
        *out = t;
    return 0;
}

void px_timer_cancel(px_timer *t)
{
    if (!t)
        return;
    px_loop *loop = t->loop;
    bool drop_heap_ref = false;
    pthread_mutex_lock(&loop->lock);
    atomic_store(&t->cancelled, true);
    if (t->heap_idx != UINT_MAX) {
        heap_remove(loop, t);
        drop_heap_ref = true;
    }
    /* Off the loop thread, wait for a run already started to return, so
     * the caller may free what the callback uses once this returns. */
    if (!px__on_loop(loop))
        while (loop->timer_running == t)
            pthread_cond_wait(&loop->timer_done, &loop->lock);
    pthread_mutex_unlock(&loop->lock);
    if (drop_heap_ref)
        timer_unref(t);
    timer_unref(t);
}

int64_t px__timers_timeout_ms(px_loop *loop)
{
    int64_t out = -1;
    pthread_mutex_lock(&loop->lock);
    if (loop->heap_len) {
        uint64_t due = loop->heap[0]->due_ms, now = px_now_ms();
        out = due > now ? (int64_t)(due - now) : 0;
    }
    pthread_mutex_unlock(&loop->lock);
    return out;
}

void px__timers_run(px_loop *loop)
{
    PX_ASSERT_LOOP_THREAD(loop);
    uint64_t now = px_now_ms();
    /* Bounded: a periodic timer re-armed during this pass is due later. */
    for (unsigned budget = 1024; budget; budget--) {
        pthread_mutex_lock(&loop->lock);
        if (!loop->heap_len || loop->heap[0]->due_ms > now) {
            pthread_mutex_unlock(&loop->lock);
            return;
        }
        px_timer *t = loop->heap[0];
        heap_remove(loop, t); /* the heap's reference is now ours */
        /* Decided under the lock: a cancel either comes first (no run) or
         * waits for this run to return. */
        bool run = !atomic_load(&t->cancelled);
        if (run)
            loop->timer_running = t;
        pthread_mutex_unlock(&loop->lock);

        if (run) {
            t->fn(t, t->user);
            pthread_mutex_lock(&loop->lock);
            loop->timer_running = NULL;
            pthread_cond_broadcast(&loop->timer_done);
            pthread_mutex_unlock(&loop->lock);
        }

        bool rearmed = false;
        if (t->period_ms) {
            pthread_mutex_lock(&loop->lock);
            if (!atomic_load(&t->cancelled)) {
                uint64_t next = px__deadline(t->due_ms, t->period_ms);
                uint64_t after = px_now_ms();
                /* Skip missed periods instead of firing a burst. */
                t->due_ms = next > after ? next : px__deadline(after, t->period_ms);
                rearmed = heap_push(loop, t) == 0;
            }
            pthread_mutex_unlock(&loop->lock);
        }
        if (!rearmed)
            timer_unref(t);
    }
}

void px__timers_drop(px_loop *loop)
{
    pthread_mutex_lock(&loop->lock);
    while (loop->heap_len) {
        px_timer *t = loop->heap[0];
        heap_remove(loop, t);
        free(t); /* documented: handles of armed timers become invalid */
    }
    free(loop->heap);
    loop->heap = NULL;
    loop->heap_cap = 0;
    pthread_mutex_unlock(&loop->lock);
}
