/*
 * The loop: backend choice, run/stop, and the two cross-thread channels into
 * the loop thread (posted functions and stream requests), both woken through
 * the backend's single wake-up, written only on the empty -> non-empty
 * transition.  Streams, executors and timers live in their own files.
 */
#include "backend.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PX_DEFAULT_SENDQ (1u << 20)
#define PX_DEFAULT_RECV (64u << 10)
#define PX_DEFAULT_LINGER_MS 5000u
#define PX_MAX_THREADS 1024u

const char *px_version(void) { return PX_VERSION; }

const char *px_strerror(int err)
{
    if (err == PX_ESENDQ)
        return "send queue full (the peer is not reading)";
    if (err == -ENOTSUP)
        return "not supported (backend unavailable)";
    const char *s = err < 0 ? strerrordesc_np(-err) : NULL;
    return s ? s : (err == 0 ? "success" : "unknown error");
}

const char *px_backend_name(px_backend b)
{
    switch (b) {
    case PX_BACKEND_AUTO: return "auto";
    case PX_BACKEND_EPOLL: return "epoll";
    case PX_BACKEND_IO_URING: return "io_uring";
    }
    return "?";
}

const char *px_executor_name(px_executor e)
{
    switch (e) {
    case PX_EXEC_POOL: return "pool";
    case PX_EXEC_THREAD: return "thread";
    case PX_EXEC_INLINE: return "inline";
    }
    return "?";
}

int px_backend_parse(const char *name, px_backend *out)
{
    for (int b = PX_BACKEND_AUTO; b <= PX_BACKEND_IO_URING; b++) {
        if (name && out && strcmp(name, px_backend_name((px_backend)b)) == 0) {
            *out = (px_backend)b;
            return 0;
        }
    }
    return -EINVAL;
}

int px_executor_parse(const char *name, px_executor *out)
{
    for (int e = PX_EXEC_POOL; e <= PX_EXEC_INLINE; e++) {
        if (name && out && strcmp(name, px_executor_name((px_executor)e)) == 0) {
            *out = (px_executor)e;
            return 0;
        }
    }
    return -EINVAL;
}

bool px__on_loop(const px_loop *loop)
{
    return atomic_load_explicit(&loop->running, memory_order_acquire) &&
           pthread_equal(atomic_load_explicit(&loop->thread, memory_order_relaxed),
                         pthread_self());
}

bool px__loop_thread_ok(const px_loop *loop)
{
    return !atomic_load_explicit(&loop->running, memory_order_acquire) || px__on_loop(loop);
}

#ifdef PX_DEBUG
void px__assert_fail(const char *what, const char *file, int line, const char *func)
{
    fprintf(stderr, "libproactor: debug check failed: %s (%s:%d, %s)\n", what, file, line,
            func);
    abort();
}
#endif

void px__wake(px_loop *loop) { loop->be->wake(loop); }

/* Appends to the cross-thread lists; returns whether the loop must be woken. */
static bool need_wake_locked(px_loop *loop)
{
    if (loop->wake_pending)
        return false;
    loop->wake_pending = true;
    return true;
}

void px__schedule(px_stream *s)
{
    px_loop *loop = s->loop;
    /* The pending list has no lock: only the loop thread may touch it.  A caller
     * on another thread would lose streams from it (and stall them) silently. */
    if (atomic_load_explicit(&loop->running, memory_order_relaxed) && !px__on_loop(loop)) {
        fprintf(stderr, "libproactor: internal error: a stream scheduled off the loop "
                        "thread\n");
        abort();
    }
    if (s->pend_queued)
        return;
    s->pend_queued = true;
    s->pend_next = NULL;
    px_stream_retain(s);
    if (loop->pend_tail)
        loop->pend_tail->pend_next = s;
    else
        loop->pend = s;
    loop->pend_tail = s;
}

void px__stream_request(px_stream *s, unsigned bits)
{
    px_loop *loop = s->loop;
    if (px__on_loop(loop)) {
        atomic_fetch_or_explicit(&s->req, bits, memory_order_acq_rel);
        px__schedule(s);
        return;
    }
    /* Once the bits are visible the loop may act on them at any moment (it
     * can find the stream through another request) and, for PX_REQ_DONE
     * after on_close, free it: hold a reference until we are done here.
     * The reference goes with the stream onto the request list. */
    px_stream_retain(s);
    atomic_fetch_or_explicit(&s->req, bits, memory_order_acq_rel);
    bool wake = false, queued = false;
    pthread_mutex_lock(&loop->lock);
    if (!s->req_queued) {
        s->req_queued = queued = true;
        s->req_next = NULL;
        if (loop->reqs_tail)
            loop->reqs_tail->req_next = s;
        else
            loop->reqs = s;
        loop->reqs_tail = s;
        wake = need_wake_locked(loop);
    }
    pthread_mutex_unlock(&loop->lock);
    if (!queued)
        px_stream_release(s);
    if (wake)
        px__wake(loop);
}

