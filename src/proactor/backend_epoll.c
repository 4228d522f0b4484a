/*
 * The epoll backend: readiness turned into completions.  Every descriptor is
 * registered once, edge-triggered, for input and output, so steady traffic
 * costs no epoll_ctl; the backend remembers what is readable or writable and
 * performs the receive or send the core asked for as soon as it can, trying
 * the write first and waiting for EPOLLOUT only when the socket is full.
 */
#include "backend.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define EV_BATCH 256

typedef struct epoll_state {
    int epfd;
    int wakefd;
    struct epoll_event events[EV_BATCH];
    struct iovec iov[PX_IOV_BATCH];
    char stage[PX_STAGE_BYTES]; /* small buffers, copied together (px__iov_stage_pays) */
} epoll_state;

static int ep_init(px_loop *loop)
{
    epoll_state *st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    st->epfd = epoll_create1(EPOLL_CLOEXEC);
    st->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int rc = 0;
    if (st->epfd < 0 || st->wakefd < 0) {
        rc = -errno;
    } else {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &loop->wake_io};
        if (epoll_ctl(st->epfd, EPOLL_CTL_ADD, st->wakefd, &ev) < 0)
            rc = -errno;
    }
    if (rc) {
        if (st->epfd >= 0)
            close(st->epfd);
        if (st->wakefd >= 0)
            close(st->wakefd);
        free(st);
        return rc;
    }
    loop->be_data = st;
    return 0;
}

static void ep_fini(px_loop *loop)
{
    epoll_state *st = loop->be_data;
    close(st->epfd);
    close(st->wakefd);
    free(st);
    loop->be_data = NULL;
}

static void ep_wake(px_loop *loop)
{
    epoll_state *st = loop->be_data;
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: the loop will wake. */
    ssize_t r = write(st->wakefd, &one, sizeof(one));
    (void)r;
}

static void do_read(px_loop *loop, px_stream *s)
{
    ssize_t n;
    do
        n = read(s->fd, loop->rbuf, loop->opts.recv_bytes);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        s->be_readable = false;
        s->be_want_read = true;
        return;
    }
    /* A short read drained the socket; a later arrival raises a new edge.
     * A hang-up seen with the data must still be read as end-of-file. */
    if (n > 0 && (size_t)n < loop->opts.recv_bytes && !s->be_rdhup)
        s->be_readable = false;
    px__stream_received(s, loop->rbuf, n < 0 ? -errno : n);
}

static void do_write(px_stream *s)
{
    epoll_state *st = s->loop->be_data;
    struct iovec *iov = st->iov;
    while (s->be_writable && !px__stream_is_closed(s)) {
        int n = px__stream_iov(s, iov, PX_IOV_BATCH);
        if (n == 0) {
            s->be_want_write = false;
            return;
        }
        size_t total = 0;
        for (int i = 0; i < n; i++)
            total += iov[i].iov_len;
        if (px__iov_stage_pays(n, total)) {
            total = px__iov_copy(iov, n, st->stage, sizeof(st->stage));
            iov[0] = (struct iovec){.iov_base = st->stage, .iov_len = total};
            n = 1;
        }
        ssize_t w;
        do {
            if (s->is_socket) {
                struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
                w = sendmsg(s->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
            } else {
                w = writev(s->fd, iov, n);
            }
        } while (w < 0 && errno == EINTR);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                s->be_writable = false;
                s->be_want_write = true;
                return;
            }
            s->be_want_write = false;
            px__stream_send_failed(s, -errno);
            return;
        }
        if ((size_t)w < total) {
            /* The socket buffer is full: EPOLLOUT will say when it drains. */
            s->be_writable = false;
            s->be_want_write = true;
        }
        px__stream_sent(s, (size_t)w);
    }
}

