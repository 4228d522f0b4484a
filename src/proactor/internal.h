/*
 * Private definitions shared by the files of libproactor: the loop, stream,
 * listener and timer structures, and the calls the core files make to each
 * other.  Nothing here is exported (the library is built with hidden
 * visibility); the backend table lives in backend.h.
 */
#ifndef PX_INTERNAL_H
#define PX_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4, strerrordesc_np, memrchr */
#endif

#include "proactor.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/uio.h>

struct px_backend_ops;

/* Debug checks.  With PX_DEBUG (the sanitizer and fuzz builds; see the
 * Makefile) a broken invariant aborts with its text and place; without it
 * the condition is not evaluated (but still compiled, so it cannot rot). */
#ifdef PX_DEBUG
__attribute__((noreturn, cold)) void px__assert_fail(const char *what, const char *file,
                                                     int line, const char *func);
#define PX_ASSERT(cond) \
    ((cond) ? (void)0 : px__assert_fail(#cond, __FILE__, __LINE__, __func__))
#else
#define PX_ASSERT(cond) ((void)(0 && (cond)))
#endif
/* "Loop thread" (proactor.h): the thread inside px_loop_run, or any one
 * thread while the loop is not running (which cannot be checked). */
#define PX_ASSERT_LOOP_THREAD(loop) PX_ASSERT(px__loop_thread_ok(loop))

/* What an epoll data pointer (or io_uring user_data) designates. */
typedef enum px_io_kind { PX_IO_WAKE, PX_IO_LISTENER, PX_IO_STREAM, PX_IO_WATCH } px_io_kind;
typedef struct px_io {
    px_io_kind kind;
} px_io;

/* A readiness watch (watch.c).  Loop thread only.  Stopped watches stay on the
 * loop's list until px__watches_reap frees them after the backend's batch
 * (epoll) or once their last poll has completed (io_uring). */
struct px_watch {
    px_io io;
    px_loop *loop;
    int fd;
    unsigned events;  /* PX_WATCH_READ | PX_WATCH_WRITE asked for now */
    bool stopped;
    void (*fn)(px_watch *w, unsigned ready, void *user);
    void *user;
    struct px_watch *prev, *next; /* loop->watches */
    /* Backend state. */
    bool be_registered; /* epoll: in the interest list */
    bool be_inflight;   /* io_uring: a poll is in flight */
    bool be_removing;   /* io_uring: its removal is asked for */
    unsigned be_armed;  /* io_uring: the events of the poll in flight */
};

/* Runs w's callback with ready (masked by what it asks for now), unless it
 * has stopped. */
void px__watch_fire(px_watch *w, unsigned ready);
/* Frees stopped watches that nothing refers to any more; all of them when
 * the loop is being destroyed. */
void px__watches_reap(px_loop *loop, bool all);

struct px_buf {
    atomic_uint refs;
    size_t len;
    const char *data;
    void (*free_fn)(const void *data, void *ctx);
    void *ctx;
    char bytes[]; /* the copy, for px_buf_new/px_buf_alloc */
};

/* A stream's life, loop thread only (px_stream.state).  The transition table,
 * and which thread may do what, is at the top of stream.c. */
typedef enum px_stream_state {
    PX_ST_NEW,      /* created; registration with the backend requested */
    PX_ST_OPEN,     /* registered: read when asked, written when bytes are queued */
    PX_ST_DRAINING, /* graceful close: not read; the queue goes out, bounded by linger */
    PX_ST_CLOSING,  /* the backend is closing the descriptor (cancelling what is in flight) */
    PX_ST_CLOSED,   /* descriptor closed, queue dropped; calls and on_close still to run */
    PX_ST_FINAL,    /* on_close dispatched; the stream leaves the loop when it returns */
} px_stream_state;

/* How far px_stream_close/abort (or the loop closing the stream) has gone, as
 * every thread sees it (px_stream.shut).  Only rises; written under
 * px_stream.lock, so a send or call that saw NONE was queued before the queue
 * was looked at for closing. */
typedef enum px_shut {
    PX_SHUT_NONE,  /* sends and calls accepted, on_data delivered */
    PX_SHUT_CLOSE, /* closing: sends and calls refused (-EPIPE), no on_data starts */
    PX_SHUT_ABORT, /* as CLOSE, and px_stream_abort was called: the close reports it */
} px_shut;

/* The event a stream's executor runs (px_stream.ev); PX_EV_NONE when it runs
 * none.  At most one at a time: a stream's handlers never overlap. */
typedef enum px_event {
    PX_EV_NONE,
    PX_EV_OPEN,
    PX_EV_DATA,
    PX_EV_CLOSE,
    PX_EV_CALL, /* px_stream_call: the first of s->calls */
} px_event;

/* A px_stream_call waiting for its turn. */
typedef struct px_call {
    void (*fn)(px_stream *s, void *arg, void *user);
    void *arg;
    struct px_call *next;
} px_call;

/* Requests other threads make of a stream's loop, as bits in px_stream.req. */
enum {
    PX_REQ_START = 1u << 0, /* register with the backend (px_stream_open) */
    PX_REQ_FLUSH = 1u << 1, /* the send queue got data */
    PX_REQ_CLOSE = 1u << 2, /* px_stream_close */
    PX_REQ_ABORT = 1u << 3, /* px_stream_abort */
    PX_REQ_DONE = 1u << 4,  /* the executor finished the stream's event */
    PX_REQ_CALL = 1u << 5,  /* px_stream_call queued a call */
    PX_REQ_RESUME = 1u << 6, /* px_stream_resume */
};

struct px_stream {
    px_io io; /* first: epoll data points here */
    px_loop *loop;
    int fd;
    atomic_uint refs;
    px_stream_handlers h;
    _Atomic(void *) user;
    bool is_socket;    /* set at creation, then read-only */
    bool can_read;     /* not a write-only descriptor; set at creation */

    /* Cross-thread requests: bits set with atomic OR; the stream sits on the
     * loop's request list at most once (req_queued, under loop->lock). */
    atomic_uint req;
    px_stream *req_next;
    bool req_queued;
    atomic_uint shut; /* px_shut: written under lock, read by any thread */

    /* Send queue: a ring of buffer references, under lock.  Other threads
     * append; only the loop thread consumes. */
    pthread_mutex_t lock;
    px_buf **q;
    unsigned q_cap, q_head, q_len;
    size_t q_off;   /* bytes of q[q_head] already written */
    size_t q_bytes; /* bytes queued and not yet written */
    size_t q_max;
    bool flush_pending; /* a FLUSH request is on its way to the loop */
    px_call *calls, **calls_tail; /* px_stream_call, in order (refused once shut) */
    atomic_uint ncalls; /* calls queued, read without the lock by the loop */

    /* Loop thread only. */
    px_stream_state state;
    px_event ev;       /* the event with the executor (none: the stream is idle) */
    int cause;         /* for on_close */
    bool want_open;    /* on_open still to be dispatched */
    bool want_read;    /* read when idle */
    bool want_flush;   /* queue has data to write */
    bool after_call;   /* the last event was a call: reading goes first */
    bool pend_queued;  /* on loop->pend list */
    /* Handed to the executor with ev, back with PX_REQ_DONE. */
    px_call *ev_call;  /* for PX_EV_CALL */
    char *ev_data;
    size_t ev_len;
    bool ev_owned;     /* ev_data is a heap copy the executor frees */
    /* Loop thread, and px_stream_keep inside on_data (the loop leaves them
     * alone while ev is PX_EV_DATA). */
    char *kept;        /* px_stream_keep: bytes to deliver before reading */
    size_t kept_len;
    px_stream *pend_next;
    px_stream *exec_next; /* executor queue */
    px_stream *prev, *next; /* loop->streams */
    px_timer *linger;
    px_timer *pause;               /* resumes reading after px_stream_pause */
    _Atomic uint64_t read_after_ms; /* px_stream_pause deadline (px_now_ms) */

    /* Backend state (loop thread only). */
    bool be_readable, be_writable, be_rdhup, be_want_read, be_want_write;
    bool be_closing;   /* io_uring: closing once be_ops reaches 0 */
    uint8_t be_ops;    /* io_uring: operations in flight */
    void *be_ctx;      /* io_uring: the send in flight */

    /* Peer address, kept so px_stream_peer never touches the descriptor. */
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } peer;
};

/* For backends: the descriptor is closed (nothing more to read or write). */
static inline bool px__stream_is_closed(const px_stream *s)
{
    switch (s->state) {
    case PX_ST_NEW:
    case PX_ST_OPEN:
    case PX_ST_DRAINING:
    case PX_ST_CLOSING:
        return false;
    case PX_ST_CLOSED:
    case PX_ST_FINAL:
        return true;
    }
    return true;
}

struct px_listener {
    px_io io;
    px_loop *loop;
    int fd;
    uint16_t port;
    bool active;       /* registered with the backend */
    bool closing;      /* px_listener_close called on the loop thread */
    px_stream_handlers h;
    void *user;
    px_stream_opts sopts;
    unsigned keepalive_s;
    char *busy_msg;
    size_t busy_len;
    void (*on_accept_error)(px_listener *l, int err, void *user);
    px_timer *pause; /* retry timer while accepting is paused */
    void *be_ctx;    /* backend state (io_uring: the accept operation) */
    px_listener *prev, *next;
};

struct px_timer {
    px_loop *loop;
    uint64_t due_ms;
    uint64_t period_ms;
    void (*fn)(px_timer *t, void *user);
    void *user;
    atomic_uint refs;      /* caller's handle + the loop's heap entry */
    atomic_bool cancelled;
    unsigned heap_idx;     /* index in loop->heap, or UINT_MAX */
    uint64_t seq;          /* tie-break: equal deadlines fire in start order */
};

typedef struct px_post {
    void (*fn)(void *arg);
    void *arg;
    struct px_post *next;
} px_post;

typedef struct px_exec {
    px_executor kind;
    unsigned nthreads;
    pthread_t *threads;
    pthread_mutex_t lock;
    pthread_cond_t cond;      /* workers wait for work */
    pthread_cond_t idle_cond; /* destroy waits for per-event threads */
    px_stream *head, *tail;   /* pool queue */
    unsigned live;            /* running per-event threads */
    pthread_t *done;          /* per-event threads finished and not yet joined */
    unsigned ndone, done_cap;
    bool stopping;
} px_exec;

struct px_loop {
    const struct px_backend_ops *be;
    void *be_data;
    px_backend backend;
    char backend_note[160]; /* which backend, and why (px_loop_backend_note) */
    px_loop_opts opts;
    px_io wake_io;

    atomic_bool stop;
    atomic_bool running;
    _Atomic(pthread_t) thread; /* valid while running */
    atomic_bool in_run;
    bool destroying;

    /* Cross-thread state, under lock. */
    pthread_mutex_t lock;
    px_post *posts, *posts_tail;
    px_stream *reqs, *reqs_tail;
    bool wake_pending;
    px_timer **heap;
    unsigned heap_len, heap_cap;
    uint64_t timer_seq;
    px_timer *timer_running;     /* whose callback runs now */
    pthread_cond_t timer_done;   /* signalled when it returns */

    /* Loop thread only. */
    px_stream *pend, *pend_tail;
    px_watch *watches;      /* every readiness watch, stopped ones included */
    unsigned watches_stopped; /* stopped and not yet freed */
    px_stream *streams;     /* every registered stream */
    px_listener *listeners; /* every active listener */
    char *rbuf;             /* read scratch, opts.recv_bytes */
    int reserve_fd;         /* spare descriptor for EMFILE shedding */
    bool self_posted;       /* the loop thread posted to itself */
#ifdef PX_DEBUG
    /* For post-mortem reports (a debugger, the session fuzz target's stall report):
     * the timeout of the backend wait under way, and how many waits there were.
     * Debug builds only: they cost two atomic writes per pass. */
    _Atomic int wait_timeout;  /* -2: not waiting */
    atomic_ulong waits;
#endif

    px_exec exec;
};

/* loop.c */
bool px__on_loop(const px_loop *loop);
/* Not running, or running on this thread (PX_ASSERT_LOOP_THREAD). */
bool px__loop_thread_ok(const px_loop *loop);
void px__wake(px_loop *loop);
void px__stream_request(px_stream *s, unsigned bits);
void px__schedule(px_stream *s);

/* stream.c (loop thread unless noted) */
px_stream *px__stream_new(px_loop *loop, int fd, const px_stream_handlers *h,
                          void *user, const px_stream_opts *opts);
void px__stream_start(px_stream *s);
void px__stream_handle_requests(px_stream *s, unsigned bits);
void px__stream_progress(px_stream *s);
/* For backends about to read on readiness: true when px_stream_pause holds
 * the stream (the core then reads it when the pause ends). */
bool px__stream_paused(px_stream *s);
void px__stream_begin_close(px_stream *s, int cause, bool abortive);
void px__stream_event_done(px_stream *s);
/* Called by backends. */
void px__stream_received(px_stream *s, const char *data, ssize_t n);
/* Most queued buffers handed to one write system call. */
#ifndef PX_IOV_BATCH
#define PX_IOV_BATCH 1024 /* UIO_MAXIOV: more buffers per call, fewer calls and segments */
#endif
int px__stream_iov(px_stream *s, struct iovec *iov, int max);
/* Many small buffers cost the kernel more per iovec segment than a user-space copy
 * costs us (measured, 64-byte lines with epoll: 118-129 -> 81-85 ns of server CPU per delivery), so
 * backends write them from one contiguous block of up to PX_STAGE_BYTES instead. */
#define PX_STAGE_BYTES 65536
#define PX_STAGE_AVG 512 /* stage when the buffers average fewer bytes than this */
static inline bool px__iov_stage_pays(int n, size_t total)
{
    return n > 1 && total < (size_t)n * PX_STAGE_AVG;
}
/* Copies the first min(total, cap) bytes described by iov into dst; returns the count. */
size_t px__iov_copy(const struct iovec *iov, int n, char *dst, size_t cap);
void px__stream_sent(px_stream *s, size_t n);
void px__stream_send_failed(px_stream *s, int err);
void px__stream_closed(px_stream *s);
#ifdef PX_DEBUG
/* One line of the stream's state for post-mortem reports, read without
 * locks (racy by design: for a stuck loop).  Returns snprintf's count. */
int px__stream_describe(const px_stream *s, char *buf, size_t len);
const char *px__stream_state_name(px_stream_state state);
#endif

/* listener.c (loop thread) */
void px__listener_accepted(px_listener *l, int fd);
void px__listener_failed(px_listener *l, int err);
void px__listener_start(px_listener *l);
void px__listener_shutdown(px_listener *l);

/* timer.c */
/* now + delay_ms, saturating instead of wrapping. */
static inline uint64_t px__deadline(uint64_t now, uint64_t delay_ms)
{
    return delay_ms > UINT64_MAX - now ? UINT64_MAX : now + delay_ms;
}
int64_t px__timers_timeout_ms(px_loop *loop); /* -1: none; under no lock */
void px__timers_run(px_loop *loop);
void px__timers_drop(px_loop *loop);

/* executor.c */
int px__exec_init(px_loop *loop);
void px__exec_submit(px_loop *loop, px_stream *s);
void px__exec_fini(px_loop *loop);
void px__exec_run_event(px_stream *s);
/* Whether this thread is inside s's on_data (px_stream_keep is valid only there). */
bool px__exec_in_on_data(const px_stream *s);

/* buf.c */
static inline unsigned px__refs_dec(atomic_uint *r)
{
    return atomic_fetch_sub_explicit(r, 1, memory_order_acq_rel) - 1;
}

#endif
