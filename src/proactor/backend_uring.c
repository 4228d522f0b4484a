/*
 * The io_uring backend: completion I/O.  One ring per loop, entered only by
 * the loop thread; other threads wake it through an eventfd that the ring
 * reads.  Listeners use multishot accept.  A stream has at most one receive
 * and one send in flight: the receive takes a buffer from a ring of provided
 * buffers only when data arrives (an idle connection holds none), and the
 * send is one sendmsg of everything queued.  Buffers are as long as epoll's
 * reads (opts.recv_bytes): 16 KiB ones measured 20% slower under fan-out.  Closing
 * cancels what is in flight (no shutdown(): the descriptor may be shared) and
 * closes the descriptor once the last completion is in, so every operation
 * completes exactly once.
 *
 * user_data carries a pointer with a tag in its low three bits.  A stream
 * holds a reference for each operation in flight; a listener's accept has a
 * small record of its own that outlives the listener if need be.
 */
#include "backend.h"

#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define UR_SQ_ENTRIES 1024
#define UR_CQ_ENTRIES 16384
#define UR_BUFS 64             /* provided buffers (a power of two), each
                                  opts.recv_bytes long, like epoll's reads */
#define UR_BGID 0
#define UR_IOV PX_IOV_BATCH    /* buffers per sendmsg */

enum { T_WAKE = 1, T_ACCEPT, T_RECV, T_SEND, T_CANCEL, T_WATCH };

typedef struct ur_accept {
    px_listener *l; /* NULL once the listener stopped */
    struct ur_accept *next, *prev;
} ur_accept;

/* One sendmsg in flight per stream.  Its record holds either the iovec array or, for
 * small buffers, a staged copy of their bytes (px__iov_stage_pays), so its size varies:
 * two size classes, each with a cache of spares. */
enum { UR_SMALL, UR_BIG, UR_NCLASS };
#define UR_SMALL_BYTES 1024
#define UR_BIG_BYTES (PX_STAGE_BYTES > UR_IOV * sizeof(struct iovec) \
                          ? PX_STAGE_BYTES : UR_IOV * sizeof(struct iovec))
typedef struct ur_send {
    struct msghdr msg;
    struct ur_send *next;
    unsigned cls;
    struct iovec one; /* describes the staged bytes */
    _Alignas(16) unsigned char data[]; /* UR_SMALL_BYTES or UR_BIG_BYTES */
} ur_send;

typedef struct ur_state {
    struct io_uring ring;
    int wakefd;
    uint64_t wakeval;
    struct io_uring_buf_ring *br;
    char *bufs;
    size_t buf_size;
    ur_send *spare[UR_NCLASS];
    unsigned nspare[UR_NCLASS];
    struct iovec iov[UR_IOV]; /* what px__stream_iov gives, before it is copied */
    ur_accept *accepts; /* every accept record, to free at the end */
} ur_state;

static inline uint64_t ud(void *p, unsigned tag) { return (uint64_t)(uintptr_t)p | tag; }

static struct io_uring_sqe *get_sqe(ur_state *st)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&st->ring);
    while (!sqe) {
        /* The submission queue is full: hand it to the kernel and retry. */
        io_uring_submit(&st->ring);
        sqe = io_uring_get_sqe(&st->ring);
    }
    return sqe;
}

static void arm_wake(ur_state *st)
{
    struct io_uring_sqe *sqe = get_sqe(st);
    io_uring_prep_read(sqe, st->wakefd, &st->wakeval, sizeof(st->wakeval), 0);
    io_uring_sqe_set_data64(sqe, ud(NULL, T_WAKE));
}

/* Gives a buffer back to the kernel's ring. */
static void recycle(ur_state *st, unsigned bid)
{
    io_uring_buf_ring_add(st->br, st->bufs + (size_t)bid * st->buf_size, st->buf_size,
                          (unsigned short)bid, io_uring_buf_ring_mask(UR_BUFS), 0);
    io_uring_buf_ring_advance(st->br, 1);
}

static int fail(px_loop *loop, int rc, const char *why)
{
    snprintf(loop->backend_note, sizeof(loop->backend_note), "%s: %s", why, px_strerror(rc));
    return rc;
}

static void ur_fini(px_loop *loop);

