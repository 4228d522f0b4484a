/* Integration-test harness: processes with piped stdio, deadline-bound line reading,
 * the server's start/stop protocol (banner, connection log, SIGTERM → exit 0) and
 * nc / raw TCP clients. Assertions about relaying live in the test files. */
#include "harness.h"

#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Every child we started and have not reaped, so a failed assertion (which leaves the
 * test function early) cannot leave a server running. */
#define H_MAX_PIDS 64
static pid_t g_pids[H_MAX_PIDS];

static void pid_add(pid_t pid)
{
    for (int i = 0; i < H_MAX_PIDS; i++)
        if (g_pids[i] == 0) {
            g_pids[i] = pid;
            return;
        }
}

static void pid_del(pid_t pid)
{
    for (int i = 0; i < H_MAX_PIDS; i++)
        if (g_pids[i] == pid)
            g_pids[i] = 0;
}

void h_cleanup(void)
{
    for (int i = 0; i < H_MAX_PIDS; i++)
        if (g_pids[i] > 0) {
            kill(g_pids[i], SIGKILL);
            while (waitpid(g_pids[i], NULL, 0) < 0 && errno == EINTR) {
            }
            g_pids[i] = 0;
        }
}

long long h_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *h_server_path(void)
{
    const char *p = getenv("ST_PROACTOR");
    return p && *p ? p : "./st_proactor";
}

bool h_slow(void)
{
    const char *s = getenv("ST_TEST_SLOW");
    return s && strcmp(s, "1") == 0;
}

static void reader_init(h_reader *r, int fd)
{
    r->fd = fd;
    r->eof = fd < 0;
    r->alarms = 0;
    r->len = 0;
}

/* In a child just forked from the test process parent: die with it (and at once if
 * it is already gone). Async-signal-safe. */
static void child_die_with(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
}

/* In a child, once its stdio is set: leaves nothing of the test runner open, restores
 * the default SIGPIPE and an empty signal mask, and runs argv (searched in PATH).
 * Async-signal-safe; never returns. */
static void child_exec(char *const argv[])
{
    close_range(3, ~0U, 0);
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execvp(argv[0], argv);
    _exit(127);
}

int h_spawn(h_proc *p, char *const argv[], bool pipe_err)
{
    static bool cleanup_registered;
    int pin[2], pout[2], perr[2] = {-1, -1};

    if (!cleanup_registered) {
        atexit(h_cleanup);
        signal(SIGPIPE, SIG_IGN); /* a dead child's pipe must fail a write, not kill us */
        cleanup_registered = true;
    }
    if (pipe2(pin, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(pout, O_CLOEXEC) < 0 || (pipe_err && pipe2(perr, O_CLOEXEC) < 0)) {
        int e = errno;
        close(pin[0]);
        close(pin[1]);
        return -e;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(pin[0]), close(pin[1]), close(pout[0]), close(pout[1]);
        if (pipe_err)
            close(perr[0]), close(perr[1]);
        return -e;
    }
    if (pid == 0) {
        /* Child: async-signal-safe calls only. Die with the test process. */
        child_die_with(parent);
        dup2(pin[0], 0);
        dup2(pout[1], 1);
        if (pipe_err)
            dup2(perr[1], 2);
        child_exec(argv);
    }
    pid_add(pid);
    close(pin[0]);
    close(pout[1]);
    if (pipe_err)
        close(perr[1]);
    p->pid = pid;
    p->status = 0;
    p->in = pin[1];
    reader_init(&p->out, pout[0]);
    reader_init(&p->err, perr[0]);
    return 0;
}

static bool reap(h_proc *p, bool block)
{
    if (p->pid <= 0)
        return true;
    for (;;) {
        int st;
        pid_t r = waitpid(p->pid, &st, block ? 0 : WNOHANG);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            return false;
        pid_del(p->pid);
        p->status = r < 0 ? -1 : st;
        p->pid = 0;
        return true;
    }
}

bool h_proc_wait(h_proc *p, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;
    /* Polling waitpid every few ms: waits on the exit event, not a fixed time. */
    while (!reap(p, false)) {
        if (h_now_ms() >= deadline)
            return false;
        nanosleep(&(struct timespec){.tv_nsec = 5 * 1000000}, NULL);
    }
    return true;
}

bool h_proc_stop(h_proc *p, int sig, int timeout_ms)
{
    if (p->pid <= 0)
        return true;
    kill(p->pid, sig);
    if (h_proc_wait(p, timeout_ms))
        return true;
    kill(p->pid, SIGKILL);
    reap(p, true);
    return false;
}

void h_proc_close(h_proc *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        reap(p, true);
    }
    if (p->in >= 0 && p->in != p->out.fd)
        close(p->in);
    if (p->out.fd >= 0)
        close(p->out.fd);
    if (p->err.fd >= 0)
        close(p->err.fd);
    p->in = p->out.fd = p->err.fd = -1;
}

