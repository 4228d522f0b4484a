/*
 * libproactor: a small completion-based asynchronous I/O library for Linux.
 *
 * A loop (the proactor) owns a backend, a set of timers and a thread-safe way
 * to post work to it.  Two backends sit behind the same API: io_uring (the
 * kernel completes the operations: multishot accept, receives into a ring of
 * provided buffers, the queued buffers in one sendmsg) and epoll (readiness
 * turned into completions inside the library).  PX_BACKEND_AUTO, the
 * default, uses io_uring where the kernel offers and allows it and falls
 * back to epoll otherwise (px_loop_backend_note says which, and why).
 * Listeners deliver accepted connections as streams; a stream delivers the
 * bytes it receives to its handler and sends reference-counted immutable
 * buffers, queued in a bounded per-stream send queue.  Handlers run on an
 * executor: a worker pool (default), a new thread per event, or the loop
 * thread itself.
 *
 * This header is the whole documentation of the API.  Conventions:
 *  - Functions return 0 (or a non-negative count/value) on success and a
 *    negative errno value on failure.  errno is never part of the contract.
 *  - A call that fails leaves nothing behind: no handler runs because of it
 *    and the caller still owns whatever it passed in.
 *  - "Any thread" means the function may be called concurrently from any
 *    thread, including from inside any handler.  "Loop thread" means the
 *    thread inside px_loop_run(), or any single thread while the loop is not
 *    running.
 *  - Handlers are never called from inside the call that caused them.
 *  - Every handle has a create/destroy (or open/close) pair.
 *  - Debug builds of the library (compiled with PX_DEBUG, as the sanitizer
 *    builds are) check these rules where they can: a "loop thread" function
 *    called from another thread while the loop runs, or a broken internal
 *    invariant, aborts with a message naming the check.  Release builds do
 *    not check (such a call is then a data race).
 */
#ifndef PROACTOR_H
#define PROACTOR_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(PX_BUILDING_LIBRARY)
#define PX_API __attribute__((visibility("default")))
#else
#define PX_API
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                   */

/* The version of this header.  The minor number grows with additions to the
 * API; before 1.0 a minor step may also change it incompatibly. */
#define PX_VERSION_MAJOR 0
#define PX_VERSION_MINOR 9
#define PX_VERSION_PATCH 0
#define PX_VERSION_STRINGIFY_(x) #x
#define PX_VERSION_STRINGIFY(x) PX_VERSION_STRINGIFY_(x)
/* "0.9.0" */
#define PX_VERSION                                                                   \
    PX_VERSION_STRINGIFY(PX_VERSION_MAJOR) "." PX_VERSION_STRINGIFY(PX_VERSION_MINOR) "." \
        PX_VERSION_STRINGIFY(PX_VERSION_PATCH)

/* The version of the library actually linked, as PX_VERSION spells it; it
 * differs from this header's PX_VERSION when a program runs against another
 * build of the shared library.  Any thread; the string is static. */
PX_API const char *px_version(void);

typedef struct px_loop px_loop;
typedef struct px_listener px_listener;
typedef struct px_stream px_stream;
typedef struct px_buf px_buf;
typedef struct px_timer px_timer;

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */

/* Returned by px_stream_send() when the buffer would take the stream's send
 * queue past its bound: the peer is not reading fast enough.  The buffer was
 * not queued (the caller keeps its reference); the stream is still open.
 * The usual policy is to drop that reader with px_stream_abort(). */
#define PX_ESENDQ (-ENOBUFS)

/* A human-readable message for a value returned by any px_ function (a
 * negative errno).  Any thread; the string is static. */
PX_API const char *px_strerror(int err);

/* ------------------------------------------------------------------------ */
/* Loop                                                                      */

typedef enum px_backend {
    PX_BACKEND_AUTO = 0, /* best available: io_uring when usable, else epoll */
    PX_BACKEND_EPOLL,
    PX_BACKEND_IO_URING,
} px_backend;

typedef enum px_executor {
    PX_EXEC_POOL = 0, /* fixed worker threads (default: one per CPU) */
    PX_EXEC_THREAD,   /* a new thread per event, ending when its handler returns */
    PX_EXEC_INLINE,   /* on the loop thread: handlers must never block */
} px_executor;