static int ur_init(px_loop *loop)
{
    ur_state *st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    st->wakefd = -1;
    st->buf_size = loop->opts.recv_bytes ? loop->opts.recv_bytes : 64u << 10;
    if (st->buf_size > (1u << 20))
        st->buf_size = 1u << 20; /* provided buffers: a 32-bit length */
    loop->be_data = st;
    struct io_uring_params p = {
        .flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN |
                 IORING_SETUP_TASKRUN_FLAG,
        .cq_entries = UR_CQ_ENTRIES,
    };
    int rc = io_uring_queue_init_params(UR_SQ_ENTRIES, &st->ring, &p);
    if (rc) {
        free(st);
        loop->be_data = NULL;
        return fail(loop, rc, "io_uring_setup failed");
    }
    /* From here on ur_fini can undo whatever was done. */
    const unsigned need = IORING_FEAT_EXT_ARG | IORING_FEAT_NODROP | IORING_FEAT_FAST_POLL;
    if ((p.features & need) != need) {
        ur_fini(loop);
        return fail(loop, -ENOTSUP, "kernel too old (io_uring lacks EXT_ARG/NODROP/FAST_POLL)");
    }
    struct io_uring_probe *probe = io_uring_get_probe_ring(&st->ring);
    static const int ops[] = {IORING_OP_ACCEPT, IORING_OP_RECV, IORING_OP_SENDMSG,
                              IORING_OP_READ, IORING_OP_WRITEV, IORING_OP_ASYNC_CANCEL};
    for (size_t i = 0; probe && i < sizeof(ops) / sizeof(ops[0]); i++) {
        if (!io_uring_opcode_supported(probe, ops[i])) {
            io_uring_free_probe(probe);
            ur_fini(loop);
            return fail(loop, -ENOTSUP, "io_uring lacks an operation we need");
        }
    }
    if (probe)
        io_uring_free_probe(probe);
    else {
        ur_fini(loop);
        return fail(loop, -ENOTSUP, "io_uring cannot be probed");
    }

    /* Provided buffers (5.19): receives take one only when data is there. */
    void *ringmem = NULL;
    if (posix_memalign(&ringmem, 4096, UR_BUFS * sizeof(struct io_uring_buf)) != 0 ||
        !(st->bufs = malloc((size_t)UR_BUFS * st->buf_size))) {
        free(ringmem);
        ur_fini(loop);
        return -ENOMEM;
    }
    st->br = ringmem;
    io_uring_buf_ring_init(st->br);
    struct io_uring_buf_reg reg = {
        .ring_addr = (unsigned long)st->br, .ring_entries = UR_BUFS, .bgid = UR_BGID,
    };
    rc = io_uring_register_buf_ring(&st->ring, &reg, 0);
    if (rc) {
        ur_fini(loop);
        return fail(loop, rc, "no provided buffer rings (kernel older than 5.19)");
    }
    for (unsigned i = 0; i < UR_BUFS; i++)
        io_uring_buf_ring_add(st->br, st->bufs + (size_t)i * st->buf_size, (unsigned)st->buf_size,
                              (unsigned short)i, io_uring_buf_ring_mask(UR_BUFS), (int)i);
    io_uring_buf_ring_advance(st->br, UR_BUFS);

    st->wakefd = eventfd(0, EFD_CLOEXEC);
    if (st->wakefd < 0) {
        rc = -errno;
        ur_fini(loop);
        return rc;
    }
    arm_wake(st);
    snprintf(loop->backend_note, sizeof(loop->backend_note),
             "io_uring (provided buffer ring, multishot accept)");
    return 0;
}

static void ur_fini(px_loop *loop)
{
    ur_state *st = loop->be_data;
    if (!st)
        return;
    io_uring_queue_exit(&st->ring); /* cancels and reaps whatever is left */
    if (st->wakefd >= 0)
        close(st->wakefd);
    free(st->br);
    free(st->bufs);
    for (unsigned c = 0; c < UR_NCLASS; c++) {
        for (ur_send *x = st->spare[c], *next; x; x = next) {
            next = x->next;
            free(x);
        }
    }
    for (ur_accept *a = st->accepts, *next; a; a = next) {
        next = a->next;
        free(a);
    }
    free(st);
    loop->be_data = NULL;
}

static void ur_wake(px_loop *loop)
{
    ur_state *st = loop->be_data;
    uint64_t one = 1;
    ssize_t r = write(st->wakefd, &one, sizeof(one));
    (void)r;
}