void h_close_all(h_proc *const clients[], int n)
{
    for (int i = 0; i < n; i++)
        h_proc_close(clients[i]);
}

bool h_fill(h_reader *r)
{
    if (r->eof)
        return false;
    if (r->len == sizeof r->buf)
        return true; /* full: h_take_line hands the buffer out as one line */
    for (;;) {
        ssize_t n = read(r->fd, r->buf + r->len, sizeof r->buf - r->len);
        if (n > 0) {
            r->len += (size_t)n;
            return true;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        r->eof = true; /* 0, or an error such as ECONNRESET: nothing more will come */
        return false;
    }
}

/* Hands out the first n buffered bytes as a line; notes sanitizer reports. */
static size_t take(h_reader *r, size_t n, char *out, size_t cap)
{
    if (memmem(r->buf, n, "Sanitizer", 9) || memmem(r->buf, n, "runtime error:", 14)) {
        r->alarms++;
        fprintf(stderr, "[sanitizer] %.*s", (int)n, r->buf);
    }
    if (cap > 0) {
        size_t c = n < cap - 1 ? n : cap - 1;
        memcpy(out, r->buf, c);
        out[c] = '\0';
    }
    memmove(r->buf, r->buf + n, r->len - n);
    r->len -= n;
    return n;
}

size_t h_take_line(h_reader *r, char *out, size_t cap)
{
    char *lf = memchr(r->buf, '\n', r->len);
    if (lf)
        return take(r, (size_t)(lf - r->buf) + 1, out, cap);
    if (r->len == sizeof r->buf)
        return take(r, r->len, out, cap);
    return 0;
}

ssize_t h_read_line(h_reader *r, char *out, size_t cap, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;
    for (;;) {
        size_t n = h_take_line(r, out, cap);
        if (n > 0)
            return (ssize_t)n;
        if (r->eof)
            return r->len > 0 ? (ssize_t)take(r, r->len, out, cap) : 0;
        long long left = deadline - h_now_ms();
        if (left <= 0)
            return -1;
        struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
        int rc = poll(&pfd, 1, (int)left);
        if (rc < 0 && errno != EINTR)
            return -1;
        if (rc > 0)
            h_fill(r);
    }
}

bool h_wait_line(h_reader *r, const char *needle, const char *avoid, char *out,
                 size_t cap, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;
    char local[4096];
    if (!out) {
        out = local;
        cap = sizeof local;
    }
    for (;;) {
        long long left = deadline - h_now_ms();
        ssize_t n = h_read_line(r, out, cap, left > 0 ? (int)left : 0);
        if (n <= 0)
            return false;
        if (strstr(out, needle) && !(avoid && strstr(out, avoid)))
            return true;
    }
}

ssize_t h_read_all(h_reader *r, char *out, size_t cap, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;
    size_t used = 0;
    char line[sizeof r->buf + 1];
    out[0] = '\0';
    for (;;) {
        long long left = deadline - h_now_ms();
        ssize_t n = h_read_line(r, line, sizeof line, left > 0 ? (int)left : 0);
        if (n < 0)
            return -1;
        if (n == 0)
            return (ssize_t)used;
        size_t c = (size_t)n < cap - 1 - used ? (size_t)n : cap - 1 - used;
        memcpy(out + used, line, c);
        used += c;
        out[used] = '\0';
    }
}

bool h_write(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == ENOTSOCK)
            w = write(fd, s, n); /* a pipe; SIGPIPE is ignored */
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        s += w;
        n -= (size_t)w;
    }
    return true;
}

bool h_send(h_proc *p, const char *s)
{
    return h_write(p->in, s, strlen(s));
}

void h_server_stop_all(h_server *s, h_proc *const clients[], int n)
{
    h_close_all(clients, n);
    h_server_stop(s);
}

