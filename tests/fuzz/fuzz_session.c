/*
 * libFuzzer target: whole chat sessions (the chat core, the telnet door and
 * libproactor), stateful.  Each input opens 2 to 4 clients on socket pairs into one
 * running server loop and, once each has been told it is in the lobby, writes the
 * input to them in interleaved chunks: byte 0 picks the number of clients; then each
 * step is one byte, whose low 2 bits pick the client and the other 6 the chunk length
 * (1 to 64), followed by the chunk.  Then every client
 * is synchronised with the server (below), and these invariants are checked:
 *   - everything any client receives is whole CRLF lines of valid UTF-8 without control
 *     or bidi characters, or telnet answers (IAC WILL/WONT/DONT option) between lines;
 *   - every client still connected answers (nothing wedged), and every session is gone
 *     once its client closes;
 *   - when no line of the input is a command (so nobody renames, moves or leaves),
 *     every complete line each client sent that is a message reaches every other
 *     client exactly once, in order, byte for byte as the sanitiser and parser make it,
 *     and never comes back to its sender.  A model framer (the same chat_framer, fed the
 *     same bytes) says which lines were complete.
 * Synchronising: each client sends a line that resets any framer state (IAC SE twice,
 * then LF) and an unknown command with a fresh name, and reads until the server's error
 * naming it arrives; when that has happened for every client, a second round makes sure
 * each client has also read everything queued to it before that point.
 * Waiting: a server that does not answer is stuck only if its loop thread sat idle in an
 * endless wait all along; the wall clock alone says nothing on a shared machine, where a
 * thread may get no CPU for seconds (a busy host, a paused virtual machine).  So the
 * harness looks at the loop every STALL_CHECK_MS without an answer: idle (asleep in a
 * wait with no timeout, with no pass of the loop since the last look) twice in a row is a
 * stall; a loop that runs, or waits for the CPU, gets up to STALL_MAX_MS.
 */
#include "proactor/internal.h" /* stall reports show the streams' state */
#ifndef PX_DEBUG
#error "the stall reports read the loop's debug counters: build with -DPX_DEBUG (make fuzz does)"
#endif
#include "server/chat.h"
#include "server/door_stream.h"
#include "server/log.h"

#include "../support/utf8_strict.h"

#include <errno.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 4
#define MAX_LINE 64    /* small, so the overlong-line path is reached often */
#define STALL_CHECK_MS 10000  /* how often a wait looks at the loop */
#define STALL_MAX_MS 300000   /* the longest wait for a loop that keeps running */

static px_loop *loop;
static srv_config cfg;
static unsigned long sync_seq;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_session: invariant broken: %s\n", what);
        abort();
    }
}

typedef struct client {
    int fd;
    px_stream *st; /* held until the end of the input, for stall reports */
    char nick[CHAT_NICK_MAX + 1];
    chat_framer model;
    bool commands; /* the model saw a command line (other than the syncs) */
    bool gone;     /* end of stream: it quit or was dropped */
    char *rx;      /* everything received */
    size_t rx_len, rx_cap;
    size_t scan;   /* where to look for the next awaited text */
    char **sent;   /* the messages others must see from it (text after "<nick> ") */
    size_t nsent, sent_cap;
    char sync_name[32];
} client;

static pid_t loop_tid; /* the loop thread's, for /proc/self/task/TID */

static void *run_loop(void *arg)
{
    (void)arg;
    loop_tid = (pid_t)syscall(SYS_gettid);
    px_loop_run(loop);
    return NULL;
}

/* What the loop thread is doing, as far as a stall is concerned. */
typedef struct loop_look {
    int wait_timeout;    /* of the wait under way; -2: not waiting */
    unsigned long waits; /* waits begun so far */
    char state;          /* the kernel's: S sleeping, R running or runnable, ... */
    unsigned long long cpu_ns, run_delay_ns; /* on a CPU, and runnable but waiting for one */
    unsigned long long steal_ticks; /* of every CPU: time the host gave to others */
} loop_look;

static loop_look look_at_loop(void)
{
    loop_look l = {
        .wait_timeout = atomic_load(&loop->wait_timeout),
        .waits = atomic_load(&loop->waits),
        .state = '?',
    };
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)loop_tid);
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
        const char *end = strrchr(buf, ')'); /* the name may hold spaces */
        if (end && end[1] == ' ')
            l.state = end[2];
    }
    snprintf(path, sizeof(path), "/proc/self/task/%d/schedstat", (int)loop_tid);
    f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%llu %llu", &l.cpu_ns, &l.run_delay_ns) != 2)
            l.cpu_ns = l.run_delay_ns = 0;
        fclose(f);
    }
    f = fopen("/proc/stat", "r");
    if (f) {
        unsigned long long v[8];
        if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]) == 8)
            l.steal_ticks = v[7];
        fclose(f);
    }
    /* Read last: a wait that began or ended meanwhile shows as a change. */
    if (atomic_load(&loop->waits) != l.waits)
        l.wait_timeout = -2;
    return l;
}

