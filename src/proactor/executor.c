/*
 * Executors: where stream handlers run.  The loop hands over one event per
 * stream at a time (px_stream.ev) and hears back through PX_REQ_DONE, so a
 * stream's handlers never overlap whatever the executor.
 *   pool   fixed workers sharing one FIFO queue (mutex + condition variable)
 *   thread one detached thread per event, ending when the handler returns
 *   inline the loop thread itself
 */
#include "internal.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

/* Library threads take no asynchronous signals: a SIGTERM meant for the
 * application reaches a thread that can act on it at once, never a worker
 * parked on a condition variable.  Faults stay deliverable. */
static void thread_attr_init(pthread_attr_t *attr, bool detached)
{
    pthread_attr_init(attr);
    if (detached)
        pthread_attr_setdetachstate(attr, PTHREAD_CREATE_DETACHED);
    sigset_t mask;
    sigfillset(&mask);
    static const int faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS};
    for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++)
        sigdelset(&mask, faults[i]);
    pthread_attr_setsigmask_np(attr, &mask);
}

/* The stream whose on_data this thread is running, if any: px_stream_keep
 * works only there, where the stream's event data cannot change under it. */
static _Thread_local const px_stream *in_on_data;

bool px__exec_in_on_data(const px_stream *s)
{
    return in_on_data == s;
}

void px__exec_run_event(px_stream *s)
{
    void *user = atomic_load_explicit(&s->user, memory_order_acquire);
    switch (s->ev) {
    case PX_EV_OPEN:
        s->h.on_open(s, user);
        break;
    case PX_EV_DATA:
        /* No on_data starts once px_stream_close/abort has returned. */
        if (atomic_load_explicit(&s->shut, memory_order_acquire) == PX_SHUT_NONE) {
            const px_stream *outer = in_on_data;
            in_on_data = s;
            s->h.on_data(s, s->ev_data, s->ev_len, user);
            in_on_data = outer;
        }
        break;
    case PX_EV_CLOSE:
        s->h.on_close(s, s->cause, user);
        break;
    case PX_EV_CALL: {
        px_call *c = s->ev_call;
        s->ev_call = NULL;
        c->fn(s, c->arg, user);
        free(c);
        break;
    }
    case PX_EV_NONE:
        break;
    }
}

/* Off the loop thread: run the event, free its bytes, tell the loop. */
static void run_and_report(px_stream *s)
{
    px__exec_run_event(s);
    if (s->ev_owned)
        free(s->ev_data);
    s->ev_data = NULL;
    s->ev_owned = false;
    px__stream_request(s, PX_REQ_DONE);
}

static void *pool_worker(void *arg)
{
    px_exec *x = arg;
    pthread_mutex_lock(&x->lock);
    for (;;) {
        while (!x->head && !x->stopping)
            pthread_cond_wait(&x->cond, &x->lock);
        px_stream *s = x->head;
        if (!s)
            break; /* stopping and drained */
        x->head = s->exec_next;
        if (!x->head)
            x->tail = NULL;
        pthread_mutex_unlock(&x->lock);
        run_and_report(s);
        pthread_mutex_lock(&x->lock);
    }
    pthread_mutex_unlock(&x->lock);
    return NULL;
}

/* A per-event thread leaves its id to be joined by the next submit or by
 * px__exec_fini: joined, not detached, so that no thread (nor its stack and
 * thread-local storage) outlives the loop. */
static void *event_thread(void *arg)
{
    px_stream *s = arg;
    px_exec *x = &s->loop->exec;
    run_and_report(s);
    pthread_mutex_lock(&x->lock);
    if (x->ndone == x->done_cap) {
        unsigned cap = x->done_cap ? x->done_cap * 2 : 16;
        pthread_t *d = realloc(x->done, cap * sizeof(*d));
        if (d) {
            x->done = d;
            x->done_cap = cap;
        }
    }
    if (x->ndone < x->done_cap)
        x->done[x->ndone++] = pthread_self();
    else
        pthread_detach(pthread_self()); /* no memory to remember it: let it go */
    if (--x->live == 0)
        pthread_cond_broadcast(&x->idle_cond);
    pthread_mutex_unlock(&x->lock);
    return NULL;
}