/* Options for px_loop_create().  Zero in any field means its default. */
typedef struct px_loop_opts {
    px_backend backend;
    px_executor executor;
    unsigned threads;        /* pool size; default one per online CPU, max 1024 */
    size_t sendq_bytes;      /* default send-queue bound per stream; 1 MiB */
    size_t recv_bytes;       /* largest chunk handed to on_data; 64 KiB */
    unsigned linger_ms;      /* how long a graceful close may wait for the peer
                                to take queued bytes; 5000 ms */
} px_loop_opts;

/* Creates a loop.  On success *out holds a loop owned by the caller, to be
 * released with px_loop_destroy(); pool workers are already started.
 * opts may be NULL (all defaults).  PX_BACKEND_AUTO tries io_uring and falls
 * back to epoll on any failure (px_loop_backend_note says why); io_uring
 * needs Linux 5.19 or later (multishot accept, provided buffer rings) and
 * must not be blocked by seccomp or kernel.io_uring_disabled.  Any thread.
 * Errors: -EINVAL (bad option value), -ENOTSUP (PX_BACKEND_IO_URING asked
 * for where it is not usable), -ENOMEM, -EMFILE/-ENFILE, or another errno
 * from epoll_create1/eventfd/pthread_create. */
PX_API int px_loop_create(px_loop **out, const px_loop_opts *opts);

/* Runs the loop on the calling thread (which becomes the loop thread) until
 * px_loop_stop().  Returns 0, or -EBUSY if the loop is already running.
 * May be called again after it returns; state (streams, timers) is kept. */
PX_API int px_loop_run(px_loop *loop);

/* Asks px_loop_run() to return after its current iteration.  Any thread, and
 * async-signal-safe (it only stores a flag and writes an eventfd).  A stop
 * requested while the loop is not running makes the next run return at once. */
PX_API void px_loop_stop(px_loop *loop);

/* Destroys a loop that is not running.  Listeners are closed; every open
 * stream is aborted and its on_close handler runs with -ECANCELED (on the
 * executor, as usual) before this returns; pending posts run; timers still
 * armed are dropped, and their handles become invalid.  Workers are joined.
 * No other thread may start new calls on the loop or its handles once this
 * has begun.  Call it from the thread that ran the loop (or created it). */
PX_API void px_loop_destroy(px_loop *loop);

/* The backend and executor the loop actually uses (never AUTO).  Any thread. */
PX_API px_backend px_loop_backend(const px_loop *loop);
PX_API px_executor px_loop_executor(const px_loop *loop);
/* Whether backend could be used here: 0, or a negative errno (-ENOTSUP,
 * -EPERM, ...) with the reason written to why (NUL-terminated, may be NULL).
 * It sets the backend up and tears it down again.  Any thread. */
PX_API int px_backend_probe(px_backend backend, char *why, size_t len);

/* One line saying which backend the loop uses and why, e.g.
 * "epoll (io_uring unavailable: io_uring_setup failed: Operation not
 * permitted)".  Valid while the loop exists.  Any thread. */
PX_API const char *px_loop_backend_note(const px_loop *loop);

/* Worker threads in the pool (0 for the other executors).  Any thread. */
PX_API unsigned px_loop_threads(const px_loop *loop);

/* Names: "auto", "epoll", "io_uring"; "pool", "thread", "inline".  Parsing
 * returns 0 and sets *out, or -EINVAL for an unknown name.  Any thread. */
PX_API const char *px_backend_name(px_backend backend);
PX_API const char *px_executor_name(px_executor executor);
PX_API int px_backend_parse(const char *name, px_backend *out);
PX_API int px_executor_parse(const char *name, px_executor *out);

/* Runs fn(arg) once on the loop thread, soon.  Any thread.  Posts run in the
 * order they were made by one thread; many posts made before the loop wakes
 * cost one wake-up.  A post still pending when the loop is destroyed runs
 * during px_loop_destroy().  Returns 0, or -ENOMEM (fn will not run). */
PX_API int px_loop_post(px_loop *loop, void (*fn)(void *arg), void *arg);

/* ------------------------------------------------------------------------ */
/* Buffers: reference-counted, immutable once shared                         */

/* Creates a buffer holding a copy of data[0..len) with one reference owned by
 * the caller.  len may be 0 (data may then be NULL).  Any thread.  Returns 0,
 * -EINVAL (NULL out, or NULL data with len > 0) or -ENOMEM; on failure *out
 * is left as it was (true of every px_ function with an out parameter). */
PX_API int px_buf_new(px_buf **out, const void *data, size_t len);

/* Creates a buffer of len uninitialised bytes and sets *data to them.  The
 * caller fills them before the buffer is shared (sent or retained by another
 * thread) and never writes them afterwards.  Any thread. -ENOMEM. */