/* Asleep in the same endless wait at both looks, and in between. */
static bool loop_idle(const loop_look *a, const loop_look *b)
{
    return a->wait_timeout == -1 && b->wait_timeout == -1 && a->waits == b->waits &&
           a->state == 'S' && b->state == 'S';
}

static void print_look(const char *when, const loop_look *l)
{
    fprintf(stderr, "  loop thread %s: wait timeout %d (-2: not waiting), %lu waits, state %c, "
                    "cpu %.3f s, waited for a cpu %.3f s; host steal %.2f s\n",
            when, l->wait_timeout, l->waits, l->state, l->cpu_ns / 1e9, l->run_delay_ns / 1e9,
            l->steal_ticks / (double)sysconf(_SC_CLK_TCK));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    srv_log_set_level(SRV_LOG_ERROR);
    cfg = (srv_config){
        .max_line = MAX_LINE,
        .sendq = 64 * 1024, /* small enough that a flood of /help is dropped as too slow */
        .history = 0,       /* each input starts from an empty lobby */
        .announce_max = SRV_DEFAULT_ANNOUNCE_MAX,
    };
    px_executor exec = PX_EXEC_INLINE;
    px_backend backend = PX_BACKEND_EPOLL;
    const char *e = getenv("FUZZ_DISPATCH");
    check(!e || px_executor_parse(e, &exec) == 0, "FUZZ_DISPATCH: thread, pool or inline");
    e = getenv("FUZZ_BACKEND");
    check(!e || px_backend_parse(e, &backend) == 0, "FUZZ_BACKEND: auto, epoll or io_uring");
    check(px_loop_create(&loop, &(px_loop_opts){.backend = backend, .executor = exec,
                                                .sendq_bytes = cfg.sendq}) == 0,
          "px_loop_create");
    chat_init(&cfg, loop, &chat_bus_local);
    pthread_t t;
    check(pthread_create(&t, NULL, run_loop, NULL) == 0, "pthread_create");
    pthread_detach(t);
    return 0;
}

static client *clients; /* this input's, for stall reports */
static int nclients;

/* Before a stall aborts: what each client received last and what state its stream is in
 * (read racily: the loop is stuck or idle by then), and with FUZZ_STALL_GDB set every
 * thread's stack. */
static void report_stall(const client *waiting, const loop_look *before, const loop_look *now)
{
    fprintf(stderr, "fuzz_session: stall waiting for client %d; online %u\n",
            waiting ? (int)(waiting - clients) : -1, chat_online());
    if (before)
        print_look("at the look before", before);
    if (now)
        print_look("now", now);
    for (int i = 0; i < nclients; i++) {
        const client *c = &clients[i];
        size_t tail = c->rx_len < 200 ? c->rx_len : 200;
        char state[512];
        px__stream_describe(c->st, state, sizeof(state));
        fprintf(stderr, "client %d: gone %d commands %d received %zu (scan %zu), last: %.*s\n"
                        "  stream: %s\n",
                i, c->gone, c->commands, c->rx_len, c->scan, (int)tail,
                c->rx + c->rx_len - tail, state);
    }
    /* What the kernel says: bytes waiting on the server's side of each client, whether
     * it is readable or writable (poll: nothing is taken from the loop's epoll), and
     * the epoll registrations. */
    {
        unsigned n = 0;
        for (px_stream *p = loop->pend; p && n < 64; p = p->pend_next)
            n++;
        fprintf(stderr, "loop: wait timeout %d (-2: not waiting), %lu waits, pend %p (%u on "
                        "the list), reqs %p, posts %p\n",
                atomic_load(&loop->wait_timeout), atomic_load(&loop->waits), (void *)loop->pend,
                n, (void *)loop->reqs, (void *)loop->posts);
    }
    if (px_loop_backend(loop) == PX_BACKEND_EPOLL) {
        int epfd = *(const int *)loop->be_data; /* epoll_state's first member */
        for (int i = 0; i < nclients; i++) {
            int unread = -1, fd = clients[i].st->fd;
            struct pollfd p = {.fd = fd, .events = POLLIN | POLLOUT};
            if (fd >= 0) {
                ioctl(fd, FIONREAD, &unread);
                if (poll(&p, 1, 0) < 0)
                    p.revents = 0;
            }
            fprintf(stderr, "client %d: server fd %d, %d bytes unread there, poll 0x%x\n", i,
                    fd, unread, (unsigned)p.revents);
        }
        char path[64], buf[4096];
        snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", epfd);
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        buf[n] = '\0';
        if (f)
            fclose(f);
        fprintf(stderr, "epoll fd %d registrations:\n%s", epfd, buf);
    }
    if (getenv("FUZZ_STALL_GDB")) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "gdb -p %d -batch -ex 'thread apply all bt' 1>&2",
                 (int)getpid());
        if (system(cmd) != 0)
            fprintf(stderr, "fuzz_session: gdb failed\n");
    }
}

