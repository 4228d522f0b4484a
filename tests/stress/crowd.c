/* Stress-test clients (crowd.h). */
#include "crowd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define LOG_TAG UINT32_MAX

bool stress_long(void)
{
    const char *e = getenv("ST_STRESS");
    return e && strcmp(e, "long") == 0;
}

long stress_n(long short_n, long long_n)
{
    return stress_long() ? long_n : short_n;
}

long stress_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}

void crowd_init(crowd *c, h_server *srv, crowd_line_fn on_line, void *ctx)
{
    memset(c, 0, sizeof(*c));
    c->srv = srv;
    c->on_line = on_line;
    c->ctx = ctx;
    c->ep = epoll_create1(EPOLL_CLOEXEC);
    if (c->ep < 0) {
        perror("epoll_create1");
        abort();
    }
    if (srv && srv->proc.err.fd >= 0) {
        /* Whatever the harness had buffered of the log is old news (the banner phase). */
        fcntl(srv->proc.err.fd, F_SETFL, fcntl(srv->proc.err.fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = LOG_TAG};
        epoll_ctl(c->ep, EPOLL_CTL_ADD, srv->proc.err.fd, &ev);
    }
}

void crowd_free(crowd *c)
{
    for (int i = 0; i < c->n; i++) {
        if (c->m[i].fd >= 0)
            close(c->m[i].fd);
        free(c->m[i].rx);
    }
    free(c->m);
    if (c->srv && c->srv->proc.err.fd >= 0)
        epoll_ctl(c->ep, EPOLL_CTL_DEL, c->srv->proc.err.fd, NULL);
    close(c->ep);
    c->m = NULL;
    c->n = c->cap = 0;
}

int crowd_connect(crowd *c, int rcvbuf, const char *src_ip)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->m = realloc(c->m, (size_t)c->cap * sizeof(*c->m));
        if (!c->m)
            abort();
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (src_ip) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        inet_pton(AF_INET, src_ip, &src.sin_addr);
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->srv->port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    int i = c->n++;
    c->m[i] = (member){.fd = fd};
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i};
    epoll_ctl(c->ep, EPOLL_CTL_ADD, fd, &ev);
    return i;
}

static void member_line(crowd *c, int i, const char *line, size_t len)
{
    member *m = &c->m[i];
    m->lines++;
    size_t keep = len < sizeof(m->last) - 1 ? len : sizeof(m->last) - 1;
    memcpy(m->last, line, keep);
    m->last[keep] = '\0';
    static const char welcome[] = "*** Welcome to st_proactor, ";
    if (!m->nick[0] && len > sizeof(welcome) - 1 &&
        memcmp(line, welcome, sizeof(welcome) - 1) == 0) {
        const char *name = line + sizeof(welcome) - 1;
        const char *bang = memchr(name, '!', len - (sizeof(welcome) - 1));
        if (bang && bang - name < (long)sizeof(m->nick))
            memcpy(m->nick, name, (size_t)(bang - name));
    } else if (!m->welcomed && len >= 16 && memcmp(line, "*** You are in ", 15) == 0) {
        m->welcomed = true;
    }
    if (c->on_line)
        c->on_line(c, i, line, len);
}

/* Splits buffered bytes into lines; keeps a partial one. */
static void split(crowd *c, int who, char *buf, size_t *len)
{
    size_t start = 0;
    for (;;) {
        char *lf = memchr(buf + start, '\n', *len - start);
        if (!lf)
            break;
        size_t end = (size_t)(lf - buf);
        size_t l = end - start;
        if (l && buf[end - 1] == '\r')
            l--;
        buf[start + l] = '\0';
        if (who < 0) {
            c->log_lines++;
            if (c->on_line)
                c->on_line(c, -1, buf + start, l);
        } else {
            member_line(c, who, buf + start, l);
        }
        start = end + 1;
    }
    memmove(buf, buf + start, *len - start);
    *len -= start;
}

static void read_log(crowd *c)
{
    int fd = c->srv->proc.err.fd;
    for (;;) {
        if (c->log_len == sizeof(c->log))
            c->log_len = 0; /* an absurd line: drop it */
        ssize_t r = read(fd, c->log + c->log_len, sizeof(c->log) - c->log_len);
        if (r <= 0) {
            if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                epoll_ctl(c->ep, EPOLL_CTL_DEL, fd, NULL);
                c->srv->proc.err.eof = true;
            }
            return;
        }
        c->log_len += (size_t)r;
        split(c, -1, c->log, &c->log_len);
    }
}