PX_API int px_buf_alloc(px_buf **out, size_t len, void **data);

/* Wraps caller memory without copying.  free_fn(data, ctx) runs exactly once,
 * on whichever thread drops the last reference; data must stay valid and
 * unchanged until then.  free_fn may be NULL.  Any thread.  -ENOMEM (then
 * free_fn is not called and the caller still owns data). */
PX_API int px_buf_wrap(px_buf **out, const void *data, size_t len,
                       void (*free_fn)(const void *data, void *ctx), void *ctx);

/* Adds / drops a reference.  The last release frees the buffer.  Any thread.
 * px_buf_release(NULL) does nothing. */
PX_API px_buf *px_buf_retain(px_buf *buf);
PX_API void px_buf_release(px_buf *buf);

/* The bytes and their length; valid while the caller holds a reference. */
PX_API const void *px_buf_data(const px_buf *buf);
PX_API size_t px_buf_len(const px_buf *buf);

/* ------------------------------------------------------------------------ */
/* Streams                                                                   */

/* A stream's handlers.  All run on the loop's executor, never two of the same
 * stream at once, in the order the events happened:
 *   on_open (optional) first, then on_data any number of times, then on_close
 *   exactly once.  (A stream that closes before it could open, say because
 *   the loop is being destroyed, gets on_close without on_open.)
 * A stream is not read while one of its handlers runs: a slow handler slows
 * its own peer through TCP and nobody else.  Handlers may call any "any
 * thread" function, including px_stream_send/close/abort on their own stream.
 *
 * on_data: bytes[0..len) is valid only until the handler returns.  len > 0.
 *   No on_data begins after px_stream_close() or px_stream_abort() has
 *   returned.
 * on_close: cause is 0 for an orderly close (the peer closed its side, or
 *   px_stream_close() flushed everything), -ECONNABORTED after
 *   px_stream_abort(), -ETIMEDOUT when a graceful close gave up waiting for
 *   the peer to take queued bytes, -ECANCELED when the loop was destroyed,
 *   else the negative errno of the failed read or write (-ECONNRESET,
 *   -EPIPE, ...).  The descriptor is already closed.  After on_close
 *   returns, the library drops its reference to the stream. */
typedef struct px_stream_handlers {
    void (*on_open)(px_stream *s, void *user);
    void (*on_data)(px_stream *s, const char *bytes, size_t len, void *user);
    void (*on_close)(px_stream *s, int cause, void *user);
} px_stream_handlers;

/* Per-stream options.  Zero means the loop's default. */
typedef struct px_stream_opts {
    size_t sendq_bytes; /* bound on bytes queued and not yet written */
} px_stream_opts;

/* Adopts fd, a connected socket or pipe, as a stream: the proactor reads it
 * (unless it is write-only) and runs handlers->on_data with what arrives.  The fd is made non-blocking;
 * on success the stream owns it (closes it) and *out is the stream, valid
 * until its on_close returns (or longer with px_stream_retain()).  handlers
 * is copied; on_data and on_close are required.  opts may be NULL.  Any
 * thread.  Errors: -EINVAL, -ENOMEM, or the errno of fcntl, e.g. -EBADF (the
 * caller then still owns fd).  Registration with the backend happens on the
 * loop thread; if it fails (a regular file cannot be polled, say), the
 * stream closes at once and on_close reports that errno. */
PX_API int px_stream_open(px_loop *loop, px_stream **out, int fd,
                          const px_stream_handlers *handlers, void *user,
                          const px_stream_opts *opts);

/* Queues buf to be written to the stream after everything queued before it.
 * On success the stream takes its own reference to buf (the caller keeps
 * its own) and drops it once the bytes are written or the stream closes; a
 * buffer sent to many streams exists once.  Several queued buffers go out in
 * one writev.  Any thread.  Returns 0, PX_ESENDQ (-ENOBUFS) when the queue
 * would exceed its bound (so a buffer larger than the bound is always
 * refused), or -EPIPE once px_stream_close/abort has been called or the
 * stream has closed.  An empty buffer is accepted and sends nothing.
 * Bytes of one buffer are never interleaved with another's. */
PX_API int px_stream_send(px_stream *s, px_buf *buf);