/* One wait for the server: how long so far, and the last look at the loop. */
typedef struct stall_watch {
    uint64_t waited;
    bool looked;
    loop_look last;
} stall_watch;

/* Called after each STALL_CHECK_MS without what the harness waits for: aborts if the
 * loop thread was idle since the last look, or the wait has lasted STALL_MAX_MS. */
static void still_waiting(const client *c, stall_watch *w, const char *what)
{
    w->waited += STALL_CHECK_MS;
    loop_look now = look_at_loop();
    bool idle = w->looked && loop_idle(&w->last, &now);
    if (idle || w->waited >= STALL_MAX_MS) {
        report_stall(c, w->looked ? &w->last : NULL, &now);
        fprintf(stderr, "fuzz_session: invariant broken: %s (%s %.0f s)\n", what,
                idle ? "the loop thread sat idle; waited" : "waited", w->waited / 1e3);
        abort();
    }
    fprintf(stderr, "fuzz_session: %s for %.0f s, but the loop thread was not idle: "
                    "waiting on\n", what, w->waited / 1e3);
    print_look("now", &now);
    w->last = now;
    w->looked = true;
}

/* Reads what has arrived, waiting for something (see still_waiting); false at the end
 * of the stream. */
static bool receive(client *c)
{
    if (c->gone)
        return false;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    stall_watch w = {0};
    int n;
    while ((n = poll(&p, 1, STALL_CHECK_MS)) <= 0) {
        if (n < 0 && errno == EINTR)
            continue; /* a signal (libFuzzer's timers): look again */
        check(n == 0, "poll failed");
        still_waiting(c, &w, "no answer from the server");
    }
    if (w.waited)
        fprintf(stderr, "fuzz_session: the answer came after more than %.0f s\n",
                w.waited / 1e3);
    if (c->rx_cap - c->rx_len < 4096) {
        c->rx_cap = c->rx_cap ? c->rx_cap * 2 : 16384;
        c->rx = realloc(c->rx, c->rx_cap);
        check(c->rx != NULL, "memory");
    }
    ssize_t r = read(c->fd, c->rx + c->rx_len, c->rx_cap - c->rx_len);
    if (r <= 0) {
        check(r == 0 || errno == ECONNRESET, "read failed");
        c->gone = true;
        return false;
    }
    c->rx_len += (size_t)r;
    return true;
}

/* Reads until text has arrived (after what earlier waits found) or the stream ends. */
static bool await(client *c, const char *text)
{
    size_t n = strlen(text);
    for (;;) {
        const char *hit = c->scan < c->rx_len ? memmem(c->rx + c->scan, c->rx_len - c->scan,
                                                       text, n)
                                              : NULL;
        if (hit) {
            c->scan = (size_t)(hit - c->rx) + n;
            return true;
        }
        if (!receive(c))
            return false;
    }
}

static void expect_message(client *c, const char *text, size_t len)
{
    if (c->nsent == c->sent_cap) {
        c->sent_cap = c->sent_cap ? c->sent_cap * 2 : 16;
        c->sent = realloc(c->sent, c->sent_cap * sizeof(*c->sent));
        check(c->sent != NULL, "memory");
    }
    char *m = malloc(len + 1);
    check(m != NULL, "memory");
    memcpy(m, text, len);
    m[len] = '\0';
    c->sent[c->nsent++] = m;
}

/* The model: what the server makes of one complete line, as chat_session_line does. */
static void model_line(client *c, const char *line, size_t len)
{
    char *clean = malloc(CHAT_SANITIZE_MAX(len) + 1);
    check(clean != NULL, "memory");
    chat_cmd cmd;
    if (chat_line_parse(line, len, clean, &cmd)) {
        if (cmd.kind == CHAT_CMD_MESSAGE)
            expect_message(c, cmd.arg, cmd.arg_len);
        else if (!(cmd.kind == CHAT_CMD_UNKNOWN && cmd.name_len == strlen(c->sync_name) &&
                   memcmp(cmd.name, c->sync_name, cmd.name_len) == 0))
            c->commands = true;
    }
    free(clean);
}

