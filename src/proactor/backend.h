/*
 * The backend table: the only way the core reaches the operating system's
 * I/O interface.  One const instance per backend file: backend_uring.c
 * (io_uring, a true completion interface) and backend_epoll.c (readiness
 * turned into completions).  loop.c picks one at px_loop_create: the one
 * asked for, or for PX_BACKEND_AUTO io_uring, falling back to epoll when
 * io_uring cannot be set up here (too old a kernel, seccomp, the
 * io_uring_disabled sysctl).  The core never knows which one it holds.
 *
 * Every function runs on the loop thread (wake excepted).  Completions come
 * back through the px__stream_* and px__listener_* calls in internal.h, never
 * from inside the call that asked for them unless the table says so.
 */
#ifndef PX_BACKEND_H
#define PX_BACKEND_H

#include "internal.h"

struct px_backend_ops {
    const char *name;
    px_backend id;
    /* Set up loop->be_data and the wake-up channel; 0 or -errno
     * (-ENOTSUP/-EPERM/-ENOSYS mean "not usable here"). */
    int (*init)(px_loop *loop);
    void (*fini)(px_loop *loop);
    /* Wait up to timeout_ms (-1: forever, 0: poll) and deliver what
     * completed. */
    void (*wait)(px_loop *loop, int timeout_ms);
    /* Interrupt wait from any thread or a signal handler. */
    void (*wake)(px_loop *loop);

    /* Start / stop delivering accepted descriptors through
     * px__listener_accepted / px__listener_failed. */
    int (*listener_start)(px_loop *loop, px_listener *l);
    void (*listener_stop)(px_loop *loop, px_listener *l);

    /* Register a stream's descriptor; 0 or -errno. */
    int (*stream_start)(px_loop *loop, px_stream *s);
    /* Receive once: px__stream_received(s, bytes, n>0 | 0 at EOF | -errno).
     * May complete before returning. */
    void (*stream_recv)(px_loop *loop, px_stream *s);
    /* Write what px__stream_iov gives, reporting with px__stream_sent and
     * px__stream_send_failed, until the queue is empty or the socket is
     * full.  May complete before returning. */
    void (*stream_send)(px_loop *loop, px_stream *s);
    /* Cancel what is pending and close the descriptor (abortive: reset the
     * connection), then px__stream_closed(s), possibly before returning. */
    void (*stream_close)(px_loop *loop, px_stream *s, bool abortive);

    /* Make the backend watch w->fd for w->events (none once w->stopped),
     * reporting readiness through px__watch_fire; 0 or -errno (first call
     * only: a descriptor that cannot be watched). */
    int (*watch_set)(px_loop *loop, px_watch *w);
};

extern const struct px_backend_ops px__backend_epoll;
extern const struct px_backend_ops px__backend_uring;

#endif