/* ------------------------------------------------------------------------ */
/* Listeners                                                                 */

static void accept_free(ur_state *st, ur_accept *a)
{
    if (a->prev)
        a->prev->next = a->next;
    else
        st->accepts = a->next;
    if (a->next)
        a->next->prev = a->prev;
    free(a);
}

static int ur_listener_start(px_loop *loop, px_listener *l)
{
    ur_state *st = loop->be_data;
    ur_accept *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->l = l;
    a->next = st->accepts;
    if (st->accepts)
        st->accepts->prev = a;
    st->accepts = a;
    l->be_ctx = a;
    struct io_uring_sqe *sqe = get_sqe(st);
    /* Blocking sockets: io_uring polls them itself, and O_NONBLOCK ones can
     * fail with a spurious EAGAIN under load. */
    io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, ud(a, T_ACCEPT));
    return 0;
}

static void ur_listener_stop(px_loop *loop, px_listener *l)
{
    ur_state *st = loop->be_data;
    ur_accept *a = l->be_ctx;
    if (!a)
        return;
    a->l = NULL; /* its last completion frees it */
    l->be_ctx = NULL;
    struct io_uring_sqe *sqe = get_sqe(st);
    io_uring_prep_cancel64(sqe, ud(a, T_ACCEPT), 0);
    io_uring_sqe_set_data64(sqe, ud(NULL, T_CANCEL));
}

static void on_accept(px_loop *loop, ur_accept *a, int res, bool more)
{
    ur_state *st = loop->be_data;
    px_listener *l = a->l;
    if (!more) {
        if (l)
            l->be_ctx = NULL;
        accept_free(st, a);
    }
    if (!l) {
        if (res >= 0)
            close(res); /* accepted as the listener stopped */
        return;
    }
    if (res >= 0)
        px__listener_accepted(l, res);
    else if (res != -ECANCELED)
        px__listener_failed(l, res);
    /* Multishot ended (an error, or the kernel's choice): go on accepting
     * unless the listener was stopped, paused or is closing meanwhile. */
    if (!more && l->active && !l->closing && !l->be_ctx && !l->pause)
        if (ur_listener_start(loop, l) != 0)
            l->active = false;
}

/* ------------------------------------------------------------------------ */
/* Streams                                                                   */

static int ur_stream_start(px_loop *loop, px_stream *s)
{
    (void)loop;
    /* See ur_listener_start: io_uring wants blocking descriptors. */
    int fl = fcntl(s->fd, F_GETFL);
    if (fl >= 0 && (fl & O_NONBLOCK))
        fcntl(s->fd, F_SETFL, fl & ~O_NONBLOCK);
    return 0;
}

static void ur_stream_recv(px_loop *loop, px_stream *s)
{
    ur_state *st = loop->be_data;
    struct io_uring_sqe *sqe = get_sqe(st);
    if (s->is_socket)
        io_uring_prep_recv(sqe, s->fd, NULL, (unsigned)st->buf_size, 0);
    else
        io_uring_prep_read(sqe, s->fd, NULL, (unsigned)st->buf_size, (uint64_t)-1);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = UR_BGID;
    io_uring_sqe_set_data64(sqe, ud(px_stream_retain(s), T_RECV));
    s->be_ops++;
}

static const unsigned ur_cache_max[UR_NCLASS] = {256, 16}; /* spare records kept */

static ur_send *send_record(ur_state *st, unsigned cls)
{
    ur_send *x = st->spare[cls];
    if (x) {
        st->spare[cls] = x->next;
        st->nspare[cls]--;
        return x;
    }
    x = malloc(sizeof(*x) + (cls == UR_SMALL ? UR_SMALL_BYTES : UR_BIG_BYTES));
    if (x)
        x->cls = cls;
    return x;
}

static void send_record_free(ur_state *st, ur_send *x)
{
    if (st->nspare[x->cls] < ur_cache_max[x->cls]) {
        x->next = st->spare[x->cls];
        st->spare[x->cls] = x;
        st->nspare[x->cls]++;
    } else {
        free(x);
    }
}