/* Joins the per-event threads that have finished (they are past their last lock). */
static void reap_done(px_exec *x)
{
    pthread_mutex_lock(&x->lock);
    if (!x->ndone) {
        pthread_mutex_unlock(&x->lock);
        return;
    }
    pthread_t *done = x->done;
    unsigned n = x->ndone;
    x->done = NULL;
    x->ndone = x->done_cap = 0;
    pthread_mutex_unlock(&x->lock);
    for (unsigned i = 0; i < n; i++)
        pthread_join(done[i], NULL);
    free(done);
}

int px__exec_init(px_loop *loop)
{
    px_exec *x = &loop->exec;
    x->kind = loop->opts.executor;
    pthread_mutex_init(&x->lock, NULL);
    pthread_cond_init(&x->cond, NULL);
    pthread_cond_init(&x->idle_cond, NULL);
    if (x->kind != PX_EXEC_POOL)
        return 0;
    unsigned n = loop->opts.threads;
    if (!n) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? (unsigned)cpus : 1;
    }
    x->threads = calloc(n, sizeof(*x->threads));
    if (!x->threads)
        return -ENOMEM;
    pthread_attr_t attr;
    thread_attr_init(&attr, false);
    for (unsigned i = 0; i < n; i++) {
        int rc = pthread_create(&x->threads[i], &attr, pool_worker, x);
        if (rc) {
            pthread_attr_destroy(&attr);
            x->nthreads = i;
            px__exec_fini(loop);
            return -rc;
        }
        x->nthreads = i + 1;
    }
    pthread_attr_destroy(&attr);
    return 0;
}

void px__exec_submit(px_loop *loop, px_stream *s)
{
    px_exec *x = &loop->exec;
    s->exec_next = NULL;
    switch (x->kind) {
    case PX_EXEC_POOL:
        pthread_mutex_lock(&x->lock);
        if (x->tail)
            x->tail->exec_next = s;
        else
            x->head = s;
        x->tail = s;
        pthread_cond_signal(&x->cond);
        pthread_mutex_unlock(&x->lock);
        return;
    case PX_EXEC_THREAD: {
        reap_done(x);
        pthread_attr_t attr;
        thread_attr_init(&attr, false);
        pthread_t th;
        pthread_mutex_lock(&x->lock);
        x->live++;
        pthread_mutex_unlock(&x->lock);
        int rc = pthread_create(&th, &attr, event_thread, s);
        pthread_attr_destroy(&attr);
        if (rc == 0)
            return;
        pthread_mutex_lock(&x->lock);
        x->live--;
        pthread_mutex_unlock(&x->lock);
        /* Out of threads: run it here rather than lose or delay the event. */
        break;
    }
    case PX_EXEC_INLINE:
        break;
    }
    /* Inline, on the loop thread. */
    px__exec_run_event(s);
    if (s->ev_owned)
        free(s->ev_data);
    s->ev_data = NULL;
    s->ev_owned = false;
    px__stream_event_done(s);
}

void px__exec_fini(px_loop *loop)
{
    px_exec *x = &loop->exec;
    pthread_mutex_lock(&x->lock);
    x->stopping = true;
    pthread_cond_broadcast(&x->cond);
    while (x->live)
        pthread_cond_wait(&x->idle_cond, &x->lock);
    pthread_mutex_unlock(&x->lock);
    reap_done(x);
    for (unsigned i = 0; i < x->nthreads; i++)
        pthread_join(x->threads[i], NULL);
    free(x->threads);
    x->threads = NULL;
    x->nthreads = 0;
    pthread_cond_destroy(&x->cond);
    pthread_cond_destroy(&x->idle_cond);
    pthread_mutex_destroy(&x->lock);
}