static void ep_wait(px_loop *loop, int timeout_ms)
{
    epoll_state *st = loop->be_data;
    int n = epoll_wait(st->epfd, st->events, EV_BATCH, timeout_ms);
    for (int i = 0; i < n; i++) {
        uint32_t e = st->events[i].events;
        px_io *io = st->events[i].data.ptr;
        switch (io->kind) {
        case PX_IO_WAKE: {
            uint64_t v;
            ssize_t r = read(st->wakefd, &v, sizeof(v));
            (void)r;
            break;
        }
        case PX_IO_WATCH: { /* stopped ones are skipped by px__watch_fire */
            unsigned ready = 0;
            if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                ready |= PX_WATCH_READ;
            if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR))
                ready |= PX_WATCH_WRITE;
            px__watch_fire((px_watch *)io, ready);
            break;
        }
        case PX_IO_LISTENER: {
            px_listener *l = (px_listener *)io;
            /* Bounded, so a connection storm cannot starve existing streams;
             * the listener is level-triggered and reports again. */
            for (int k = 0; k < 64 && l->active && !l->closing; k++) {
                int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd >= 0) {
                    px__listener_accepted(l, fd);
                    continue;
                }
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                    continue;
                px__listener_failed(l, -errno);
                break;
            }
            break;
        }
        case PX_IO_STREAM: {
            px_stream *s = (px_stream *)io;
            if (px__stream_is_closed(s))
                break; /* stale event from this batch */
            if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                s->be_rdhup = true;
            if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                s->be_readable = true;
            if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR))
                s->be_writable = true;
            /* An inline on_close may run in here and drop the loop's
             * reference: hold one of our own. */
            px_stream_retain(s);
            if (s->be_writable && s->be_want_write)
                do_write(s);
            if (s->be_readable && s->be_want_read && s->state == PX_ST_OPEN) {
                s->be_want_read = false;
                if (!px__stream_paused(s))
                    do_read(loop, s);
            }
            px_stream_release(s);
            break;
        }
        }
    }
}

static int ep_listener_start(px_loop *loop, px_listener *l)
{
    epoll_state *st = loop->be_data;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &l->io};
    return epoll_ctl(st->epfd, EPOLL_CTL_ADD, l->fd, &ev) < 0 ? -errno : 0;
}

static void ep_listener_stop(px_loop *loop, px_listener *l)
{
    epoll_state *st = loop->be_data;
    epoll_ctl(st->epfd, EPOLL_CTL_DEL, l->fd, NULL);
}

static int ep_stream_start(px_loop *loop, px_stream *s)
{
    epoll_state *st = loop->be_data;
    struct epoll_event ev = {
        .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
        .data.ptr = &s->io,
    };
    if (epoll_ctl(st->epfd, EPOLL_CTL_ADD, s->fd, &ev) < 0)
        return -errno;
    /* Optimistic until the first EAGAIN says otherwise. */
    s->be_readable = true;
    s->be_writable = true;
    return 0;
}

static void ep_stream_recv(px_loop *loop, px_stream *s)
{
    if (s->be_readable)
        do_read(loop, s);
    else
        s->be_want_read = true;
}

static void ep_stream_send(px_loop *loop, px_stream *s)
{
    (void)loop;
    s->be_want_write = true;
    do_write(s);
}

static void ep_stream_close(px_loop *loop, px_stream *s, bool abortive)
{
    if (s->is_socket) {
        if (abortive) {
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        } else {
            /* Send our FIN after the queued bytes and take what the peer
             * still had in flight, so close() does not turn into a reset
             * that could destroy the last bytes we sent. */
            shutdown(s->fd, SHUT_WR);
            for (int k = 0; k < 4 && read(s->fd, loop->rbuf, loop->opts.recv_bytes) > 0; k++)
                ;
        }
    }
    /* close() removes the registration only when no other descriptor
     * shares the file (dup, fork): remove it explicitly, or its events
     * would point at a freed stream. */
    epoll_state *st = loop->be_data;
    epoll_ctl(st->epfd, EPOLL_CTL_DEL, s->fd, NULL);
    close(s->fd);
    s->be_want_read = s->be_want_write = false;
    px__stream_closed(s);
}

/* Level-triggered, so a descriptor still ready is reported at every wait. */
static int ep_watch_set(px_loop *loop, px_watch *w)
{
    epoll_state *st = loop->be_data;
    uint32_t mask = (w->events & PX_WATCH_READ ? EPOLLIN : 0) |
                    (w->events & PX_WATCH_WRITE ? EPOLLOUT : 0);
    if (!mask) {
        if (w->be_registered)
            epoll_ctl(st->epfd, EPOLL_CTL_DEL, w->fd, NULL);
        w->be_registered = false;
        return 0;
    }
    struct epoll_event ev = {.events = mask, .data.ptr = &w->io};
    int op = w->be_registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(st->epfd, op, w->fd, &ev) < 0)
        return -errno;
    w->be_registered = true;
    return 0;
}

const struct px_backend_ops px__backend_epoll = {
    .name = "epoll",
    .id = PX_BACKEND_EPOLL,
    .init = ep_init,
    .fini = ep_fini,
    .wait = ep_wait,
    .wake = ep_wake,
    .listener_start = ep_listener_start,
    .listener_stop = ep_listener_stop,
    .stream_start = ep_stream_start,
    .stream_recv = ep_stream_recv,
    .stream_send = ep_stream_send,
    .stream_close = ep_stream_close,
    .watch_set = ep_watch_set,
};