int px_loop_post(px_loop *loop, void (*fn)(void *arg), void *arg)
{
    if (!loop || !fn)
        return -EINVAL;
    px_post *p = malloc(sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->fn = fn;
    p->arg = arg;
    p->next = NULL;
    bool on_loop = px__on_loop(loop);
    pthread_mutex_lock(&loop->lock);
    if (loop->posts_tail)
        loop->posts_tail->next = p;
    else
        loop->posts = p;
    loop->posts_tail = p;
    bool wake = !on_loop && need_wake_locked(loop);
    pthread_mutex_unlock(&loop->lock);
    if (on_loop)
        loop->self_posted = true; /* the next wait must not block */
    else if (wake)
        px__wake(loop);
    return 0;
}

/* Takes what other threads queued and runs it; returns whether there was any. */
static bool process_requests(px_loop *loop)
{
    pthread_mutex_lock(&loop->lock);
    px_post *posts = loop->posts;
    bool any = posts || loop->reqs;
    loop->posts = loop->posts_tail = NULL;
    loop->wake_pending = false;
    /* Under the lock: once req_queued is clear another thread may queue the
     * stream again and rewrite req_next. */
    for (px_stream *s = loop->reqs, *next; s; s = next) {
        next = s->req_next;
        s->req_queued = false;
        px__schedule(s);      /* takes its own reference... */
        px_stream_release(s); /* ...so this one never frees */
    }
    loop->reqs = loop->reqs_tail = NULL;
    pthread_mutex_unlock(&loop->lock);

    while (posts) {
        px_post *p = posts;
        posts = p->next;
        p->fn(p->arg);
        free(p);
    }
    return any;
}

/* Streams that asked for attention during the previous pass; those scheduled
 * while this runs wait for the next pass, so no stream can starve others. */
static void process_pending(px_loop *loop)
{
    px_stream *list = loop->pend;
    loop->pend = loop->pend_tail = NULL;
    while (list) {
        px_stream *s = list;
        list = s->pend_next;
        s->pend_queued = false;
        unsigned bits = atomic_exchange_explicit(&s->req, 0, memory_order_acq_rel);
        if (bits)
            px__stream_handle_requests(s, bits);
        px__stream_progress(s);
        px_stream_release(s);
    }
}

static void loop_iterate(px_loop *loop, int max_timeout_ms)
{
    process_requests(loop);
    process_pending(loop);
    int timeout = -1;
    if (loop->pend || loop->self_posted || atomic_load(&loop->stop)) {
        timeout = 0;
    } else {
        int64_t t = px__timers_timeout_ms(loop);
        if (t > INT32_MAX)
            t = INT32_MAX;
        timeout = (int)t;
    }
    if (max_timeout_ms >= 0 && (timeout < 0 || timeout > max_timeout_ms))
        timeout = max_timeout_ms;
    loop->self_posted = false;
#ifdef PX_DEBUG
    atomic_store_explicit(&loop->wait_timeout, timeout, memory_order_relaxed);
    atomic_fetch_add_explicit(&loop->waits, 1, memory_order_relaxed);
#endif
    loop->be->wait(loop, timeout);
#ifdef PX_DEBUG
    atomic_store_explicit(&loop->wait_timeout, -2, memory_order_relaxed);
#endif
    px__timers_run(loop);
    if (loop->watches_stopped)
        px__watches_reap(loop, false);
}

static void enter_loop_thread(px_loop *loop)
{
    atomic_store_explicit(&loop->thread, pthread_self(), memory_order_relaxed);
    atomic_store_explicit(&loop->running, true, memory_order_release);
}

static void leave_loop_thread(px_loop *loop)
{
    atomic_store_explicit(&loop->running, false, memory_order_release);
}

int px_loop_run(px_loop *loop)
{
    if (!loop)
        return -EINVAL;
    if (atomic_exchange(&loop->in_run, true))
        return -EBUSY;
    enter_loop_thread(loop);
    while (!atomic_exchange(&loop->stop, false))
        loop_iterate(loop, -1);
    leave_loop_thread(loop);
    atomic_store(&loop->in_run, false);
    return 0;
}

void px_loop_stop(px_loop *loop)
{
    atomic_store(&loop->stop, true);
    loop->be->wake(loop);
}

static int use_backend(px_loop *loop, const struct px_backend_ops *be)
{
    loop->be = be;
    loop->backend = be->id;
    return be->init(loop);
}

/* auto: io_uring when the kernel allows it (it may be missing, too old, or
 * blocked by a seccomp policy or the io_uring_disabled sysctl), else epoll;
 * backend_note says which, and why. */
static int pick_backend(px_loop *loop, px_backend want)
{
    int rc;
    switch (want) {
    case PX_BACKEND_IO_URING:
        rc = use_backend(loop, &px__backend_uring);
        return rc == 0 ? 0 : -ENOTSUP;
    case PX_BACKEND_AUTO:
        if (use_backend(loop, &px__backend_uring) == 0)
            return 0;
        {
            char why[sizeof(loop->backend_note)];
            snprintf(why, sizeof(why), "%s", loop->backend_note);
            rc = use_backend(loop, &px__backend_epoll);
            snprintf(loop->backend_note, sizeof(loop->backend_note),
                     "epoll (io_uring unavailable: %.120s)", why);
        }
        return rc;
    case PX_BACKEND_EPOLL:
        rc = use_backend(loop, &px__backend_epoll);
        snprintf(loop->backend_note, sizeof(loop->backend_note), "epoll (as asked)");
        return rc;
    }
    return -EINVAL;
}

int px_loop_create(px_loop **out, const px_loop_opts *opts)
{
    if (!out)
        return -EINVAL;
    px_loop_opts o = opts ? *opts : (px_loop_opts){0};
    if ((unsigned)o.backend > PX_BACKEND_IO_URING || (unsigned)o.executor > PX_EXEC_INLINE ||
        o.threads > PX_MAX_THREADS || o.recv_bytes > (size_t)INT_MAX)
        return -EINVAL;
    if (!o.sendq_bytes)
        o.sendq_bytes = PX_DEFAULT_SENDQ;
    if (!o.recv_bytes)
        o.recv_bytes = PX_DEFAULT_RECV;
    if (!o.linger_ms)
        o.linger_ms = PX_DEFAULT_LINGER_MS;

    px_loop *loop = calloc(1, sizeof(*loop));
    if (!loop)
        return -ENOMEM;
    loop->opts = o;
    loop->wake_io.kind = PX_IO_WAKE;
    loop->reserve_fd = -1;
#ifdef PX_DEBUG
    atomic_init(&loop->wait_timeout, -2);
#endif
    pthread_mutex_init(&loop->lock, NULL);
    pthread_cond_init(&loop->timer_done, NULL);
    loop->rbuf = malloc(o.recv_bytes);
    int rc = loop->rbuf ? 0 : -ENOMEM;
    if (rc == 0)
        rc = pick_backend(loop, o.backend);
    if (rc) {
        free(loop->rbuf);
        pthread_cond_destroy(&loop->timer_done);
        pthread_mutex_destroy(&loop->lock);
        free(loop);
        return rc;
    }
    rc = px__exec_init(loop);
    if (rc) {
        loop->be->fini(loop);
        free(loop->rbuf);
        pthread_cond_destroy(&loop->timer_done);
        pthread_mutex_destroy(&loop->lock);
        free(loop);
        return rc;
    }
    /* Held back for the moment accept() runs out of descriptors. */
    loop->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    *out = loop;
    return 0;
}

static bool posts_pending(px_loop *loop)
{
    pthread_mutex_lock(&loop->lock);
    bool any = loop->posts || loop->reqs;
    pthread_mutex_unlock(&loop->lock);
    return any;
}

void px_loop_destroy(px_loop *loop)
{
    if (!loop)
        return;
    PX_ASSERT(!atomic_load(&loop->in_run)); /* "destroys a loop that is not running" */
    enter_loop_thread(loop);
    loop->destroying = true;
    process_requests(loop); /* starts what was opened or listened meanwhile */
    while (loop->listeners)
        px__listener_shutdown(loop->listeners);
    for (;;) {
        process_requests(loop);
        for (px_stream *s = loop->streams, *next; s; s = next) {
            next = s->next;
            px__stream_begin_close(s, -ECANCELED, true);
        }
        process_pending(loop);
        if (!loop->streams && !loop->pend && !posts_pending(loop))
            break;
        loop_iterate(loop, 50);
    }
    leave_loop_thread(loop);
    px__exec_fini(loop);
    /* Workers may have posted while stopping; run those too. */
    enter_loop_thread(loop);
    while (posts_pending(loop) || loop->pend) {
        process_requests(loop);
        process_pending(loop);
    }
    leave_loop_thread(loop);
    px__timers_drop(loop);
    loop->be->fini(loop);
    px__watches_reap(loop, true); /* after fini: no poll of theirs is left in flight */
    if (loop->reserve_fd >= 0)
        close(loop->reserve_fd);
    free(loop->rbuf);
    pthread_cond_destroy(&loop->timer_done);
    pthread_mutex_destroy(&loop->lock);
    free(loop);
}

int px_backend_probe(px_backend backend, char *why, size_t len)
{
    if ((unsigned)backend > PX_BACKEND_IO_URING)
        return -EINVAL;
    px_loop *probe = calloc(1, sizeof(*probe));
    if (!probe)
        return -ENOMEM;
    probe->wake_io.kind = PX_IO_WAKE;
    int rc = pick_backend(probe, backend);
    if (why && len)
        snprintf(why, len, "%s", probe->backend_note);
    if (rc == 0)
        probe->be->fini(probe);
    free(probe);
    return rc;
}

px_backend px_loop_backend(const px_loop *loop) { return loop->backend; }
const char *px_loop_backend_note(const px_loop *loop) { return loop->backend_note; }
px_executor px_loop_executor(const px_loop *loop) { return loop->opts.executor; }
unsigned px_loop_threads(const px_loop *loop) { return loop->exec.nthreads; }