/* Graceful close: stop reading, write what is queued (waiting at most the
 * loop's linger_ms), then close; on_close follows with 0 (or -ETIMEDOUT).
 * Abortive close: send nothing more and reset the connection; what was
 * queued is dropped (its buffers released) once the stream has closed, since
 * a write already under way may still be reading it; on_close follows with
 * -ECONNABORTED.  Both are requests: they return at once, are
 * safe from any thread and from the stream's own handlers, and may be called
 * any number of times (the first one decides; abort overrides a pending
 * graceful close).  The stream stays valid until its on_close returns. */
PX_API void px_stream_close(px_stream *s);
PX_API void px_stream_abort(px_stream *s);

/* Holds off reading: the stream is not read again before delay_ms from now
 * (the handler running now, if any, still finishes).  Repeated calls keep
 * the latest deadline.  This is how an application rate-limits a peer: its
 * bytes wait in the kernel and TCP slows it down, while nobody else waits.
 * Any thread. */
PX_API void px_stream_pause(px_stream *s, uint64_t delay_ms);

/* Ends a pause (px_stream_pause) now: reading resumes at once.  Any thread. */
PX_API void px_stream_resume(px_stream *s);

/* Runs fn(s, arg, user) through the stream's executor, in order with its
 * handlers: never at the same time as one of them, after on_open (if the
 * stream opened) and before on_close, calls in the order they were made.  This is how work finished
 * elsewhere (an answer from another service, a timer on the loop thread)
 * comes back to the stream's own context.  Reading and sending go on
 * meanwhile (calls and reads take turns; bytes that arrive while a call runs
 * wait for it to return) unless the stream is paused.  Any
 * thread.  Returns 0 (fn will run exactly once, before on_close, even if the
 * stream closes meanwhile), -EPIPE once px_stream_close/abort has been called
 * or the stream has closed (fn will never run), -EINVAL or -ENOMEM. */
PX_API int px_stream_call(px_stream *s, void (*fn)(px_stream *s, void *arg, void *user),
                          void *arg);

/* From inside s's own on_data only (on the thread running it): the last n
 * bytes of this chunk were not used; deliver them again, before anything new,
 * at the stream's next read (after a pause, if one is set).  With
 * px_stream_pause this lets an application stop mid-chunk, for instance to
 * enforce a rate, without losing input or holding it itself.  n larger than
 * the chunk counts as the whole chunk.  Returns 0, -ENOMEM (nothing kept: the
 * bytes count as used), or -EINVAL when s is NULL or the call is not made
 * from s's on_data (from another handler, another stream's on_data, or
 * another thread): nothing is kept. */
PX_API int px_stream_keep(px_stream *s, size_t n);

/* Keeps the stream's memory valid beyond on_close (for instance while another
 * thread iterates over a list of streams); every retain needs one release.
 * Any thread.  A released stream must not be used again. */
PX_API px_stream *px_stream_retain(px_stream *s);
PX_API void px_stream_release(px_stream *s);

/* The user pointer passed to every handler.  set is meant for on_open (which
 * happens before every other handler of the stream); get is any thread. */
PX_API void px_stream_set_user(px_stream *s, void *user);
PX_API void *px_stream_user(const px_stream *s);

/* Bytes queued and not yet written (a snapshot).  Any thread. */
PX_API size_t px_stream_queued_bytes(px_stream *s);

/* The peer's address as text ("127.0.0.1:40000", "[::1]:40000"), written to
 * buf (NUL-terminated).  Returns the length, -ENOTSOCK for a pipe,
 * -ENOSPC when len is too small.  Any thread. */
PX_API int px_stream_peer(const px_stream *s, char *buf, size_t len);

/* ------------------------------------------------------------------------ */
/* Listeners                                                                 */

#define PX_KEEPALIVE_MAX 32767

typedef struct px_listen_opts {
    const char *host;   /* NULL, "" or "::": every address, IPv6 and IPv4
                           (falls back to IPv4 only where IPv6 is off);
                           "0.0.0.0": every IPv4 address; else a numeric
                           address (::ffff:a.b.c.d is the IPv4 a.b.c.d) or a
                           name */
    uint16_t port;      /* 0 picks a free port: see px_listener_port() */
    int backlog;        /* 0: SOMAXCONN */
    px_stream_handlers handlers; /* for every accepted stream */
    void *user;         /* each accepted stream's initial user pointer */
    px_stream_opts stream_opts;
    /* TCP keepalive for accepted sockets: first probe after keepalive_s idle
     * seconds, so peers that vanished without a FIN or RST are noticed.
     * 0: the system default (usually off).  At most PX_KEEPALIVE_MAX (Linux's
     * limit), else px_listen fails with -EINVAL. */
    unsigned keepalive_s;
    /* Written (best effort, without blocking) to a connection shed for want
     * of descriptors, just before it is closed.  May be NULL. */
    const char *busy_msg;
    size_t busy_len;
    /* Optional, on the loop thread: accepting failed with err (-EMFILE and
     * -ENFILE mean out of descriptors: one pending connection was shed, that
     * is accepted and closed at once, and accepting goes on; other errors
     * pause accepting for 100 ms).  Lets the application log it. */
    void (*on_accept_error)(px_listener *l, int err, void *user);
} px_listen_opts;

