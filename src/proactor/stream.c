/*
 * Streams: the per-connection state machine, the bounded send queue of shared
 * buffers, and the order of handler events.  The backend does the system
 * calls; this file decides what happens next and hands events to the
 * executor.  Listeners are in listener.c.
 *
 * The life of a stream (s->state, px_stream_state; loop thread only):
 *
 *   from      what happens (function)                            to
 *   NEW       START request: registered (px__stream_start)       OPEN
 *             (registering failed, or the loop is being destroyed: OPEN, then
 *             at once an abortive close)
 *   OPEN      graceful close with bytes queued (begin_close:      DRAINING
 *             px_stream_close, end of file); linger timer armed
 *   OPEN      graceful close with nothing queued, or an abortive  CLOSING
 *             one (abort, a read or write error, -ENOMEM,
 *             loop destroyed) (begin_close -> finish_close)
 *   DRAINING  the last queued byte written (px__stream_sent)      CLOSING
 *   DRAINING  an abortive close (linger expired: -ETIMEDOUT,      CLOSING
 *             abort, error)
 *   CLOSING   the backend closed the descriptor                   CLOSED
 *             (px__stream_closed; epoll at once, io_uring once
 *             what was in flight has completed); queue dropped
 *   CLOSED    no event running and no call left: on_close         FINAL
 *             dispatched (dispatch_close); calls queued before
 *             the close run first, one at a time
 *   FINAL     on_close returned (px__stream_event_done): the stream leaves
 *             the loop's list and the loop's reference is dropped
 *
 * Ignored: a close before START (the START request is handled first, so
 * this cannot happen), any close once CLOSED, a graceful close once DRAINING
 * or CLOSING ("the first close decides").  An abortive close while CLOSING
 * only changes the cause (abort overrides a graceful close still under way).
 *
 * Beside the state, two more machines:
 *   s->ev (px_event, loop thread): the event the executor holds.  dispatch()
 *     moves it from NONE to OPEN, DATA, CALL or CLOSE; px__stream_event_done
 *     (after PX_REQ_DONE, or inline) moves it back.  Never two at once: this
 *     is "a stream's handlers never overlap".  OPEN and DATA go out only in
 *     OPEN, CLOSE only when entering FINAL, CALL in any state from OPEN to
 *     CLOSED; while one is out the stream is not read (received bytes wait in
 *     s->kept).
 *   s->shut (px_shut, any thread, written under s->lock): NONE -> CLOSE
 *     (px_stream_close, or begin_close) -> ABORT (px_stream_abort, also from
 *     NONE).  Once raised, sends and calls are refused and no on_data starts,
 *     from the moment close/abort returns, whatever the loop has got to.
 *
 * Which thread does what:
 *   any thread     px_stream_send/call (append under s->lock), close/abort
 *                  (raise shut, then request), pause/resume, retain/release,
 *                  user, queued_bytes, peer; they reach the loop only through
 *                  px__stream_request.
 *   the executor   the handler of s->ev, and with it ev_data, ev_call; inside
 *                  on_data, px_stream_keep (and so s->kept): the loop leaves
 *                  them alone until the event is done.
 *   loop thread    everything else: state, ev, the want_* flags, timers, the
 *                  pending list, the backend's fields.
 * Debug builds (PX_DEBUG) check this: loop-thread functions assert that they
 * run there, set_state() asserts each transition against the table above,
 * dispatch() asserts the event rules, and check_invariants() what each
 * state implies (see there).
 */
#include "backend.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------------ */
/* The state machine's rules, as code                                        */

static inline bool busy(const px_stream *s) { return s->ev != PX_EV_NONE; }

#ifdef PX_DEBUG
/* The table at the top of this file. */
static bool transition_ok(px_stream_state from, px_stream_state to)
{
    switch (from) {
    case PX_ST_NEW:
        return to == PX_ST_OPEN;
    case PX_ST_OPEN:
        return to == PX_ST_DRAINING || to == PX_ST_CLOSING;
    case PX_ST_DRAINING:
        return to == PX_ST_CLOSING;
    case PX_ST_CLOSING:
        return to == PX_ST_CLOSED;
    case PX_ST_CLOSED:
        return to == PX_ST_FINAL;
    case PX_ST_FINAL:
        return false;
    }
    return false;
}

/* What each state implies, checked at every transition and every pass over
 * the stream.  Reads only what the loop thread owns (plus the queue, under
 * its lock): the executor may be running a handler meanwhile. */