/* Sends bytes to the server and feeds them to the model. */
static void client_write(client *c, const char *p, size_t n)
{
    chat_frame_out out = {0};
    for (size_t at = 0; at < n;) {
        at += chat_frame_feed(&c->model, p + at, n - at, &out);
        out.reply_len = 0;
        if (out.kind == CHAT_FRAME_LINE)
            model_line(c, out.line, out.len);
    }
    chat_framer_trim(&c->model);
    for (size_t at = 0; at < n && !c->gone;) {
        ssize_t w = write(c->fd, p + at, n - at);
        if (w < 0) {
            check(errno == EPIPE || errno == ECONNRESET, "write failed");
            return; /* dropped (too slow, or it quit): the read side will see the end */
        }
        at += (size_t)w;
    }
}

/* One synchronisation round: every client sends a reset and a fresh unknown command,
 * then waits for the server's answer naming it (or the end of its stream). */
static void sync_round(client *cl, int k)
{
    char awaited[MAX_CLIENTS][64];
    for (int i = 0; i < k; i++) {
        char line[64];
        snprintf(cl[i].sync_name, sizeof(cl[i].sync_name), "zzsync%lu", ++sync_seq);
        int n = snprintf(line, sizeof(line), "\xff\xf0\xff\xf0\n/%s\n", cl[i].sync_name);
        client_write(&cl[i], line, (size_t)n);
        snprintf(awaited[i], sizeof(awaited[i]), "'/%s'", cl[i].sync_name);
    }
    for (int i = 0; i < k; i++)
        (void)await(&cl[i], awaited[i]);
}

/* The next line a client received, from *pos: skips telnet answers (IAC WILL/WONT/DONT
 * option) before it and returns its text without CRLF; *whole is false for a last line
 * cut off with the stream.  False when nothing is left. */
static bool next_line(const client *c, size_t *pos, const char **text, size_t *len, bool *whole)
{
    const unsigned char *p = (const unsigned char *)c->rx;
    size_t n = c->rx_len, i = *pos;
    while (i < n && p[i] == 0xFF) {
        check(i + 2 < n || c->gone, "a telnet answer cut short");
        if (i + 2 >= n)
            return false;
        check(p[i + 1] >= 0xFB && p[i + 1] <= 0xFE, "a telnet answer other than an option");
        i += 3;
    }
    if (i >= n)
        return false;
    const unsigned char *lf = memchr(p + i, '\n', n - i);
    check(lf || c->gone, "a line without its end");
    *whole = lf != NULL;
    size_t end = lf ? (size_t)(lf - p) : n;
    if (lf)
        check(end > i && p[end - 1] == '\r', "a line not ended by CRLF");
    *text = c->rx + i;
    *len = (lf ? end - 1 : end) - i;
    *pos = lf ? end + 1 : n;
    return true;
}

/* Every byte received is a telnet answer between lines or part of a clean CRLF line; a
 * client that was cut off may end inside a line. */
static void check_clean(const client *c)
{
    const char *text;
    size_t len, pos = 0;
    bool whole;
    while (next_line(c, &pos, &text, &len, &whole)) {
        const unsigned char *u = (const unsigned char *)text;
        for (size_t j = 0; j < len;) {
            uint32_t cp;
            size_t n = utf8_strict_next(u + j, len - j, &cp);
            if (!n && !whole)
                return; /* cut off inside a character */
            check(n > 0, "invalid UTF-8 sent to a client");
            check(!utf8_unsafe(cp), "a control or bidi character sent to a client");
            j += n;
        }
    }
}

/* For a failed delivery check: what was expected and what arrived. */
static void dump(const client *to, const client *from)
{
    fprintf(stderr, "fuzz_session: %s expected from %s:\n", to->nick, from->nick);
    for (size_t i = 0; i < from->nsent; i++)
        fprintf(stderr, "    <%s> %s\n", from->nick, from->sent[i]);
    fprintf(stderr, "fuzz_session: %s received %zu bytes:\n", to->nick, to->rx_len);
    fwrite(to->rx, 1, to->rx_len, stderr);
}

