/*
 * Listeners: binding and listening, turning accepted descriptors into streams
 * (TCP_NODELAY, keepalive), and what to do when accepting fails: shed one
 * pending connection with the reserve descriptor when out of descriptors, or
 * pause accepting for a while.  The backend does the accepting; streams are
 * in stream.c.
 */
#include "backend.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PX_ACCEPT_PAUSE_MS 100


/* IPv6 sockets that also take IPv4: the wildcard "::" (every address, like no host at
 * all) and IPv4-mapped addresses (::ffff:a.b.c.d, which are IPv4 addresses). */
static bool dual_stack(const struct addrinfo *ai, bool any)
{
    if (ai->ai_family != AF_INET6)
        return false;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
    return any || IN6_IS_ADDR_UNSPECIFIED(a) || IN6_IS_ADDR_V4MAPPED(a);
}

static int bind_listen(const struct addrinfo *ai, int backlog, bool dual)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0)
        return -errno;
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ai->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, dual ? &zero : &one, sizeof(int));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, backlog) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

static int open_listen_socket(const px_listen_opts *o)
{
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)o->port);
    int backlog = o->backlog > 0 ? o->backlog : SOMAXCONN;
    bool any = !o->host || !*o->host || strcmp(o->host, "::") == 0;
    struct addrinfo hints = {
        .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
        .ai_family = any ? AF_INET6 : AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
    };
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(any ? NULL : o->host, port, &hints, &res);
    if (rc != 0 && any) {
        hints.ai_family = AF_INET; /* no IPv6 on this machine */
        rc = getaddrinfo(NULL, port, &hints, &res);
    }
    if (rc != 0)
        return rc == EAI_SYSTEM ? -errno : (rc == EAI_MEMORY ? -ENOMEM : -EADDRNOTAVAIL);
    int fd = -EADDRNOTAVAIL;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = bind_listen(ai, backlog, dual_stack(ai, any));
        if (fd >= 0)
            break;
    }
    freeaddrinfo(res);
    if (fd == -EAFNOSUPPORT && any) {
        /* IPv6 disabled in this kernel: listen on every IPv4 address. */
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(o->port)};
        struct addrinfo ai4 = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM,
                               .ai_addr = (struct sockaddr *)&sin, .ai_addrlen = sizeof(sin)};
        fd = bind_listen(&ai4, backlog, false);
    }
    return fd;
}

static void listener_start_cb(void *arg) { px__listener_start(arg); }
static void listener_close_cb(void *arg) { px__listener_shutdown(arg); }

int px_listen(px_loop *loop, px_listener **out, const px_listen_opts *opts)
{
    if (!loop || !out || !opts || !opts->handlers.on_data || !opts->handlers.on_close ||
        opts->backlog < 0 || opts->keepalive_s > PX_KEEPALIVE_MAX)
        return -EINVAL;
    px_listener *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    int fd = open_listen_socket(opts);
    if (fd < 0) {
        free(l);
        return fd;
    }
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } addr;
    socklen_t alen = sizeof(addr);
    getsockname(fd, &addr.sa, &alen);
    l->port = ntohs(addr.sa.sa_family == AF_INET6 ? addr.in6.sin6_port : addr.in4.sin_port);
    l->io.kind = PX_IO_LISTENER;
    l->loop = loop;
    l->fd = fd;
    l->h = opts->handlers;
    l->user = opts->user;
    l->sopts = opts->stream_opts;
    l->keepalive_s = opts->keepalive_s;
    l->on_accept_error = opts->on_accept_error;
    if (opts->busy_msg && opts->busy_len) {
        l->busy_msg = malloc(opts->busy_len);
        if (!l->busy_msg) {
            close(fd);
            free(l);
            return -ENOMEM;
        }
        memcpy(l->busy_msg, opts->busy_msg, opts->busy_len);
        l->busy_len = opts->busy_len;
    }
    /* Started on the loop's next pass, so no handler (on_accept_error) runs
     * inside this call. */
    int rc = px_loop_post(loop, listener_start_cb, l);
    if (rc) {
        close(fd);
        free(l->busy_msg);
        free(l);
        return rc;
    }
    *out = l;
    return 0;
}

uint16_t px_listener_port(const px_listener *l) { return l->port; }