static void check_invariants(px_stream *s)
{
    pthread_mutex_lock(&s->lock);
    unsigned q_len = s->q_len;
    unsigned shut = atomic_load_explicit(&s->shut, memory_order_relaxed);
    pthread_mutex_unlock(&s->lock);
    PX_ASSERT(shut <= PX_SHUT_ABORT);
    switch (s->state) {
    case PX_ST_NEW: /* nothing started yet */
        PX_ASSERT(s->ev == PX_EV_NONE && !s->want_open && !s->want_read && !s->kept);
        PX_ASSERT(!s->linger && !s->pause);
        break;
    case PX_ST_OPEN:
        break;
    case PX_ST_DRAINING: /* a graceful close, bounded by the linger timer */
        PX_ASSERT(shut != PX_SHUT_NONE && s->linger);
        break;
    case PX_ST_CLOSING: /* finish_close cancelled both timers */
        PX_ASSERT(shut != PX_SHUT_NONE && !s->linger && !s->pause);
        break;
    case PX_ST_CLOSED:
    case PX_ST_FINAL: /* px__stream_closed dropped the queue and the descriptor */
        PX_ASSERT(shut != PX_SHUT_NONE && s->fd == -1 && q_len == 0);
        PX_ASSERT(!s->linger && !s->pause);
        break;
    }
    /* on_close is the last event, and only FINAL has it out. */
    PX_ASSERT(s->ev != PX_EV_CLOSE || s->state == PX_ST_FINAL);
    PX_ASSERT(s->state != PX_ST_FINAL || s->ev == PX_EV_CLOSE || s->ev == PX_EV_NONE);
    if (s->ev != PX_EV_DATA) /* else px_stream_keep may be writing them */
        PX_ASSERT((s->kept != NULL) == (s->kept_len > 0));
}
#else
static inline void check_invariants(px_stream *s) { (void)s; }
#endif

static void set_state(px_stream *s, px_stream_state to)
{
    PX_ASSERT_LOOP_THREAD(s->loop);
#ifdef PX_DEBUG
    if (!transition_ok(s->state, to)) {
        char what[80];
        snprintf(what, sizeof(what), "stream state %s -> %s is not in the table",
                 px__stream_state_name(s->state), px__stream_state_name(to));
        px__assert_fail(what, __FILE__, __LINE__, __func__);
    }
#endif
    s->state = to;
    check_invariants(s);
}

/* Raises s->shut to at least to; under s->lock. */
static void raise_shut_locked(px_stream *s, px_shut to)
{
    if (atomic_load_explicit(&s->shut, memory_order_relaxed) < (unsigned)to)
        atomic_store_explicit(&s->shut, (unsigned)to, memory_order_release);
}

static inline bool shut_raised(const px_stream *s)
{
    return atomic_load_explicit(&((px_stream *)s)->shut, memory_order_acquire) !=
           PX_SHUT_NONE;
}

/* ------------------------------------------------------------------------ */
/* Creation and references                                                   */

px_stream *px__stream_new(px_loop *loop, int fd, const px_stream_handlers *h,
                          void *user, const px_stream_opts *opts)
{
    px_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->io.kind = PX_IO_STREAM;
    s->loop = loop;
    s->fd = fd;
    atomic_init(&s->refs, 1); /* the loop's, dropped after on_close */
    s->h = *h;
    atomic_init(&s->user, user);
    atomic_init(&s->req, 0);
    atomic_init(&s->shut, PX_SHUT_NONE);
    pthread_mutex_init(&s->lock, NULL);
    s->calls_tail = &s->calls;
    atomic_init(&s->ncalls, 0);
    s->q_max = opts && opts->sendq_bytes ? opts->sendq_bytes : loop->opts.sendq_bytes;
    s->state = PX_ST_NEW;
    struct stat st;
    s->is_socket = fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
    int fl = fcntl(fd, F_GETFL);
    s->can_read = fl < 0 || (fl & O_ACCMODE) != O_WRONLY;
    socklen_t alen = sizeof(s->peer);
    if (!s->is_socket || getpeername(fd, &s->peer.sa, &alen) != 0)
        s->peer.sa.sa_family = AF_UNSPEC;
    return s;
}