void h_expect_line(h_proc *p, const char *want)
{
    char got[1024];
    ssize_t n = h_read_line(&p->out, got, sizeof got, H_WAIT_MS);
    cr_assert(n > 0, "expected line \"%.*s\", got %s", (int)strcspn(want, "\n"), want,
              n == 0 ? "EOF" : "nothing (timeout)");
    cr_assert_str_eq(got, want, "expected line \"%.*s\", got \"%.*s\"",
                     (int)strcspn(want, "\n"), want, (int)strcspn(got, "\n"), got);
}

void h_relay(h_proc *const clients[], int n, int sender, const char *line)
{
    cr_assert(h_send(clients[sender], line), "client %d could not send", sender);
    for (int i = 0; i < n; i++)
        if (i != sender)
            h_expect_line(clients[i], line);
}

/* Reads the banner; on failure stops the server and echoes what it said. */
static bool read_banner(h_server *s)
{
    char line[512];
    ssize_t n = h_read_line(&s->proc.out, line, sizeof line, H_WAIT_MS);
    const char *pre = "Listening on port: [";
    if (n > 0 && strncmp(line, pre, strlen(pre)) == 0) {
        char *end;
        long port = strtol(line + strlen(pre), &end, 10);
        if (strcmp(end, "] ...\n") == 0 && port > 0 && port <= 65535) {
            s->port = (int)port;
            return true;
        }
    }
    char err[8192];
    h_proc_stop(&s->proc, SIGKILL, H_WAIT_MS);
    h_read_all(&s->proc.err, err, sizeof err, H_WAIT_MS);
    const char *backend = getenv("ST_BACKEND");
    if (backend && *backend && strstr(err, "is not available here"))
        cr_skip_test("backend %s is not available on this machine: %s", backend, err);
    fprintf(stderr, "no banner from %s (stdout: \"%s\"); stderr:\n%s\n", h_server_path(),
            n > 0 ? line : n == 0 ? "EOF" : "timeout", err);
    return false;
}

bool h_server_start_argv(h_server *s, const char *const args[])
{
    return h_server_start_nofile(s, 0, args);
}