/* Binds and listens now (so errors are returned here) and starts accepting
 * on the loop's next pass (SO_REUSEADDR; every accepted socket gets
 * TCP_NODELAY).  Each accepted connection becomes a stream with
 * opts->handlers.  Any thread.  On success *out is owned by the caller and
 * released with px_listener_close().  Errors: -EINVAL, -ENOMEM, or the errno
 * of getaddrinfo (as -EADDRNOTAVAIL) / socket / bind (-EADDRINUSE,
 * -EACCES) / listen. */
PX_API int px_listen(px_loop *loop, px_listener **out, const px_listen_opts *opts);

/* The port actually bound (useful with port 0).  Any thread. */
PX_API uint16_t px_listener_port(const px_listener *l);

/* Stops accepting and closes the listening socket (soon, on the loop thread);
 * accepted streams are not affected.  Any thread; the handle is invalid
 * afterwards. */
PX_API void px_listener_close(px_listener *l);

/* ------------------------------------------------------------------------ */
/* Readiness watches                                                         */

/* For a descriptor that the application (or a client library such as hiredis)
 * reads and writes itself: fn(w, ready, user) runs on the loop thread when fd
 * is ready for an event asked for, and again at each later pass while it stays
 * ready (level-triggered), until the events change or the watch stops.
 * ready holds PX_WATCH_READ and/or PX_WATCH_WRITE; an error or hang-up on fd
 * counts as both (the next read or write reports it).  The watch never reads,
 * writes or closes fd.
 *
 * Loop thread only (a timer, a px_loop_post function, an inline handler or
 * a watch callback), or any thread before the loop first runs: px_watch_start
 * returns -EPERM elsewhere.  Errors: -EINVAL, -ENOMEM, or the errno of
 * registering fd (-EPERM for a regular file). */
typedef struct px_watch px_watch;
#define PX_WATCH_READ 1u
#define PX_WATCH_WRITE 2u
PX_API int px_watch_start(px_loop *loop, px_watch **out, int fd, unsigned events,
                          void (*fn)(px_watch *w, unsigned ready, void *user), void *user);
/* Changes the events watched (0: none for now).  Loop thread only.  Returns 0,
 * or the errno of changing the registration (the watch then reports nothing
 * until a later change succeeds). */
PX_API int px_watch_set(px_watch *w, unsigned events);
/* The events watched now. */
PX_API unsigned px_watch_events(const px_watch *w);
/* Stops the watch and releases it: fn does not run again, even for readiness
 * already seen in this pass.  Also from inside fn.  Loop thread only.
 * Watches still running when the loop is destroyed are released with it.
 * Stop a watch before closing its descriptor: the number may be reused at once. */
PX_API void px_watch_stop(px_watch *w);

/* ------------------------------------------------------------------------ */
/* Timers                                                                    */

/* Starts a timer that calls fn(t, user) on the loop thread after delay_ms,
 * then every period_ms if period_ms > 0.  Any thread.  Callbacks must not
 * block.  If out is NULL the timer must be one-shot (period_ms == 0) and is
 * freed after it fires.  Otherwise *out is owned by the caller, who must call
 * px_timer_cancel() exactly once, also after a one-shot timer has fired.
 * Errors: -EINVAL, -ENOMEM (fn will not run). */
PX_API int px_timer_start(px_loop *loop, px_timer **out, uint64_t delay_ms,
                          uint64_t period_ms,
                          void (*fn)(px_timer *t, void *user), void *user);

/* Cancels the timer and releases the caller's handle.  No callback runs
 * after this returns: from another thread it waits for a callback already
 * running to return (so do not call it from another thread while holding a
 * lock that the callback takes).  Any thread, including the timer's own
 * callback. */
PX_API void px_timer_cancel(px_timer *t);

/* Milliseconds of CLOCK_MONOTONIC; the clock timers use.  Any thread. */
PX_API uint64_t px_now_ms(void);

#ifdef __cplusplus
}
#endif
#endif /* PROACTOR_H */