static void read_member(crowd *c, int i)
{
    member *m = &c->m[i];
    for (int rounds = 0; rounds < 16 && m->fd >= 0; rounds++) {
        if (m->rx_cap - m->rx_len < 16384) {
            m->rx_cap = m->rx_cap ? m->rx_cap * 2 : 65536;
            m->rx = realloc(m->rx, m->rx_cap);
            if (!m->rx)
                abort();
        }
        ssize_t r = read(m->fd, m->rx + m->rx_len, m->rx_cap - m->rx_len);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (r <= 0) {
            m->eof = true;
            epoll_ctl(c->ep, EPOLL_CTL_DEL, m->fd, NULL);
            return;
        }
        m->bytes += (uint64_t)r;
        m->rx_len += (size_t)r;
        split(c, i, m->rx, &m->rx_len);
        if (m->rx_len <= 16384 && m->rx_cap > 262144) { /* give a burst's memory back */
            m->rx_cap = 65536;
            m->rx = realloc(m->rx, m->rx_cap);
        }
    }
}

int crowd_pump(crowd *c, int timeout_ms)
{
    struct epoll_event ev[256];
    int n = epoll_wait(c->ep, ev, 256, timeout_ms);
    for (int k = 0; k < n; k++) {
        if (ev[k].data.u32 == LOG_TAG)
            read_log(c);
        else
            read_member(c, (int)ev[k].data.u32);
    }
    return n < 0 ? 0 : n;
}

bool crowd_until(crowd *c, bool (*done)(crowd *c), int timeout_ms)
{
    long long end = h_now_ms() + timeout_ms;
    while (!done(c)) {
        long long left = end - h_now_ms();
        if (left <= 0)
            return false;
        crowd_pump(c, left > 100 ? 100 : (int)left);
    }
    return true;
}

static int welcome_from;
static bool all_welcomed(crowd *c)
{
    for (int i = welcome_from; i < c->n; i++)
        if (!c->m[i].welcomed && c->m[i].fd >= 0)
            return false;
    return true;
}

bool crowd_wait_welcomed(crowd *c, int from, int timeout_ms)
{
    welcome_from = from;
    return crowd_until(c, all_welcomed, timeout_ms);
}

bool crowd_send(crowd *c, int i, const char *s, size_t n)
{
    member *m = &c->m[i];
    long long end = h_now_ms() + H_WAIT_MS;
    while (n) {
        if (m->fd < 0 || m->eof)
            return false;
        ssize_t w = send(m->fd, s, n, MSG_NOSIGNAL);
        if (w > 0) {
            s += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return false;
        if (h_now_ms() > end)
            return false;
        crowd_pump(c, 5); /* the server may be waiting for us to read */
    }
    return true;
}

void crowd_ignore(crowd *c, int i)
{
    epoll_ctl(c->ep, EPOLL_CTL_DEL, c->m[i].fd, NULL);
}

void crowd_close(crowd *c, int i, bool reset)
{
    member *m = &c->m[i];
    if (m->fd < 0)
        return;
    if (reset) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(m->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    epoll_ctl(c->ep, EPOLL_CTL_DEL, m->fd, NULL);
    close(m->fd);
    m->fd = -1;
    free(m->rx);
    m->rx = NULL;
    m->rx_len = m->rx_cap = 0;
}

static long proc_status_kib(const h_server *s, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)s->proc.pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    size_t fl = strlen(field);
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, field, fl) == 0 && line[fl] == ':')
            v = strtol(line + fl + 1, NULL, 10);
    fclose(f);
    return v;
}

long server_rss_kib(const h_server *s) { return proc_status_kib(s, "VmRSS"); }

bool server_sanitized(const h_server *s)
{
    /* make test builds the tests and the server with the same sanitizer; clang links
     * its runtime statically, so /proc/PID/maps alone would not show it. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
    return true;
#endif
#endif
    char path[64], line[512];
    snprintf(path, sizeof(path), "/proc/%d/maps", (int)s->proc.pid);
    FILE *f = fopen(path, "r");
    bool found = false;
    while (f && !found && fgets(line, sizeof(line), f))
        found = strstr(line, "libasan") || strstr(line, "libtsan");
    if (f)
        fclose(f);
    return found;
}
long server_hwm_kib(const h_server *s) { return proc_status_kib(s, "VmHWM"); }

void stress_report(const char *name, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    const char *b = getenv("ST_BACKEND"), *to = getenv("ST_STRESS_REPORT");
    fprintf(stderr, "stress %s [%s, %s]: %s\n", name, stress_long() ? "long" : "short",
            b && *b ? b : "auto", msg);
    FILE *f = to && *to ? fopen(to, "a") : NULL;
    if (f) {
        fprintf(f, "stress %s [%s, %s]: %s\n", name, stress_long() ? "long" : "short",
                b && *b ? b : "auto", msg);
        fclose(f);
    }
}