bool h_server_start_nofile(h_server *s, int nofile, const char *const args[])
{
    char *argv[64];
    char limit[48];
    int n = 0;
    const char *backend = getenv("ST_BACKEND");

    if (nofile > 0) {
        /* prlimit (util-linux) sets soft and hard limits before exec, so
         * the server cannot raise its own. */
        snprintf(limit, sizeof limit, "--nofile=%d:%d", nofile, nofile);
        argv[n++] = "prlimit";
        argv[n++] = limit;
        argv[n++] = "--";
    }
    argv[n++] = (char *)h_server_path();
    if (backend && *backend) {
        argv[n++] = "--backend";
        argv[n++] = (char *)backend;
    }
    for (int i = 0; args[i] && n < 63; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    s->port = -1;
    if (h_spawn(&s->proc, argv, true) != 0)
        return false;
    return read_banner(s);
}

/* h_server_start with its extra arguments in ap. */
static bool server_start_va(h_server *s, va_list ap)
{
    const char *args[60] = {"--port", "0"};
    int n = 2;
    for (const char *a; (a = va_arg(ap, const char *)) && n < 59;)
        args[n++] = a;
    args[n] = NULL;
    return h_server_start_argv(s, args);
}

bool h_server_start(h_server *s, ...)
{
    va_list ap;
    va_start(ap, s);
    bool ok = server_start_va(s, ap);
    va_end(ap);
    return ok;
}

int h_server_run_to_exit(const char *const args[], char *out, size_t out_cap, char *err,
                         size_t err_cap)
{
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)h_server_path();
    for (int i = 0; args[i] && n < 31; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    const char *what = args[0] ? args[0] : "";

    h_proc p;
    cr_assert_eq(h_spawn(&p, argv, true), 0, "cannot start %s", h_server_path());
    close(p.in);
    p.in = -1;
    /* Read while it runs: a long --help must not fill a pipe and block it. */
    cr_assert(h_read_all(&p.out, out, out_cap, H_WAIT_MS) >= 0, "%s %s: stdout never closed",
              h_server_path(), what);
    cr_assert(h_read_all(&p.err, err, err_cap, H_WAIT_MS) >= 0, "%s %s: stderr never closed",
              h_server_path(), what);
    bool exited = h_proc_wait(&p, H_WAIT_MS);
    if (!exited)
        h_proc_stop(&p, SIGKILL, H_WAIT_MS);
    cr_assert(exited, "%s %s: still running after %d ms, want an exit", h_server_path(), what,
              H_WAIT_MS);
    int st = p.status;
    h_proc_close(&p);
    cr_assert(WIFEXITED(st), "%s %s: killed by signal %d; stderr: %s", h_server_path(), what,
              WTERMSIG(st), err);
    return WEXITSTATUS(st);
}

bool h_server_wait_connected(h_server *s, int n)
{
    char needle[32];
    snprintf(needle, sizeof needle, "(%d online)", n);
    /* "disconnected" contains "connected": a connect line is one without it. */
    return h_wait_line(&s->proc.err, needle, "disconnected", NULL, 0, H_WAIT_MS);
}

bool h_server_wait_disconnected(h_server *s, int n)
{
    char line[512], needle[32];
    snprintf(needle, sizeof needle, "(%d online)", n);
    long long deadline = h_now_ms() + H_WAIT_MS;
    while (h_wait_line(&s->proc.err, "disconnected", NULL, line, sizeof line,
                       (int)(deadline - h_now_ms())))
        if (strstr(line, needle))
            return true;
    return false;
}

void h_server_stop(h_server *s)
{
    char err[16384], line[1024];
    size_t elen = 0;
    err[0] = '\0';
    /* Read its log while waiting: a server that logs more than a pipe holds on its way
     * out (a thousand disconnects) would otherwise block on stderr and never exit. */
    bool in_time = s->proc.pid <= 0; /* already reaped by the test */
    if (!in_time)
        kill(s->proc.pid, SIGTERM);
    long long deadline = h_now_ms() + H_WAIT_MS;
    while (!in_time && !(in_time = h_proc_wait(&s->proc, 0)) && h_now_ms() < deadline) {
        ssize_t n = h_read_line(&s->proc.err, line, sizeof line, 20);
        if (n > 0) {
            if (elen + (size_t)n >= sizeof err)
                elen = 0; /* keep the latest lines */
            memcpy(err + elen, line, (size_t)n + 1);
            elen += (size_t)n;
        } else if (n == 0) { /* stderr closed: the exit is near */
            in_time = h_proc_wait(&s->proc, (int)(deadline - h_now_ms()));
            break;
        }
    }
    if (!in_time)
        h_proc_stop(&s->proc, SIGKILL, H_WAIT_MS);
    if (h_read_all(&s->proc.err, err + elen, sizeof err - elen, H_WAIT_MS) < 0)
        err[elen] = '\0';
    int st = s->proc.status, alarms = s->proc.err.alarms;
    h_proc_close(&s->proc);
    if (!in_time || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || alarms)
        fprintf(stderr, "server stderr after SIGTERM:\n%s\n", err);
    cr_assert(in_time, "server did not exit within %d ms of SIGTERM (killed)", H_WAIT_MS);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "server did not exit 0 on SIGTERM (wait status 0x%x)", (unsigned)st);
    cr_assert_eq(alarms, 0, "server printed %d sanitizer report line(s)", alarms);
}

bool h_nc_start(h_proc *p, const char *host, int port)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    char *argv[] = {"nc", (char *)host, ps, NULL};
    return h_spawn(p, argv, false) == 0;
}

bool h_tcp_connect(h_proc *p, const char *host, int port)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST};
    struct addrinfo *ai;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    if (getaddrinfo(host, ps, &hints, &ai) != 0)
        return false;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0;
    freeaddrinfo(ai);
    if (!ok) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    p->pid = 0;
    p->status = 0;
    p->in = fd;
    reader_init(&p->out, fd);
    reader_init(&p->err, -1);
    return true;
}

void h_connect_all(h_server *s, h_proc *const clients[], int n, int n_nc)
{
    for (int i = 0; i < n; i++) {
        if (i < n_nc)
            cr_assert(h_nc_start(clients[i], "127.0.0.1", s->port), "client %d: cannot start nc",
                      i);
        else
            cr_assert(h_tcp_connect(clients[i], "127.0.0.1", s->port),
                      "client %d: cannot connect", i);
        cr_assert(h_server_wait_connected(s, i + 1), "client %d: no \"(%d online)\" logged", i,
                  i + 1);
    }
}

void h_tcp_reset(h_proc *p)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(p->in, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    h_proc_close(p);
}

int h_listen_any(int family, int port, int *port_out)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (family == AF_INET6) {
        int off = 0;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_any;
        a->sin6_port = htons((uint16_t)port);
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_ANY);
        a->sin_port = htons((uint16_t)port);
        len = sizeof *a;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        close(fd);
        return -1;
    }
    if (port_out)
        *port_out = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