static void ur_stream_send(px_loop *loop, px_stream *s)
{
    ur_state *st = loop->be_data;
    if (s->be_ctx || s->be_closing)
        return; /* one send at a time: its completion sends the rest */
    int n = px__stream_iov(s, st->iov, UR_IOV);
    if (n == 0)
        return;
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += st->iov[i].iov_len;
    bool stage = px__iov_stage_pays(n, total);
    size_t need = stage ? (total < PX_STAGE_BYTES ? total : PX_STAGE_BYTES)
                        : (size_t)n * sizeof(struct iovec);
    ur_send *x = send_record(st, need <= UR_SMALL_BYTES ? UR_SMALL : UR_BIG);
    if (!x) {
        px__stream_send_failed(s, -ENOMEM);
        return;
    }
    struct iovec *iov = (struct iovec *)(void *)x->data;
    if (stage) {
        x->one.iov_base = x->data;
        x->one.iov_len = px__iov_copy(st->iov, n, (char *)x->data, need);
        iov = &x->one;
        n = 1;
    } else {
        memcpy(iov, st->iov, (size_t)n * sizeof(*iov));
    }
    struct io_uring_sqe *sqe = get_sqe(st);
    if (s->is_socket) {
        memset(&x->msg, 0, sizeof(x->msg));
        x->msg.msg_iov = iov;
        x->msg.msg_iovlen = (size_t)n;
        io_uring_prep_sendmsg(sqe, s->fd, &x->msg, MSG_NOSIGNAL);
    } else {
        io_uring_prep_writev(sqe, s->fd, iov, (unsigned)n, (uint64_t)-1);
    }
    io_uring_sqe_set_data64(sqe, ud(px_stream_retain(s), T_SEND));
    s->be_ctx = x;
    s->be_ops++;
}

/* Closes the descriptor once nothing is in flight any more. */
static void close_if_idle(px_stream *s)
{
    if (!s->be_closing || s->be_ops)
        return;
    close(s->fd);
    s->be_closing = false;
    px__stream_closed(s);
}

