/* Load: 20 raw TCP clients all send numbered lines at once, in large writes that split
 * lines across segments, while one poll loop reads every client. Each client must get
 * every other client's lines exactly once, in each sender's order, whole and unchanged,
 * and never its own. Run once per dispatch mode. */
#include "harness.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

TestSuite(load, .timeout = 120, .fini = h_cleanup);

#define N_CLIENTS 20
#define WRITE_CHUNK 4093 /* not a multiple of any line length: writes end mid-line */

typedef struct load_client {
    h_proc c;
    char *out;             /* everything this client sends */
    size_t out_len, out_off;
    int next[N_CLIENTS];   /* next sequence number expected from each sender */
    int received;
} load_client;

/* The line client id sends as number seq; the padding varies in length and letter. */
static int format_line(char *buf, size_t cap, int id, int seq)
{
    char pad[80];
    int n = 10 + (id * 31 + seq * 17) % 60;
    memset(pad, 'a' + (id + seq) % 26, (size_t)n);
    pad[n] = '\0';
    return snprintf(buf, cap, "c%d %d %s\n", id, seq, pad);
}

/* Checks one received line; returns NULL or what is wrong with it. */
static const char *check_line(load_client *cl, int self, const char *line, int lines)
{
    static char why[256];
    char *end;
    if (line[0] != 'c')
        return "does not start with 'c'";
    long id = strtol(line + 1, &end, 10);
    if (*end != ' ' || id < 0 || id >= N_CLIENTS)
        return "bad sender id";
    long seq = strtol(end + 1, &end, 10);
    if (*end != ' ' || seq < 0 || seq >= lines)
        return "bad sequence number";
    if (id == self)
        return "the client's own line came back";
    if (seq != cl->next[id]) {
        snprintf(why, sizeof why, "from c%ld: got #%ld, expected #%d (lost, repeated or "
                 "reordered)", id, seq, cl->next[id]);
        return why;
    }
    char want[128];
    format_line(want, sizeof want, (int)id, (int)seq);
    if (strcmp(line, want) != 0)
        return "damaged (padding or ending differs)";
    cl->next[id]++;
    cl->received++;
    return NULL;
}

static void load(const char *dispatch)
{
    const int lines = h_slow() ? 60 : 200;
    const int want = (N_CLIENTS - 1) * lines;
    h_server s;
    cr_assert(h_server_start(&s, "--raw", "--dispatch", dispatch, NULL), "no banner");

    load_client *cl = calloc(N_CLIENTS, sizeof *cl);
    cr_assert(cl);
    for (int i = 0; i < N_CLIENTS; i++) {
        cr_assert(h_tcp_connect(&cl[i].c, "127.0.0.1", s.port), "client %d: connect", i);
        fcntl(cl[i].c.in, F_SETFL, fcntl(cl[i].c.in, F_GETFL) | O_NONBLOCK);
        cl[i].out = malloc((size_t)lines * 128);
        cr_assert(cl[i].out);
        for (int q = 0; q < lines; q++)
            cl[i].out_len += (size_t)format_line(cl[i].out + cl[i].out_len, 128, i, q);
    }
    cr_assert(h_server_wait_connected(&s, N_CLIENTS), "no \"(%d online)\" logged",
              N_CLIENTS);

    /* One loop writes pending data and reads everything, so no client ever stops
     * reading while it writes (the server may drop a reader that falls behind). */
    struct pollfd pfd[N_CLIENTS + 1];
    int done = 0;
    long long last_progress = h_now_ms();
    while (done < N_CLIENTS) {
        for (int i = 0; i < N_CLIENTS; i++) {
            pfd[i].fd = cl[i].c.in;
            pfd[i].events = POLLIN | (cl[i].out_off < cl[i].out_len ? POLLOUT : 0);
        }
        pfd[N_CLIENTS].fd = s.proc.err.eof ? -1 : s.proc.err.fd;
        pfd[N_CLIENTS].events = POLLIN;
        long long idle = h_now_ms() - last_progress;
        cr_assert(idle < H_WAIT_MS, "no progress for %d ms (%d of %d clients complete)",
                  H_WAIT_MS, done, N_CLIENTS);
        int rc = poll(pfd, N_CLIENTS + 1, (int)(H_WAIT_MS - idle));
        cr_assert(rc >= 0 || errno == EINTR, "poll: %s", strerror(errno));
        if (rc <= 0)
            continue;
        if (pfd[N_CLIENTS].revents) { /* keep the server's log pipe from filling */
            char line[512];
            h_fill(&s.proc.err);
            while (h_take_line(&s.proc.err, line, sizeof line) > 0) {
            }
        }
        for (int i = 0; i < N_CLIENTS; i++) {
            load_client *c = &cl[i];
            if (pfd[i].revents & POLLOUT) {
                size_t n = c->out_len - c->out_off;
                ssize_t w = send(c->c.in, c->out + c->out_off,
                                 n < WRITE_CHUNK ? n : WRITE_CHUNK, MSG_NOSIGNAL);
                cr_assert(w > 0 || errno == EAGAIN || errno == EINTR,
                          "client %d: send: %s", i, strerror(errno));
                if (w > 0) {
                    c->out_off += (size_t)w;
                    last_progress = h_now_ms();
                }
            }
            if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            bool open = h_fill(&c->c.out);
            char line[256];
            while (h_take_line(&c->c.out, line, sizeof line) > 0) {
                const char *bad = check_line(c, i, line, lines);
                cr_assert(bad == NULL, "client %d received \"%.*s\": %s", i,
                          (int)strcspn(line, "\n"), line, bad);
                cr_assert(c->received <= want);
                if (c->received == want)
                    done++;
                last_progress = h_now_ms();
            }
            cr_assert(open, "client %d: connection closed by the server after %d of %d "
                      "lines", i, c->received, want);
        }
    }
    for (int i = 0; i < N_CLIENTS; i++) {
        cr_assert_eq(cl[i].received, want);
        h_proc_close(&cl[i].c);
        free(cl[i].out);
    }
    free(cl);
    h_server_stop(&s);
}
H_EACH_DISPATCH(load, load)