int h_free_port(void)
{
    int port = -1;
    /* A dual-stack wildcard bind holds the port on both families at once. */
    int fd = h_listen_any(AF_INET6, 0, &port);
    if (fd < 0)
        fd = h_listen_any(AF_INET, 0, &port);
    if (fd < 0)
        return -1;
    close(fd);
    return port;
}

bool h_have_ipv6_loopback(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = in6addr_loopback};
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* ---- Chat mode (additions for tests/integration/test_chat*.c) ---- */

bool h_chat_connect(h_server *s, h_proc *p, int online, char *nick, size_t cap)
{
    static const char pre[] = "*** Welcome to st_proactor, ";
    char line[1024];
    if (!h_tcp_connect(p, "127.0.0.1", s->port)) {
        fprintf(stderr, "h_chat_connect: cannot connect to port %d\n", s->port);
        return false;
    }
    if (!h_server_wait_connected(s, online)) {
        fprintf(stderr, "h_chat_connect: no \"(%d online)\" logged\n", online);
        return false;
    }
    ssize_t n = h_read_line(&p->out, line, sizeof line, H_WAIT_MS);
    if (n <= 0 || strncmp(line, pre, sizeof pre - 1) != 0) {
        fprintf(stderr, "h_chat_connect: first line is not the welcome: \"%s\"\n",
                n > 0 ? line : n == 0 ? "EOF" : "timeout");
        return false;
    }
    size_t len = strcspn(line + sizeof pre - 1, "!");
    if (cap > 0) {
        size_t c = len < cap - 1 ? len : cap - 1;
        memcpy(nick, line + sizeof pre - 1, c);
        nick[c] = '\0';
    }
    n = h_read_line(&p->out, line, sizeof line, H_WAIT_MS);
    if (n <= 0 || strncmp(line, "*** You are in ", 15) != 0) {
        fprintf(stderr, "h_chat_connect: second line is not \"*** You are in ...\": \"%s\"\n",
                n > 0 ? line : n == 0 ? "EOF" : "timeout");
        return false;
    }
    return true;
}

void h_chat_connect_n(h_server *s, h_proc *const clients[], int n, int first_online,
                      char nicks[][32])
{
    for (int i = 0; i < n; i++) {
        cr_assert(h_chat_connect(s, clients[i], first_online + i, nicks[i], 32),
                  "client %d did not get in", i);
        char want[96];
        snprintf(want, sizeof want, "*** %s has joined lobby.\r\n", nicks[i]);
        for (int j = 0; j < i; j++)
            h_expect_line(clients[j], want);
    }
}

void h_chat_start(h_server *s, h_proc *const clients[], int n, char nicks[][32], ...)
{
    va_list ap;
    va_start(ap, nicks);
    bool ok = server_start_va(s, ap);
    va_end(ap);
    cr_assert(ok, "no banner");
    h_chat_connect_n(s, clients, n, 1, nicks);
}

void h_chat_relay(h_proc *const clients[], int n, int sender, const char *nick,
                  const char *text)
{
    char out[2048], want[2048];
    snprintf(out, sizeof out, "%s\n", text);
    snprintf(want, sizeof want, "<%s> %s\r\n", nick, text);
    cr_assert(h_send(clients[sender], out), "client %d could not send", sender);
    for (int i = 0; i < n; i++)
        if (i != sender)
            h_expect_line(clients[i], want);
}

void h_expect_eof(h_proc *p, int timeout_ms)
{
    char got[1024];
    ssize_t n = h_read_line(&p->out, got, sizeof got, timeout_ms);
    cr_assert(n >= 0, "no EOF within %d ms", timeout_ms);
    cr_assert(n == 0, "expected EOF, got the line \"%.*s\"", (int)strcspn(got, "\n"), got);
}

int h_pty_spawn(h_proc *p, char *const argv[])
{
    int master;
    pid_t parent = getpid();
    signal(SIGPIPE, SIG_IGN);
    pid_t pid = forkpty(&master, NULL, NULL, NULL);
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        child_die_with(parent);
        child_exec(argv);
    }
    fcntl(master, F_SETFD, FD_CLOEXEC);
    pid_add(pid);
    p->pid = pid;
    p->status = 0;
    p->in = master;
    reader_init(&p->out, master);
    reader_init(&p->err, -1);
    return 0;
}