/* The messages `to` received from `from`, in order, must be exactly what `from` sent. */
static void check_delivery(const client *to, const client *from)
{
    char prefix[CHAT_NICK_MAX + 4];
    size_t plen = (size_t)snprintf(prefix, sizeof(prefix), "<%s> ", from->nick);
    const char *text;
    size_t len, pos = 0, next = 0;
    bool whole;
    while (next_line(to, &pos, &text, &len, &whole)) {
        if (len < plen || memcmp(text, prefix, plen) != 0)
            continue;
        check(to != from, "a message came back to its sender");
        check(next < from->nsent, "a message was delivered that was never sent (or twice)");
        const char *want = from->sent[next++];
        if (strlen(want) != len - plen || memcmp(want, text + plen, len - plen) != 0) {
            dump(to, from);
            check(0, "a message arrived changed or out of order");
        }
    }
    if (to != from && next != from->nsent) {
        dump(to, from);
        dump(from, to);
        check(0, "a message was lost");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int k = 2 + data[0] % (MAX_CLIENTS - 1);
    client cl[MAX_CLIENTS] = {0};
    /* Every session of the previous input goes (its clients closed while libFuzzer
     * prepared this input), and with the last of them every name and room. */
    {
        stall_watch w = {0};
        uint64_t since = px_now_ms();
        unsigned sessions, names, rooms;
        for (;;) {
            chat_census(&sessions, &names, &rooms);
            if (!sessions)
                break;
            nanosleep(&(struct timespec){.tv_nsec = 20000}, NULL);
            if (px_now_ms() - since >= STALL_CHECK_MS) {
                since = px_now_ms();
                still_waiting(NULL, &w, "a session outlived its client");
            }
        }
        if (names || rooms)
            fprintf(stderr, "fuzz_session: no session left, yet %u names and %u rooms\n", names,
                    rooms);
        check(!names && !rooms, "a name or a room outlived the sessions");
    }
    clients = cl;
    nclients = k;
    for (int i = 0; i < k; i++) {
        int sv[2];
        check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
        px_stream *st;
        check(px_stream_open(loop, &st, sv[0], &chat_door_telnet.handlers, NULL,
                             &(px_stream_opts){.sendq_bytes = cfg.sendq}) == 0,
              "px_stream_open");
        px_stream_retain(st);
        cl[i].st = st;
        cl[i].fd = sv[1];
        check(chat_framer_init(&cl[i].model, MAX_LINE, true) == 0, "chat_framer_init");
    }
    /* Welcomed, then in the lobby: only "You are in lobby" says that it hears the others
     * from now on.  The welcome goes out before the session enters the lobby (the order
     * of docs/protocol.md), and with handlers off the loop thread (pool, thread) the
     * loop may write it, and relay another client's lines, before the entry is done. */
    for (int i = 0; i < k; i++) {
        check(await(&cl[i], "Type /help for commands.\r\n"), "no welcome");
        check(await(&cl[i], "*** You are in lobby ("), "welcomed, but not into the lobby");
    }
    for (size_t pos = 1; pos < size;) {
        uint8_t step = data[pos++];
        client *c = &cl[(step & 3) % k];
        size_t len = (size_t)(step >> 2) + 1;
        if (len > size - pos)
            len = size - pos;
        client_write(c, (const char *)data + pos, len);
        pos += len;
    }
    sync_round(cl, k);
    sync_round(cl, k);
    for (int i = 0; i < k; i++) { /* the welcome names the client */
        static const char welcome[] = "*** Welcome to st_proactor, ";
        size_t wl = sizeof(welcome) - 1;
        check(cl[i].rx_len > wl && memcmp(cl[i].rx, welcome, wl) == 0, "no welcome");
        const char *name = cl[i].rx + wl, *bang = memchr(name, '!', cl[i].rx_len - wl);
        check(bang && bang - name <= CHAT_NICK_MAX, "no nickname in the welcome");
        memcpy(cl[i].nick, name, (size_t)(bang - name));
    }

    bool commands = false, gone = false;
    for (int i = 0; i < k; i++) {
        check_clean(&cl[i]);
        commands |= cl[i].commands;
        gone |= cl[i].gone;
    }
    check(commands || !gone, "a client was cut off though it sent no command");
    if (!commands) {
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++)
                check_delivery(&cl[i], &cl[j]);
    }

    for (int i = 0; i < k; i++) {
        close(cl[i].fd);
        px_stream_release(cl[i].st);
        chat_framer_free(&cl[i].model);
        free(cl[i].rx);
        for (size_t m = 0; m < cl[i].nsent; m++)
            free(cl[i].sent[m]);
        free(cl[i].sent);
    }
    clients = NULL;
    nclients = 0;
    return 0;
}