px_stream *px_stream_retain(px_stream *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void px_stream_release(px_stream *s)
{
    if (!s || px__refs_dec(&s->refs) != 0)
        return;
    /* Only the loop's reference, dropped after on_close, can be the last
     * while the stream lives: it is off every list. */
    PX_ASSERT(s->state == PX_ST_FINAL && s->ev == PX_EV_NONE);
    PX_ASSERT(!s->pend_queued && !s->req_queued && !s->prev && !s->next);
    /* The queue was emptied when the stream closed, and every call ran
     * before on_close. */
    PX_ASSERT(!s->q && !s->calls);
    free(s->q);
    free(s->kept);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void px_stream_set_user(px_stream *s, void *user)
{
    atomic_store_explicit(&s->user, user, memory_order_release);
}

void *px_stream_user(const px_stream *s)
{
    return atomic_load_explicit(&((px_stream *)s)->user, memory_order_acquire);
}

int px_stream_open(px_loop *loop, px_stream **out, int fd,
                   const px_stream_handlers *handlers, void *user,
                   const px_stream_opts *opts)
{
    if (!loop || !out || fd < 0 || !handlers || !handlers->on_data || !handlers->on_close)
        return -EINVAL;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    px_stream *s = px__stream_new(loop, fd, handlers, user, opts);
    if (!s)
        return -ENOMEM;
    *out = s;
    /* Started on the loop's next pass, even from the loop thread: no handler
     * may run inside this call. */
    px__stream_request(s, PX_REQ_START);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Events                                                                    */

static void dispatch(px_stream *s, px_event ev)
{
    PX_ASSERT_LOOP_THREAD(s->loop);
    PX_ASSERT(!busy(s)); /* one event at a time: handlers never overlap */
    switch (ev) {
    case PX_EV_OPEN:
    case PX_EV_DATA:
        PX_ASSERT(s->state == PX_ST_OPEN);
        break;
    case PX_EV_CALL:
        PX_ASSERT(s->state != PX_ST_NEW && s->state != PX_ST_FINAL);
        break;
    case PX_EV_CLOSE:
        PX_ASSERT(s->state == PX_ST_FINAL);
        break;
    case PX_EV_NONE:
        PX_ASSERT(!"dispatch of no event");
        break;
    }
    s->ev = ev;
    px__exec_submit(s->loop, s);
}

/* Dispatches the first queued px_stream_call, if any.  True if it did. */
static bool dispatch_call(px_stream *s)
{
    if (!atomic_load(&s->ncalls))
        return false;
    pthread_mutex_lock(&s->lock);
    px_call *c = s->calls;
    if (c) {
        s->calls = c->next;
        if (!s->calls)
            s->calls_tail = &s->calls;
        atomic_fetch_sub(&s->ncalls, 1);
    }
    pthread_mutex_unlock(&s->lock);
    if (!c)
        return false;
    s->ev_call = c;
    dispatch(s, PX_EV_CALL);
    return true;
}

/* CLOSED and idle: calls accepted before the stream closed run first (no
 * call is accepted once it has: shut), then on_close. */
static void dispatch_close(px_stream *s)
{
    if (dispatch_call(s))
        return;
    set_state(s, PX_ST_FINAL);
    dispatch(s, PX_EV_CLOSE);
}

void px__stream_start(px_stream *s)
{
    px_loop *loop = s->loop;
    PX_ASSERT_LOOP_THREAD(loop);
    s->next = loop->streams;
    s->prev = NULL;
    if (loop->streams)
        loop->streams->prev = s;
    loop->streams = s;
    set_state(s, PX_ST_OPEN);
    int rc = loop->destroying ? -ECANCELED : loop->be->stream_start(loop, s);
    if (rc) {
        px__stream_begin_close(s, rc, true);
        return;
    }
    /* Handlers start from the pending pass, never from inside the caller
     * (an accept loop, px_stream_open). */
    if (s->h.on_open)
        s->want_open = true;
    else
        s->want_read = s->can_read;
    px__schedule(s);
}

static void finalize(px_stream *s)
{
    px_loop *loop = s->loop;
    PX_ASSERT(s->state == PX_ST_FINAL && !busy(s));
    if (s->prev)
        s->prev->next = s->next;
    else
        loop->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    px_stream_release(s);
}

void px__stream_event_done(px_stream *s)
{
    PX_ASSERT_LOOP_THREAD(s->loop);
    PX_ASSERT(busy(s));
    px_event prev = s->ev;
    s->ev = PX_EV_NONE;
    s->after_call = prev == PX_EV_CALL;
    switch (prev) {
    case PX_EV_CLOSE:
        finalize(s);
        return;
    case PX_EV_CALL:
        /* Reading goes on as before the call: a receive armed then is still
         * armed, and bytes it brought meanwhile wait in kept (want_read).  A
         * closed stream's next call or its on_close come from the pending
         * pass, not from in here: the inline executor would recurse once per
         * queued call. */
        px__schedule(s);
        return;
    case PX_EV_OPEN:
    case PX_EV_DATA:
        break;
    case PX_EV_NONE:
        return;
    }
    switch (s->state) {
    case PX_ST_OPEN:
        if (s->can_read) {
            s->want_read = true;
            px__schedule(s);
        }
        return;
    case PX_ST_CLOSED: /* closed while the handler ran */
        dispatch_close(s);
        return;
    case PX_ST_DRAINING:
    case PX_ST_CLOSING:
        return;
    case PX_ST_NEW:
    case PX_ST_FINAL:
        PX_ASSERT(!"open or data event done in NEW or FINAL");
        return;
    }
}

static void cancel_pause(px_stream *s);

void px__stream_handle_requests(px_stream *s, unsigned bits)
{
    PX_ASSERT_LOOP_THREAD(s->loop);
    if (bits & PX_REQ_START)
        px__stream_start(s);
    if (bits & PX_REQ_ABORT)
        px__stream_begin_close(s, -ECONNABORTED, true);
    if (bits & PX_REQ_CLOSE)
        px__stream_begin_close(s, 0, false);
    if (bits & PX_REQ_FLUSH)
        s->want_flush = true;
    if (bits & PX_REQ_DONE)
        px__stream_event_done(s);
    if (bits & PX_REQ_RESUME) {
        cancel_pause(s);
        px__schedule(s);
    }
    if (bits & PX_REQ_CALL)
        px__schedule(s);
}

static void cancel_pause(px_stream *s)
{
    if (s->pause) {
        px_timer_cancel(s->pause);
        s->pause = NULL;
        px_stream_release(s); /* the timer's reference */
    }
}

static void pause_over(px_timer *t, void *user)
{
    (void)t;
    px_stream *s = user;
    px_stream_retain(s); /* cancel_pause drops the timer's reference */
    cancel_pause(s);
    px__schedule(s);
    px_stream_release(s);
}

bool px__stream_paused(px_stream *s)
{
    PX_ASSERT_LOOP_THREAD(s->loop);
    uint64_t after = atomic_load_explicit(&s->read_after_ms, memory_order_acquire);
    if (!after || after <= px_now_ms())
        return false;
    s->want_read = true; /* px__stream_progress arms the pause timer */
    px__schedule(s);
    return true;
}

/* Reading: arms a receive, hands over bytes kept back, or starts the timer
 * that ends a pause. */
static void read_step(px_stream *s)
{
    px_loop *loop = s->loop;
    if (!s->want_read || s->state != PX_ST_OPEN || busy(s) || s->pause)
        return;
    uint64_t after = atomic_load_explicit(&s->read_after_ms, memory_order_acquire);
    uint64_t now = after ? px_now_ms() : 0;
    if (after > now) {
        /* Paused: come back when the pause ends (want_read stays set). */
        px_stream_retain(s);
        if (px_timer_start(loop, &s->pause, after - now, 0, pause_over, s) == 0)
            return;
        s->pause = NULL;
        px_stream_release(s); /* no memory for a timer: read now */
    }
    s->want_read = false;
    if (shut_raised(s))
        return;
    if (s->kept) {
        /* Bytes the last handler gave back come before new ones. */
        s->ev_data = s->kept;
        s->ev_len = s->kept_len;
        s->ev_owned = true;
        s->kept = NULL;
        s->kept_len = 0;
        dispatch(s, PX_EV_DATA);
        return;
    }
    loop->be->stream_recv(loop, s);
}

static bool call_step(px_stream *s)
{
    return !busy(s) && !s->want_open && dispatch_call(s);
}

void px__stream_progress(px_stream *s)
{
    px_loop *loop = s->loop;
    PX_ASSERT_LOOP_THREAD(loop);
    check_invariants(s);
    switch (s->state) {
    case PX_ST_NEW: /* the START request comes first: nothing to do yet */
    case PX_ST_FINAL:
        return;
    case PX_ST_CLOSED: /* after a call: the next one, or on_close */
        if (!busy(s))
            dispatch_close(s);
        return;
    case PX_ST_OPEN:
    case PX_ST_DRAINING:
    case PX_ST_CLOSING:
        break;
    }
    if (s->want_open && s->state == PX_ST_OPEN && !busy(s)) {
        s->want_open = false;
        dispatch(s, PX_EV_OPEN);
        return; /* reading starts when on_open has returned */
    }
    if (s->want_flush) { /* the backend ignores it once it is closing */
        s->want_flush = false;
        pthread_mutex_lock(&s->lock);
        s->flush_pending = false;
        bool any = s->q_len > 0;
        pthread_mutex_unlock(&s->lock);
        if (any)
            loop->be->stream_send(loop, s);
    }
    /* Calls and reads take turns, so a steady stream of calls cannot hold off
     * reading (or the other way round): after a call, reading goes first. */
    if (!s->after_call && call_step(s))
        return;
    read_step(s);
    call_step(s);
}

int px_stream_keep(px_stream *s, size_t n)
{
    /* Inside on_data (checked: the executor marks the thread that runs it)
     * the stream is busy, so the loop leaves ev_* and kept alone until the
     * handler's completion is reported.  Anywhere else they may be changing
     * under the caller. */
    if (!s || !px__exec_in_on_data(s))
        return -EINVAL;
    if (n > s->ev_len)
        n = s->ev_len;
    if (n == 0)
        return 0;
    char *copy = malloc(n);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, s->ev_data + s->ev_len - n, n);
    free(s->kept);
    s->kept = copy;
    s->kept_len = n;
    return 0;
}

void px_stream_resume(px_stream *s)
{
    atomic_store_explicit(&s->read_after_ms, 0, memory_order_release);
    px__stream_request(s, PX_REQ_RESUME);
}

int px_stream_call(px_stream *s, void (*fn)(px_stream *s, void *arg, void *user), void *arg)
{
    if (!s || !fn)
        return -EINVAL;
    px_call *c = malloc(sizeof(*c));
    if (!c)
        return -ENOMEM;
    *c = (px_call){.fn = fn, .arg = arg};
    /* Once the call is queued the loop may run it and on_close, and free the
     * stream, before the request below: hold it meanwhile. */
    px_stream_retain(s);
    pthread_mutex_lock(&s->lock);
    bool refused = shut_raised(s); /* closed, or px_stream_close/abort called */
    if (!refused) {
        *s->calls_tail = c;
        s->calls_tail = &c->next;
        atomic_fetch_add(&s->ncalls, 1);
    }
    pthread_mutex_unlock(&s->lock);
    if (!refused)
        px__stream_request(s, PX_REQ_CALL);
    px_stream_release(s);
    if (refused) {
        free(c);
        return -EPIPE;
    }
    return 0;
}

void px_stream_pause(px_stream *s, uint64_t delay_ms)
{
    uint64_t until = px__deadline(px_now_ms(), delay_ms);
    uint64_t cur = atomic_load_explicit(&s->read_after_ms, memory_order_relaxed);
    while (cur < until &&
           !atomic_compare_exchange_weak_explicit(&s->read_after_ms, &cur, until,
                                                  memory_order_release, memory_order_relaxed))
        ;
}

void px__stream_received(px_stream *s, const char *data, ssize_t n)
{
    PX_ASSERT_LOOP_THREAD(s->loop);
    if (s->state != PX_ST_OPEN)
        return; /* a late completion: the stream is closing */
    if (n == 0) {
        px__stream_begin_close(s, 0, false);
        return;
    }
    if (n < 0) {
        px__stream_begin_close(s, (int)n, true);
        return;
    }
    if (shut_raised(s))
        return; /* close requested: its request is on the way */
    uint64_t after = atomic_load_explicit(&s->read_after_ms, memory_order_acquire);
    if (busy(s) || (after && after > px_now_ms())) {
        /* A backend that had a receive armed delivered while the stream was
         * paused, or while a px_stream_call runs: hold the bytes back until
         * the pause ends or the call is done. */
        char *copy = malloc((size_t)n + s->kept_len);
        if (!copy) {
            px__stream_begin_close(s, -ENOMEM, true);
            return;
        }
        if (s->kept_len)
            memcpy(copy, s->kept, s->kept_len);
        memcpy(copy + s->kept_len, data, (size_t)n);
        free(s->kept);
        s->kept = copy;
        s->kept_len += (size_t)n;
        s->want_read = true;
        px__schedule(s);
        return;
    }
    if (s->loop->exec.kind == PX_EXEC_INLINE) {
        s->ev_data = (char *)data; /* handler runs before the buffer is reused */
        s->ev_owned = false;
    } else {
        s->ev_data = malloc((size_t)n);
        if (!s->ev_data) {
            px__stream_begin_close(s, -ENOMEM, true);
            return;
        }
        memcpy(s->ev_data, data, (size_t)n);
        s->ev_owned = true;
    }
    s->ev_len = (size_t)n;
    dispatch(s, PX_EV_DATA);
}

/* ------------------------------------------------------------------------ */
/* Send queue                                                                */

/* Under s->lock: moves the whole queue into *out (caller releases). */
static unsigned take_queue_locked(px_stream *s, px_buf ***out)
{
    unsigned n = s->q_len;
    px_buf **q = s->q;
    if (n && s->q_head) {
        /* Rotate so the caller sees a plain array. */
        px_buf **flat = malloc(n * sizeof(*flat));
        if (flat) {
            for (unsigned i = 0; i < n; i++)
                flat[i] = q[(s->q_head + i) & (s->q_cap - 1)];
            *out = flat;
            free(q);
            goto done;
        }
        /* No memory: release in place, under the lock (rare). */
        for (unsigned i = 0; i < n; i++)
            px_buf_release(q[(s->q_head + i) & (s->q_cap - 1)]);
        free(q);
        n = 0;
        *out = NULL;
        goto done;
    }
    *out = q;
done:
    s->q = NULL;
    s->q_cap = s->q_head = s->q_len = 0;
    s->q_off = s->q_bytes = 0;
    return n;
}

static void release_all(px_buf **bufs, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        px_buf_release(bufs[i]);
    free(bufs);
}

int px_stream_send(px_stream *s, px_buf *buf)
{
    if (!s || !buf)
        return -EINVAL;
    size_t len = buf->len;
    pthread_mutex_lock(&s->lock);
    if (shut_raised(s)) {
        pthread_mutex_unlock(&s->lock);
        return -EPIPE;
    }
    if (len == 0) {
        pthread_mutex_unlock(&s->lock);
        return 0;
    }
    if (len > s->q_max || s->q_bytes > s->q_max - len) {
        pthread_mutex_unlock(&s->lock);
        return PX_ESENDQ;
    }
    if (s->q_len == s->q_cap) {
        if (s->q_cap > UINT_MAX / 2 / sizeof(px_buf *)) {
            pthread_mutex_unlock(&s->lock);
            return PX_ESENDQ; /* more entries than memory could ever hold */
        }
        unsigned cap = s->q_cap ? s->q_cap * 2 : 4;
        px_buf **q = malloc(cap * sizeof(*q));
        if (!q) {
            pthread_mutex_unlock(&s->lock);
            return -ENOMEM;
        }
        for (unsigned i = 0; i < s->q_len; i++)
            q[i] = s->q[(s->q_head + i) & (s->q_cap - 1)];
        free(s->q);
        s->q = q;
        s->q_cap = cap;
        s->q_head = 0;
    }
    s->q[(s->q_head + s->q_len) & (s->q_cap - 1)] = px_buf_retain(buf);
    s->q_len++;
    s->q_bytes += len;
    bool request = !s->flush_pending;
    s->flush_pending = true;
    pthread_mutex_unlock(&s->lock);
    if (request)
        px__stream_request(s, PX_REQ_FLUSH);
    return 0;
}

size_t px_stream_queued_bytes(px_stream *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->q_bytes;
    pthread_mutex_unlock(&s->lock);
    return n;
}

int px__stream_iov(px_stream *s, struct iovec *iov, int max)
{
    if (max > PX_IOV_BATCH)
        max = PX_IOV_BATCH;
    pthread_mutex_lock(&s->lock);
    int n = 0;
    for (unsigned i = 0; i < s->q_len && n < max; i++) {
        px_buf *b = s->q[(s->q_head + i) & (s->q_cap - 1)];
        size_t off = i == 0 ? s->q_off : 0;
        iov[n].iov_base = (char *)b->data + off;
        iov[n].iov_len = b->len - off;
        n++;
    }
    pthread_mutex_unlock(&s->lock);
    return n;
}

size_t px__iov_copy(const struct iovec *iov, int n, char *dst, size_t cap)
{
    size_t len = 0;
    for (int i = 0; i < n && len < cap; i++) {
        size_t k = iov[i].iov_len < cap - len ? iov[i].iov_len : cap - len;
        memcpy(dst + len, iov[i].iov_base, k);
        len += k;
    }
    return len;
}

static void finish_close(px_stream *s, bool abortive);

void px__stream_sent(px_stream *s, size_t n)
{
    PX_ASSERT_LOOP_THREAD(s->loop);
    px_buf *done[PX_IOV_BATCH];
    unsigned ndone = 0;
    pthread_mutex_lock(&s->lock);
    s->q_bytes -= n;
    while (n && s->q_len) {
        px_buf *b = s->q[s->q_head];
        size_t left = b->len - s->q_off;
        if (n < left) {
            s->q_off += n;
            break;
        }
        n -= left;
        s->q_off = 0;
        s->q_head = (s->q_head + 1) & (s->q_cap - 1);
        s->q_len--;
        if (ndone == PX_IOV_BATCH) { /* cannot happen with iov batches; stay safe */
            px_buf_release(b);
            continue;
        }
        done[ndone++] = b;
    }
    bool empty = s->q_len == 0;
    if (empty && s->q_cap > 64) { /* give back memory a burst grew */
        free(s->q);
        s->q = NULL;
        s->q_cap = s->q_head = 0;
    }
    pthread_mutex_unlock(&s->lock);
    for (unsigned i = 0; i < ndone; i++)
        px_buf_release(done[i]);
    if (empty && s->state == PX_ST_DRAINING)
        finish_close(s, false);
}

void px__stream_send_failed(px_stream *s, int err)
{
    px__stream_begin_close(s, err, true);
}

/* ------------------------------------------------------------------------ */
/* Closing                                                                   */

static void linger_expired(px_timer *t, void *user)
{
    (void)t;
    px__stream_begin_close(user, -ETIMEDOUT, true);
}

/* OPEN or DRAINING -> CLOSING: the backend closes the descriptor. */
static void finish_close(px_stream *s, bool abortive)
{
    switch (s->state) {
    case PX_ST_OPEN:
    case PX_ST_DRAINING:
        break;
    case PX_ST_CLOSING:
        return; /* an asynchronous close is already under way */
    case PX_ST_NEW:
    case PX_ST_CLOSED:
    case PX_ST_FINAL:
        PX_ASSERT(!"finish_close in NEW, CLOSED or FINAL");
        return;
    }
    cancel_pause(s);
    if (s->linger) {
        px_timer_cancel(s->linger);
        s->linger = NULL;
        px_stream_release(s); /* the timer's reference */
    }
    set_state(s, PX_ST_CLOSING);
    px_loop *loop = s->loop;
    loop->be->stream_close(loop, s, abortive);
}

void px__stream_begin_close(px_stream *s, int cause, bool abortive)
{
    PX_ASSERT_LOOP_THREAD(s->loop);
    switch (s->state) {
    case PX_ST_NEW:    /* the START request is handled first: cannot happen */
    case PX_ST_CLOSED: /* closed already */
    case PX_ST_FINAL:
        return;
    case PX_ST_OPEN:
    case PX_ST_DRAINING:
    case PX_ST_CLOSING:
        break;
    }
    if (atomic_load_explicit(&s->shut, memory_order_acquire) == PX_SHUT_ABORT &&
        cause != -ECANCELED) {
        /* px_stream_abort has returned: whatever else ends the stream
         * first (end of file, an error), it reports the abort. */
        cause = -ECONNABORTED;
        abortive = true;
    }
    if (s->state != PX_ST_OPEN && !abortive)
        return; /* the first close decides, unless this one aborts */
    /* An abort sends nothing more, but the queue is dropped only in
     * px__stream_closed: a send still in flight (io_uring) may be reading
     * the queued buffers until its completion arrives. */
    pthread_mutex_lock(&s->lock);
    raise_shut_locked(s, PX_SHUT_CLOSE);
    bool empty = s->q_len == 0;
    pthread_mutex_unlock(&s->lock);
    s->cause = cause;
    if (abortive || empty) {
        finish_close(s, abortive);
        return;
    }
    /* OPEN, graceful, bytes queued: drain them, for at most linger_ms. */
    px_stream_retain(s);
    if (px_timer_start(s->loop, &s->linger, s->loop->opts.linger_ms, 0, linger_expired, s) !=
        0) {
        s->linger = NULL;
        px_stream_release(s);
        s->cause = -ENOMEM; /* cannot bound the wait: close now */
        finish_close(s, true);
        return;
    }
    set_state(s, PX_ST_DRAINING);
    s->want_flush = true; /* make sure the rest goes out */
    px__schedule(s);
}

void px__stream_closed(px_stream *s)
{
    PX_ASSERT_LOOP_THREAD(s->loop);
    px_buf **dropped = NULL;
    pthread_mutex_lock(&s->lock);
    raise_shut_locked(s, PX_SHUT_CLOSE); /* begin_close did; stated for the reader */
    unsigned n = take_queue_locked(s, &dropped);
    pthread_mutex_unlock(&s->lock);
    release_all(dropped, n);
    s->fd = -1;
    set_state(s, PX_ST_CLOSED);
    if (!busy(s))
        dispatch_close(s);
}

/* Once close or abort has returned, no on_data starts and sends fail. */
static void refuse_more(px_stream *s, px_shut level)
{
    pthread_mutex_lock(&s->lock);
    raise_shut_locked(s, level);
    pthread_mutex_unlock(&s->lock);
}

void px_stream_close(px_stream *s)
{
    refuse_more(s, PX_SHUT_CLOSE);
    px__stream_request(s, PX_REQ_CLOSE);
}

void px_stream_abort(px_stream *s)
{
    refuse_more(s, PX_SHUT_ABORT);
    px__stream_request(s, PX_REQ_ABORT);
}

int px_stream_peer(const px_stream *s, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN];
    unsigned port;
    const void *addr;
    int family = s->peer.sa.sa_family;
    if (family == AF_INET) {
        addr = &s->peer.in4.sin_addr;
        port = ntohs(s->peer.in4.sin_port);
    } else if (family == AF_INET6) {
        addr = &s->peer.in6.sin6_addr;
        port = ntohs(s->peer.in6.sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&s->peer.in6.sin6_addr)) {
            family = AF_INET; /* a dual-stack listener's IPv4 client */
            addr = (const char *)addr + 12;
        }
    } else {
        return s->is_socket ? -EAFNOSUPPORT : -ENOTSOCK;
    }
    if (!inet_ntop(family, addr, host, sizeof(host)))
        return -EINVAL;
    int n = snprintf(buf, len, family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
    if (n < 0 || (size_t)n >= len)
        return -ENOSPC;
    return n;
}

/* ------------------------------------------------------------------------ */
/* Post-mortem                                                               */

#ifdef PX_DEBUG
const char *px__stream_state_name(px_stream_state state)
{
    switch (state) {
    case PX_ST_NEW: return "NEW";
    case PX_ST_OPEN: return "OPEN";
    case PX_ST_DRAINING: return "DRAINING";
    case PX_ST_CLOSING: return "CLOSING";
    case PX_ST_CLOSED: return "CLOSED";
    case PX_ST_FINAL: return "FINAL";
    }
    return "?";
}

int px__stream_describe(const px_stream *s, char *buf, size_t len)
{
    px_stream *m = (px_stream *)s; /* atomics are read through a non-const pointer */
    return snprintf(buf, len,
                    "state %s ev %d cause %d shut %u refs %u req %u queued %d pend %d "
                    "want open %d read %d flush %d after_call %d q_len %u q_bytes %zu "
                    "flush_pending %d calls %u kept %zu read_after %llu (now %llu) "
                    "fd %d be r%d w%d rdhup%d want_r%d want_w%d closing%d ops %u",
                    px__stream_state_name(s->state), (int)s->ev, s->cause,
                    atomic_load(&m->shut), atomic_load(&m->refs), atomic_load(&m->req),
                    s->req_queued, s->pend_queued, s->want_open, s->want_read, s->want_flush,
                    s->after_call, s->q_len, s->q_bytes, s->flush_pending,
                    atomic_load(&m->ncalls), s->kept_len,
                    (unsigned long long)atomic_load(&m->read_after_ms),
                    (unsigned long long)px_now_ms(), s->fd, s->be_readable, s->be_writable,
                    s->be_rdhup, s->be_want_read, s->be_want_write, s->be_closing,
                    (unsigned)s->be_ops);
}
#endif