static void ur_stream_close(px_loop *loop, px_stream *s, bool abortive)
{
    ur_state *st = loop->be_data;
    if (s->is_socket && abortive) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    /* No shutdown(): the descriptor may be shared (dup, fork), and closing
     * the stream must not end the connection for its other holders.  The
     * cancellation ends what is in flight; the queue is already flushed
     * (graceful) or dropped (abortive). */
    s->be_closing = true;
    if (s->be_ops) {
        struct io_uring_sqe *sqe = get_sqe(st);
        io_uring_prep_cancel_fd(sqe, s->fd, IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(sqe, ud(NULL, T_CANCEL));
    }
    close_if_idle(s);
}

static void on_recv(px_loop *loop, px_stream *s, struct io_uring_cqe *cqe)
{
    ur_state *st = loop->be_data;
    s->be_ops--;
    bool has_buf = cqe->flags & IORING_CQE_F_BUFFER;
    unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
    int res = cqe->res;
    if (s->be_closing) {
        close_if_idle(s);
    } else if (res == -ENOBUFS || res == -EAGAIN || res == -EINTR) {
        /* Every buffer busy (they come back within this batch) or a
         * spurious wake-up: ask again. */
        ur_stream_recv(loop, s);
    } else {
        px__stream_received(s, has_buf ? st->bufs + (size_t)bid * st->buf_size : NULL, res);
    }
    if (has_buf)
        recycle(st, bid);
    px_stream_release(s);
}

static void on_send(px_loop *loop, px_stream *s, int res)
{
    ur_state *st = loop->be_data;
    s->be_ops--;
    send_record_free(st, s->be_ctx);
    s->be_ctx = NULL;
    if (s->be_closing) {
        close_if_idle(s);
    } else if (res >= 0) {
        px__stream_sent(s, (size_t)res); /* may start closing */
        if (!s->be_closing && !px__stream_is_closed(s))
            ur_stream_send(loop, s); /* the rest, or what came meanwhile */
    } else if (res == -EAGAIN || res == -EINTR) {
        ur_stream_send(loop, s);
    } else {
        px__stream_send_failed(s, res);
    }
    px_stream_release(s);
}

/* A one-shot poll, armed again after each report: it completes at once while
 * the descriptor is ready, which makes the watch level-triggered.  A change
 * that asks for an event the poll in flight does not cover removes it; its
 * completion then arms one with the new events.  The watch is freed (by
 * px__watches_reap) only once no poll of it is in flight. */
static int ur_watch_set(px_loop *loop, px_watch *w)
{
    ur_state *st = loop->be_data;
    if (w->be_inflight) {
        if (!w->be_removing && (w->stopped || (w->events & ~w->be_armed))) {
            struct io_uring_sqe *sqe = get_sqe(st);
            io_uring_prep_poll_remove(sqe, ud(w, T_WATCH));
            io_uring_sqe_set_data64(sqe, ud(NULL, T_CANCEL));
            w->be_removing = true;
        }
        return 0;
    }
    if (w->stopped || !w->events)
        return 0;
    struct io_uring_sqe *sqe = get_sqe(st);
    io_uring_prep_poll_add(sqe, w->fd, (w->events & PX_WATCH_READ ? POLLIN : 0) |
                                           (w->events & PX_WATCH_WRITE ? POLLOUT : 0));
    io_uring_sqe_set_data64(sqe, ud(w, T_WATCH));
    w->be_inflight = true;
    w->be_armed = w->events;
    return 0;
}

static void on_watch(px_loop *loop, px_watch *w, int res)
{
    w->be_inflight = false;
    w->be_removing = false;
    if (res > 0) {
        unsigned ready = 0;
        if (res & (POLLIN | POLLRDHUP | POLLHUP | POLLERR))
            ready |= PX_WATCH_READ;
        if (res & (POLLOUT | POLLHUP | POLLERR))
            ready |= PX_WATCH_WRITE;
        px__watch_fire(w, ready);
    } else if (res < 0 && res != -ECANCELED) {
        /* The poll itself failed (the descriptor was closed, say): report it
         * as ready, so the application's own read or write sees the error;
         * a closed descriptor is not polled again. */
        px__watch_fire(w, PX_WATCH_READ | PX_WATCH_WRITE);
        if (res == -EBADF)
            return;
    }
    ur_watch_set(loop, w); /* again, with the events asked for now (none if stopped) */
}

/* ThreadSanitizer runs a signal handler only when the thread passes one of
 * its interceptors, and io_uring_enter is not one: a handler that would stop
 * the loop could wait forever.  Under TSan, wake up now and then. */
#if defined(__SANITIZE_THREAD__)
#define UR_MAX_WAIT_MS 100
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UR_MAX_WAIT_MS 100
#endif
#endif

static void ur_wait(px_loop *loop, int timeout_ms)
{
    ur_state *st = loop->be_data;
#ifdef UR_MAX_WAIT_MS
    if (timeout_ms < 0 || timeout_ms > UR_MAX_WAIT_MS)
        timeout_ms = UR_MAX_WAIT_MS;
#endif
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000,
                                   .tv_nsec = (long long)(timeout_ms % 1000) * 1000000};
    io_uring_submit_and_wait_timeout(&st->ring, &cqe, 1, timeout_ms >= 0 ? &ts : NULL, NULL);
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&st->ring, head, cqe)
    {
        seen++;
        uint64_t data = io_uring_cqe_get_data64(cqe);
        void *ptr = (void *)(uintptr_t)(data & ~(uint64_t)7);
        switch (data & 7) {
        case T_WAKE:
            arm_wake(st);
            break;
        case T_ACCEPT:
            on_accept(loop, ptr, cqe->res, cqe->flags & IORING_CQE_F_MORE);
            break;
        case T_RECV:
            on_recv(loop, ptr, cqe);
            break;
        case T_SEND:
            on_send(loop, ptr, cqe->res);
            break;
        case T_WATCH:
            on_watch(loop, ptr, cqe->res);
            break;
        default: /* T_CANCEL: its targets report for themselves */
            break;
        }
    }
    io_uring_cq_advance(&st->ring, seen);
}

const struct px_backend_ops px__backend_uring = {
    .name = "io_uring",
    .id = PX_BACKEND_IO_URING,
    .init = ur_init,
    .fini = ur_fini,
    .wait = ur_wait,
    .wake = ur_wake,
    .listener_start = ur_listener_start,
    .listener_stop = ur_listener_stop,
    .stream_start = ur_stream_start,
    .stream_recv = ur_stream_recv,
    .stream_send = ur_stream_send,
    .stream_close = ur_stream_close,
    .watch_set = ur_watch_set,
};