void px_listener_close(px_listener *l)
{
    if (!l)
        return;
    /* Never freed in here: the loop may be in the middle of accepting on it
     * (this can be called from on_accept_error).  On the loop thread, stop
     * accepting at once; the socket closes on the next pass. */
    if (px__on_loop(l->loop))
        l->closing = true;
    while (px_loop_post(l->loop, listener_close_cb, l) != 0)
        sched_yield(); /* out of memory: nothing better than to retry */
}

void px__listener_start(px_listener *l)
{
    PX_ASSERT_LOOP_THREAD(l->loop);
    px_loop *loop = l->loop;
    l->next = loop->listeners;
    l->prev = NULL;
    if (loop->listeners)
        loop->listeners->prev = l;
    loop->listeners = l;
    if (loop->destroying)
        return; /* px_loop_destroy closes it, unless a pending close does */
    int rc = loop->be->listener_start(loop, l);
    l->active = rc == 0;
    if (rc && l->on_accept_error)
        l->on_accept_error(l, rc, l->user);
}

void px__listener_shutdown(px_listener *l)
{
    PX_ASSERT_LOOP_THREAD(l->loop);
    px_loop *loop = l->loop;
    if (l->pause)
        px_timer_cancel(l->pause);
    if (l->active)
        loop->be->listener_stop(loop, l);
    if (l->prev)
        l->prev->next = l->next;
    else if (loop->listeners == l)
        loop->listeners = l->next;
    if (l->next)
        l->next->prev = l->prev;
    close(l->fd);
    free(l->busy_msg);
    free(l);
}

void px__listener_accepted(px_listener *l, int fd)
{
    PX_ASSERT_LOOP_THREAD(l->loop);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (l->keepalive_s) {
        int idle = (int)l->keepalive_s, intvl = idle / 10 > 0 ? (int)idle / 10 : 1, cnt = 4;
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    }
    px_stream *s = px__stream_new(l->loop, fd, &l->h, l->user, &l->sopts);
    if (!s) {
        close(fd);
        if (l->on_accept_error)
            l->on_accept_error(l, -ENOMEM, l->user);
        return;
    }
    px__stream_start(s);
}

static void accept_resume(px_timer *t, void *user)
{
    px_listener *l = user;
    px_timer_cancel(t);
    l->pause = NULL;
    px_loop *loop = l->loop;
    l->active = loop->be->listener_start(loop, l) == 0;
}

static void accept_pause(px_listener *l)
{
    px_loop *loop = l->loop;
    if (l->pause)
        return;
    if (l->active)
        loop->be->listener_stop(loop, l);
    l->active = false;
    if (px_timer_start(loop, &l->pause, PX_ACCEPT_PAUSE_MS, 0, accept_resume, l) != 0)
        l->pause = NULL; /* no memory for a timer either: stay paused */
}

/* Out of descriptors: give the reserve back to accept the pending connection
 * and close it at once, so the peer hears a close instead of waiting in the
 * backlog, and the listener does not report readiness forever.  accept()
 * checks for a free descriptor before it looks at the queue, so EMFILE may
 * also mean nothing was pending.  Returns 1 (shed one), 0 (nothing was
 * pending) or -1 (no reserve to give back). */
static int shed_one(px_listener *l)
{
    px_loop *loop = l->loop;
    if (loop->reserve_fd < 0)
        loop->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (loop->reserve_fd < 0)
        return -1;
    close(loop->reserve_fd);
    int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    bool nothing_pending = fd < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    if (fd >= 0) {
        if (l->busy_len) {
            ssize_t w = send(fd, l->busy_msg, l->busy_len, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)w; /* best effort: the socket buffer of a new connection has room */
        }
        close(fd);
    }
    loop->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= 0)
        return 1;
    return nothing_pending ? 0 : -1;
}

void px__listener_failed(px_listener *l, int err)
{
    PX_ASSERT_LOOP_THREAD(l->loop);
    if (err == -EMFILE || err == -ENFILE) {
        int shed = shed_one(l);
        if (shed == 0) {
            /* Out of descriptors, but nobody was turned away.  A readiness
             * backend only reports again when a client arrives; a completion
             * backend would fail again at once, so wait a little. */
            accept_pause(l);
            return;
        }
        if (shed < 0)
            accept_pause(l);
    } else {
        accept_pause(l);
    }
    if (l->on_accept_error)
        l->on_accept_error(l, err, l->user);
}
