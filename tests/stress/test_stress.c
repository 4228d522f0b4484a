/*
 * Fault, load and abuse tests against the real st_proactor binary (loopback only, every
 * wait bounded).  Each asserts what the other clients observed: messages lost (must be
 * 0), order, latency, and that the server stays up; each prints one "stress NAME:" line
 * with its figures.  make test runs the short version, make stress (ST_STRESS=long) the
 * long one.
 */
#include "crowd.h"

#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(stress, .fini = h_cleanup, .timeout = 900);

/* ------------------------------------------------------------------------ */
/* Message bookkeeping: publisher p's k-th message is "m P K <padding>"; every
 * receiver must see each publisher's messages once, in order, none missing. */

typedef struct tally {
    int n, npub;          /* members, publishers (members 1..npub) */
    long *next;           /* next[r * npub + p]: the next K receiver r expects from p */
    long sent;            /* per publisher so far */
    long disorder;        /* a K other than the expected one */
    long deliveries;
    int skip;             /* member never counted (the slow reader), or -1 */
} tally;

static void tally_init(tally *t, int n, int npub, int skip)
{
    *t = (tally){.n = n, .npub = npub, .skip = skip};
    t->next = calloc((size_t)n * (size_t)npub, sizeof(long));
    cr_assert_not_null(t->next);
}

/* Parses "<nick> m P K ..." into p and k. */
static bool parse_msg(const char *line, size_t len, int *p, long *k)
{
    const char *gt = memchr(line, '>', len);
    if (!gt || (size_t)(gt - line) + 3 > len || gt[1] != ' ' || gt[2] != 'm')
        return false;
    return sscanf(gt + 3, " %d %ld", p, k) == 2;
}

static void tally_line(tally *t, int who, const char *line, size_t len)
{
    int p;
    long k;
    if (who < 0 || who >= t->n || who == t->skip || !parse_msg(line, len, &p, &k) || p < 1 || p > t->npub)
        return;
    long *want = &t->next[(size_t)who * (size_t)t->npub + (size_t)(p - 1)];
    if (k != *want)
        t->disorder++;
    *want = k + 1;
    t->deliveries++;
}

/* Messages receivers still lack: every member but the skipped one and the publisher
 * itself must have t->sent from each publisher. */
static long tally_missing(const tally *t, const crowd *c)
{
    long missing = 0;
    for (int r = 0; r < t->n; r++) {
        if (r == t->skip || c->m[r].fd < 0)
            continue;
        for (int p = 1; p <= t->npub; p++)
            if (p != r)
                missing += t->sent - t->next[(size_t)r * (size_t)t->npub + (size_t)(p - 1)];
    }
    return missing;
}

static tally *g_tally;   /* for the callbacks */
static long g_too_slow;  /* server log lines "too slow" */
static long g_idle_kicks; /* server log lines "idle timeout" */

static void count_log(const char *line)
{
    if (getenv("STRESS_LOG"))
        fprintf(stderr, "server: %s\n", line);
    if (strstr(line, ": too slow"))
        g_too_slow++;
    if (strstr(line, ": idle timeout"))
        g_idle_kicks++;
}

static void on_tally_line(crowd *c, int who, const char *line, size_t len)
{
    (void)c;
    if (who < 0)
        count_log(line);
    else
        tally_line(g_tally, who, line, len);
}

static bool caught_up(crowd *c)
{
    return tally_missing(g_tally, c) == 0;
}

static void pad(char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)('a' + i % 26);
    buf[n] = '\0';
}

/* ------------------------------------------------------------------------ */

/* One client never reads among many; a few publish as fast as the others read.  The
 * reader that never reads is dropped with the reason "too slow"; the rest lose nothing. */
Test(stress, slow_reader_among_many)
{
    stress_raise_nofile();
    /* The slow reader must be sent more than its queue (the default 1 MiB) and the
     * kernel's buffers (the server's send buffer grows up to tcp_wmem's 4 MiB): 8 MB. */
    int n = (int)stress_n(50, 1000), npub = (int)stress_n(5, 10);
    long per_pub = stress_n(800, 800);
    size_t body_len = (size_t)(8000000 / (npub * per_pub));
    h_server s;
    cr_assert(h_server_start(&s, "--flood", "0", NULL), "no banner");
    crowd c;
    tally t;
    tally_init(&t, n, npub, 0);
    g_tally = &t;
    g_too_slow = 0;
    crowd_init(&c, &s, on_tally_line, NULL);
    cr_assert_eq(crowd_connect(&c, 2048, NULL), 0, "slow reader: %s", strerror(errno));
    crowd_ignore(&c, 0); /* never read */
    for (int i = 1; i < n; i++)
        cr_assert(crowd_connect(&c, 0, NULL) == i, "client %d: %s", i, strerror(errno));
    cr_assert(crowd_wait_welcomed(&c, 1, 60000), "not every client was welcomed");

    char line[2100], body[2001];
    cr_assert(body_len < sizeof(body));
    pad(body, body_len);
    const int batch = 2; /* per publisher between waits: readers stay near caught up */
    while (t.sent < per_pub) {
        for (int b = 0; b < batch && t.sent < per_pub; b++, t.sent++) {
            for (int p = 1; p <= npub; p++) {
                int len = snprintf(line, sizeof(line), "m %d %ld %s\n", p, t.sent, body);
                cr_assert(crowd_send(&c, p, line, (size_t)len), "publisher %d cut off", p);
            }
        }
        cr_assert(crowd_until(&c, caught_up, 60000), "%ld messages missing after 60 s",
                  tally_missing(&t, &c));
    }
    /* The slow reader: dropped, with the reason in the log. */
    long long end = h_now_ms() + H_WAIT_MS;
    while (g_too_slow < 1 && h_now_ms() < end)
        crowd_pump(&c, 50);
    cr_expect_eq(g_too_slow, 1, "%ld clients dropped as too slow, want exactly the one", g_too_slow);
    char sink[65536];
    ssize_t r;
    long long eof_by = h_now_ms() + H_WAIT_MS;
    while ((r = read(c.m[0].fd, sink, sizeof(sink))) != 0 && h_now_ms() < eof_by)
        if (r < 0 && errno != EAGAIN && errno != EINTR)
            break; /* reset: dropped */
    cr_expect(r <= 0 && (r == 0 || errno == ECONNRESET), "the slow reader was not disconnected");
    cr_expect_eq(t.disorder, 0, "%ld messages out of order", t.disorder);
    long lost = tally_missing(&t, &c);
    cr_expect_eq(lost, 0, "%ld messages lost", lost);
    stress_report("slow_reader", "%d clients, %d publishers x %ld messages of %zu bytes, "
                  "%ld deliveries, "
                  "%ld lost, %ld reordered, slow reader dropped: %s, server peak RSS %ld KiB",
                  n, npub, per_pub, body_len, t.deliveries, lost, t.disorder,
                  g_too_slow == 1 ? "yes (too slow)" : "NO", server_hwm_kib(&s));
    crowd_free(&c);
    free(t.next);
    h_server_stop(&s);
}

/* ------------------------------------------------------------------------ */
/* Latencies of "p I K T" lines (T: the sender's h_now_ms()). */

typedef struct lat {
    long *v;
    size_t n, cap;
    long pings_got;
} lat;

static lat g_lat;

static void lat_add(long ms)
{
    if (g_lat.n == g_lat.cap) {
        g_lat.cap = g_lat.cap ? g_lat.cap * 2 : 4096;
        g_lat.v = realloc(g_lat.v, g_lat.cap * sizeof(long));
        cr_assert_not_null(g_lat.v);
    }
    g_lat.v[g_lat.n++] = ms;
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

/* The q-quantile (0..1) of the latencies, in ms. */
static long lat_q(double q)
{
    if (!g_lat.n)
        return -1;
    qsort(g_lat.v, g_lat.n, sizeof(long), cmp_long);
    size_t i = (size_t)(q * (double)(g_lat.n - 1));
    return g_lat.v[i];
}

static void on_ping_line(crowd *c, int who, const char *line, size_t len)
{
    on_tally_line(c, who, line, len);
    const char *gt = who >= 0 ? memchr(line, '>', len) : NULL;
    int i;
    long k, t0;
    if (gt && (size_t)(gt - line) + 3 < len && gt[2] == 'p' &&
        sscanf(gt + 3, " %d %ld %ld", &i, &k, &t0) == 3) {
        g_lat.pings_got++;
        lat_add((long)(h_now_ms() - t0));
    }
}

/* One client floods lines as fast as the server takes them (flood limit off); a few
 * others chat meanwhile.  Everyone gets every line, and the chatters' latency stays
 * bounded. */
Test(stress, flooder_does_not_stall_others)
{
    const long total = stress_n(20, 100) * 1000000L; /* bytes the flooder sends */
    const int line_len = 1000, npingers = 8, every_ms = 20;
    h_server s;
    cr_assert(h_server_start(&s, "--flood", "0", NULL), "no banner");
    crowd c;
    tally t;
    int n = 2 + npingers; /* member 0 unused by the tally, 1 floods, 2.. ping */
    tally_init(&t, n, 1, -1);
    g_tally = &t;
    g_lat = (lat){0};
    crowd_init(&c, &s, on_ping_line, NULL);
    for (int i = 0; i < n; i++)
        cr_assert(crowd_connect(&c, 0, NULL) == i, "client %d: %s", i, strerror(errno));
    cr_assert(crowd_wait_welcomed(&c, 0, 30000), "not every client was welcomed");

    /* The flood: lines "m 1 K aaaa..." of line_len bytes, written from a 64 KiB window. */
    char *chunk = malloc(65536 + (size_t)line_len);
    cr_assert_not_null(chunk);
    size_t chunk_len = 0, chunk_off = 0;
    long lines_total = total / line_len, lines_built = 0, bytes_sent = 0;
    long pings_sent = 0, seq = 0;
    long long next_ping = h_now_ms(), start = h_now_ms(), deadline = start + 600000;
    int flood_fd = c.m[1].fd;
    while (h_now_ms() < deadline) {
        if (chunk_off == chunk_len && lines_built < lines_total) {
            chunk_len = chunk_off = 0;
            while (chunk_len + (size_t)line_len <= 65536 && lines_built < lines_total) {
                int h = sprintf(chunk + chunk_len, "m 1 %ld ", lines_built++);
                memset(chunk + chunk_len + h, 'f', (size_t)(line_len - h - 1));
                chunk[chunk_len + (size_t)line_len - 1] = '\n';
                chunk_len += (size_t)line_len;
            }
        }
        if (chunk_off < chunk_len) {
            ssize_t w = send(flood_fd, chunk + chunk_off, chunk_len - chunk_off,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) {
                chunk_off += (size_t)w;
                bytes_sent += w;
                t.sent = bytes_sent / line_len;
            } else {
                cr_assert(w < 0 && (errno == EAGAIN || errno == EINTR), "the flooder was cut off");
            }
        }
        bool flood_done = bytes_sent == lines_total * line_len;
        if (!flood_done && h_now_ms() >= next_ping) {
            for (int i = 2; i < n; i++) {
                char line[64];
                int len = snprintf(line, sizeof(line), "p %d %ld %lld\n", i, seq, h_now_ms());
                cr_assert(crowd_send(&c, i, line, (size_t)len), "pinger %d cut off", i);
                pings_sent++;
            }
            seq++;
            next_ping += every_ms;
        }
        crowd_pump(&c, chunk_off < chunk_len ? 0 : 1);
        /* Each ping reaches every member but its sender. */
        if (flood_done && tally_missing(&t, &c) == 0 && g_lat.pings_got == pings_sent * (n - 1))
            break;
    }
    long long took = h_now_ms() - start;
    long lost = tally_missing(&t, &c);
    long pings_lost = pings_sent * (n - 1) - g_lat.pings_got;
    cr_expect_eq(bytes_sent, lines_total * line_len, "the flooder could send only %ld of %ld bytes",
                 bytes_sent, lines_total * line_len);
    cr_expect_eq(lost, 0, "%ld flood lines lost", lost);
    cr_expect_eq(pings_lost, 0, "%ld chat lines lost", pings_lost);
    cr_expect_eq(t.disorder, 0, "%ld flood lines out of order", t.disorder);
    long p50 = lat_q(0.5), p99 = lat_q(0.99), max = lat_q(1.0);
    cr_expect(max < 2000, "a chat line took %ld ms behind the flood", max);
    stress_report("flooder", "%ld MB in %ld lines from one client in %.1f s to %d others, "
                  "%ld lines lost; %ld chat lines (%d clients), %ld lost, latency p50 %ld / "
                  "p99 %ld / max %ld ms; server peak RSS %ld KiB",
                  bytes_sent / 1000000, lines_total, (double)took / 1000.0, n - 1, lost,
                  g_lat.pings_got, npingers, pings_lost, p50, p99, max, server_hwm_kib(&s));
    free(chunk);
    free(g_lat.v);
    crowd_free(&c);
    free(t.next);
    h_server_stop(&s);
}

/* ------------------------------------------------------------------------ */

/* Many connections that send half a line and then nothing (slowloris), and never read,
 * while a few clients chat: the chat goes on unaffected, and the idle timeout reclaims
 * every half-open connection. */
Test(stress, half_open_connections_are_reclaimed)
{
    long nofile = stress_raise_nofile();
    int half = (int)stress_n(2000, 10000), nchat = 5;
    cr_assert(half + nchat + 64 < nofile, "descriptor limit %ld too low for %d connections",
              nofile, half);
    const int idle_s = 3;
    char idle_arg[16];
    snprintf(idle_arg, sizeof(idle_arg), "%d", idle_s);
    h_server s;
    cr_assert(h_server_start(&s, "--idle-timeout", idle_arg, "--flood", "0", NULL), "no banner");
    crowd c;
    tally t;
    tally_init(&t, nchat, nchat - 1, -1); /* publishers 1..nchat-1; 0 listens */
    g_tally = &t;
    g_idle_kicks = 0;
    g_lat = (lat){0};
    crowd_init(&c, &s, on_ping_line, NULL);
    for (int i = 0; i < nchat; i++)
        cr_assert(crowd_connect(&c, 0, NULL) == i, "client %d: %s", i, strerror(errno));
    cr_assert(crowd_wait_welcomed(&c, 0, 30000));
    long rss_before = server_rss_kib(&s);

    long long start = h_now_ms(), next_chat = start;
    int opened = 0;
    long seq = 0;
    bool reclaimed = false;
    /* Open the half-open connections while chatting; then chat on until every one of
     * them has been timed out (or 4 timeouts have passed). */
    while (h_now_ms() < start + 60000) {
        for (int k = 0; k < 200 && opened < half; k++, opened++) {
            int i = crowd_connect(&c, 0, NULL);
            cr_assert(i >= 0, "half-open connection %d: %s", opened, strerror(errno));
            crowd_ignore(&c, i);
            cr_assert(send(c.m[i].fd, "GET / HTTP/1.1 and never the end", 32, MSG_NOSIGNAL) == 32);
        }
        if (h_now_ms() >= next_chat) {
            for (int p = 0; p < nchat; p++) { /* every chatter talks: none is idle */
                char line[64];
                int len;
                if (p > 0) {
                    len = snprintf(line, sizeof(line), "m %d %ld\n", p, seq);
                    cr_assert(crowd_send(&c, p, line, (size_t)len), "chatter %d cut off", p);
                }
                len = snprintf(line, sizeof(line), "p %d %ld %lld\n", p, seq, h_now_ms());
                cr_assert(crowd_send(&c, p, line, (size_t)len), "chatter %d cut off", p);
            }
            t.sent = ++seq;
            next_chat += 100;
        }
        crowd_pump(&c, 5);
        if (opened == half && g_idle_kicks >= half) {
            reclaimed = true;
            break;
        }
    }
    long rss_peak = server_hwm_kib(&s);
    cr_assert(crowd_until(&c, caught_up, 30000), "%ld chat lines missing", tally_missing(&t, &c));
    long lost = tally_missing(&t, &c);
    /* Every half-open connection was closed by the server. */
    int closed = 0;
    char sink[65536];
    for (int i = nchat; i < c.n; i++) {
        long long by = h_now_ms() + 2000;
        ssize_t r;
        while ((r = read(c.m[i].fd, sink, sizeof(sink))) > 0 ||
               (r < 0 && errno == EAGAIN && h_now_ms() < by))
            if (r < 0)
                usleep(1000);
        closed += r == 0 || (r < 0 && errno == ECONNRESET);
    }
    long rss_after = server_rss_kib(&s);
    cr_expect(reclaimed, "only %ld of %d half-open connections timed out", g_idle_kicks, half);
    cr_expect_eq(closed, half, "%d of %d half-open connections closed", closed, half);
    cr_expect_eq(lost, 0, "%ld chat lines lost", lost);
    for (int i = 0; i < nchat; i++)
        cr_expect(!c.m[i].eof, "chatter %d was disconnected", i);
    long p99 = lat_q(0.99), max = lat_q(1.0);
    cr_expect(max < 3000, "a chat line took %ld ms", max);
    stress_report("half_open", "%d half-open connections (idle timeout %d s) all reclaimed in "
                  "%.1f s: %s; %d chatters, %ld lines, %ld lost, latency p99 %ld / max %ld ms; "
                  "server RSS %ld KiB before, peak %ld, after %ld",
                  half, idle_s, (double)(h_now_ms() - start) / 1000.0, closed == half ? "yes" : "NO",
                  nchat, t.deliveries, lost, p99, max, rss_before, rss_peak, rss_after);
    free(g_lat.v);
    crowd_free(&c);
    free(t.next);
    h_server_stop(&s);
}

/* ------------------------------------------------------------------------ */

static const char busy_line[] = "*** Server busy, try again later.";
static long g_busy;

static void on_fd_line(crowd *c, int who, const char *line, size_t len)
{
    on_tally_line(c, who, line, len);
    if (who >= 0 && len == sizeof(busy_line) - 1 && memcmp(line, busy_line, len) == 0)
        g_busy++;
}

static bool all_settled(crowd *c)
{
    for (int i = 0; i < c->n; i++)
        if (c->m[i].fd >= 0 && !c->m[i].welcomed && !c->m[i].eof)
            return false;
    return true;
}

/* The server's descriptor limit is pinned low and more clients come than it can hold:
 * the ones beyond are told the server is busy and closed, the ones inside lose nothing,
 * and once some leave, newcomers are welcomed again. */
Test(stress, descriptor_exhaustion)
{
    stress_raise_nofile();
    const int limit = 256, tries = (int)stress_n(400, 2000), npub = 5, per_pub = 20;
    h_server s;
    cr_assert(h_server_start_nofile(&s, limit, (const char *const[]){"--port", "0", "--flood",
                                                                     "0", NULL}));
    crowd c;
    tally t;
    g_busy = 0;
    tally_init(&t, tries, npub, -1);
    g_tally = &t;
    crowd_init(&c, &s, on_fd_line, NULL);
    for (int i = 0; i < tries; i++)
        cr_assert(crowd_connect(&c, 0, NULL) == i, "connect %d: %s", i, strerror(errno));
    cr_assert(crowd_until(&c, all_settled, 60000), "some clients neither welcomed nor refused");
    int welcomed = 0, refused = 0;
    for (int i = 0; i < tries; i++) {
        welcomed += c.m[i].welcomed;
        refused += !c.m[i].welcomed && c.m[i].eof;
    }
    cr_expect(welcomed > limit / 2 && welcomed < limit, "%d welcomed with %d descriptors",
              welcomed, limit);
    cr_expect_eq(welcomed + refused, tries);
    cr_expect_eq(g_busy, refused, "%d refused but %ld told the server is busy", refused, g_busy);
    /* Close the refused ones: what is left in the crowd are the members inside. */
    for (int i = 0; i < tries; i++)
        if (!c.m[i].welcomed)
            crowd_close(&c, i, false);

    /* Publishers among the first welcomed; everyone inside must get every line. */
    for (int p = 1; p <= npub; p++)
        cr_assert(c.m[p].welcomed, "client %d was refused", p);
    for (; t.sent < per_pub; t.sent++)
        for (int p = 1; p <= npub; p++) {
            char line[64];
            int len = snprintf(line, sizeof(line), "m %d %ld\n", p, t.sent);
            cr_assert(crowd_send(&c, p, line, (size_t)len));
        }
    cr_assert(crowd_until(&c, caught_up, 30000), "%ld lines missing", tally_missing(&t, &c));
    long lost = tally_missing(&t, &c);

    /* Service resumes: close 100 inside, then 100 newcomers are all welcomed. */
    int closed = 0;
    for (int i = tries - 1; i > npub && closed < 100; i--)
        if (c.m[i].fd >= 0) {
            crowd_close(&c, i, false);
            closed++;
        }
    int first_new = c.n, again = 0;
    long long by = h_now_ms() + 30000;
    while (again < closed && h_now_ms() < by) {
        int i = crowd_connect(&c, 0, NULL);
        cr_assert(i >= 0);
        crowd_wait_welcomed(&c, i, H_WAIT_MS); /* or refused: not all were closed yet */
        if (c.m[i].welcomed)
            again++;
        else
            crowd_close(&c, i, false);
    }
    cr_expect_eq(again, closed, "only %d of %d newcomers welcomed after clients left", again,
                 closed);
    stress_report("fd_exhaustion", "descriptor limit %d: %d clients tried, %d welcomed, %d "
                  "refused as busy; %d publishers x %d lines inside, %ld lost; %d newcomers "
                  "welcomed after %d left (%lld tries); server peak RSS %ld KiB",
                  limit, tries, welcomed, refused, npub, per_pub, lost, again, closed,
                  (long long)(c.n - first_new), server_hwm_kib(&s));
    crowd_free(&c);
    free(t.next);
    h_server_stop(&s);
}

/* ------------------------------------------------------------------------ */

static long g_leaked; /* lines holding text that was never completed */

static void on_vanish_line(crowd *c, int who, const char *line, size_t len)
{
    on_tally_line(c, who, line, len);
    if (who >= 0 && memmem(line, len, "never-finished", 14))
        g_leaked++;
}

/* Clients that vanish in the middle of a line (closing or resetting the connection,
 * inside a UTF-8 character or a telnet command), while three clients chat: nothing of
 * the unfinished lines reaches anyone, the chat loses nothing, and the server ends
 * with only the chatters and no more memory. */
Test(stress, clients_vanish_mid_line)
{
    stress_raise_nofile();
    const int rounds = (int)stress_n(2000, 50000), nchat = 3;
    h_server s;
    cr_assert(h_server_start(&s, "--flood", "0", "-q", NULL), "no banner");
    crowd c;
    tally t;
    tally_init(&t, nchat, nchat - 1, -1);
    g_tally = &t;
    g_leaked = 0;
    crowd_init(&c, &s, on_vanish_line, NULL);
    for (int i = 0; i < nchat; i++)
        cr_assert(crowd_connect(&c, 0, NULL) == i);
    cr_assert(crowd_wait_welcomed(&c, 0, 30000));
    static const char *const tails[] = {
        "never-finished line", "never-finished \xe2\x82", "never-finished \xff\xfa\x18",
        "never-finished \x1b[", "never-finished \xff",
    };
    long rss_start = server_rss_kib(&s), rss_warm = 0;
    long long start = h_now_ms();
    for (int r = 0; r < rounds; r++) {
        if (r == rounds / 2) /* by then the server's memory has reached its working size */
            rss_warm = server_rss_kib(&s);
        int i = crowd_connect(&c, 0, NULL);
        cr_assert(i >= 0, "round %d: %s", r, strerror(errno));
        const char *tail = tails[r % 5];
        cr_assert(crowd_send(&c, i, tail, strlen(tail)));
        crowd_close(&c, i, r % 2 == 0);
        if (r % 20 == 0) {
            for (int p = 1; p < nchat; p++) {
                char line[64];
                int len = snprintf(line, sizeof(line), "m %d %ld\n", p, t.sent);
                cr_assert(crowd_send(&c, p, line, (size_t)len), "chatter %d cut off", p);
            }
            t.sent++;
            /* Paced by the chat: at most 20 vanishing clients in flight. */
            cr_assert(crowd_until(&c, caught_up, 30000), "%ld lines missing",
                      tally_missing(&t, &c));
        }
        crowd_pump(&c, 0);
    }
    cr_assert(crowd_until(&c, caught_up, 30000), "%ld lines missing", tally_missing(&t, &c));
    long lost = tally_missing(&t, &c);
    /* Only the chatters are left: a newcomer is told it makes nchat + 1. */
    char want[64];
    snprintf(want, sizeof(want), "! %d users online.", nchat + 1);
    bool alone = false;
    long long by = h_now_ms() + H_WAIT_MS;
    while (!alone && h_now_ms() < by) {
        h_proc p;
        char line[512];
        cr_assert(h_tcp_connect(&p, "127.0.0.1", s.port));
        alone = h_read_line(&p.out, line, sizeof(line), H_WAIT_MS) > 0 && strstr(line, want);
        h_proc_close(&p);
        crowd_pump(&c, 20);
    }
    long rss_end = server_rss_kib(&s);
    cr_expect(alone, "the sessions of vanished clients are still there");
    cr_expect_eq(g_leaked, 0, "%ld lines of unfinished text were relayed", g_leaked);
    cr_expect_eq(lost, 0, "%ld chat lines lost", lost);
    cr_expect(server_sanitized(&s) || rss_end <= rss_warm + rss_warm / 4 + 1024,
              "server RSS grew from %ld to %ld KiB", rss_warm, rss_end);
    stress_report("vanish", "%d clients vanished mid-line (half reset) in %.1f s while %d chat; "
                  "%ld chat lines, %ld lost, %ld unfinished lines relayed; server RSS %ld KiB at "
                  "start, %ld half way, %ld at the end",
                  rounds, (double)(h_now_ms() - start) / 1000.0, nchat, t.deliveries, lost,
                  g_leaked, rss_start, rss_warm, rss_end);
    crowd_free(&c);
    free(t.next);
    h_server_stop(&s);
}

/* ------------------------------------------------------------------------ */

static const char shutdown_line[] = "*** Server shutting down.";

/* Every client publishes as fast as the server reads while the server gets SIGTERM.
 * Every line the server accepted reaches every client still connected: for each
 * publisher, every other client ends with the same unbroken run of its lines, then the
 * shutdown notice; and the server exits 0. */
Test(stress, sigterm_under_load)
{
    const int n = (int)stress_n(20, 100);
    const long long load_ms = stress_n(1000, 5000);
    h_server s;
    cr_assert(h_server_start(&s, "--flood", "0", "-q", NULL), "no banner");
    crowd c;
    tally t;
    tally_init(&t, n, n - 1, -1); /* publishers 1..n-1; member 0 only listens */
    g_tally = &t;
    crowd_init(&c, &s, on_tally_line, NULL);
    for (int i = 0; i < n; i++)
        cr_assert(crowd_connect(&c, 0, NULL) == i);
    cr_assert(crowd_wait_welcomed(&c, 0, 30000));

    /* Per publisher: the line being written and how much of it is out. */
    long *next = calloc((size_t)n, sizeof(long));
    char (*out)[64] = calloc((size_t)n, 64);
    size_t *out_len = calloc((size_t)n, sizeof(size_t)), *out_off = calloc((size_t)n, sizeof(size_t));
    cr_assert(next && out && out_len && out_off);
    long long start = h_now_ms(), by = start + load_ms + 30000;
    bool signalled = false;
    int open = n;
    while (open > 0 && h_now_ms() < by) {
        for (int p = 1; p < n; p++) {
            member *m = &c.m[p];
            if (m->fd < 0 || m->eof)
                continue;
            for (int burst = 0; burst < 8; burst++) {
                if (out_off[p] == out_len[p]) {
                    out_len[p] = (size_t)snprintf(out[p], 64, "m %d %ld\n", p, next[p]++);
                    out_off[p] = 0;
                }
                ssize_t w = send(m->fd, out[p] + out_off[p], out_len[p] - out_off[p],
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                if (w <= 0)
                    break; /* full, or closed by the server: the read side will tell */
                out_off[p] += (size_t)w;
            }
        }
        if (!signalled && h_now_ms() >= start + load_ms) {
            cr_assert_eq(kill(s.proc.pid, SIGTERM), 0);
            signalled = true;
        }
        crowd_pump(&c, 1);
        open = 0;
        for (int i = 0; i < n; i++)
            open += !c.m[i].eof;
    }
    cr_assert(signalled);
    cr_assert_eq(open, 0, "%d clients still connected 30 s after SIGTERM", open);
    bool exited = h_proc_wait(&s.proc, H_WAIT_MS);
    cr_assert(exited, "the server did not exit after SIGTERM");
    cr_expect(WIFEXITED(s.proc.status) && WEXITSTATUS(s.proc.status) == 0,
              "the server exited with status %d", s.proc.status);
    /* Same unbroken run of every publisher's lines at every other client. */
    long accepted = 0, unequal = 0;
    for (int p = 1; p < n; p++) {
        long want = -1;
        for (int r = 0; r < n; r++) {
            if (r == p)
                continue;
            long got = t.next[(size_t)r * (size_t)(n - 1) + (size_t)(p - 1)];
            if (want < 0)
                want = got;
            else if (got != want)
                unequal++;
        }
        accepted += want;
    }
    int told = 0;
    for (int i = 0; i < n; i++)
        told += c.m[i].rx_len == 0 && strcmp(c.m[i].last, shutdown_line) == 0;
    cr_expect_eq(t.disorder, 0, "%ld gaps or reorderings", t.disorder);
    cr_expect_eq(unequal, 0, "%ld (publisher, client) pairs saw a different number of lines",
                 unequal);
    cr_expect_eq(told, n, "only %d of %d clients got the shutdown notice last", told, n);
    stress_report("sigterm", "%d clients publishing, SIGTERM after %lld ms: %ld lines accepted, "
                  "each delivered to all %d others (%ld deliveries), %ld mismatches, %ld gaps; "
                  "exit status %d", n, load_ms, accepted, n - 1, t.deliveries, unequal,
                  t.disorder, WIFEXITED(s.proc.status) ? WEXITSTATUS(s.proc.status) : -1);
    free(next);
    free(out);
    free(out_len);
    free(out_off);
    crowd_free(&c);
    free(t.next);
    h_proc_close(&s.proc);
}

/* ------------------------------------------------------------------------ */

/* Connects to the server from src_ip (spreading connections over 127.0.0.0/8 so that
 * closed connections waiting in TIME_WAIT never exhaust the ports of one address). */
static int churn_connect(int port, unsigned k)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    struct sockaddr_in src = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(0x7F000000u | (2 + k % 250) << 8 | 1)};
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(0x7F000001u)};
    if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0 ||
        connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads until the welcome's end ("commands.\r\n") or timeout; true when it came. */
static bool churn_welcome(int fd)
{
    char buf[1024];
    size_t len = 0;
    long long by = h_now_ms() + H_WAIT_MS;
    while (h_now_ms() < by && len < sizeof(buf) - 1) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (r <= 0)
            return false;
        len += (size_t)r;
        buf[len] = '\0';
        if (strstr(buf, "commands.\r\n"))
            return true;
    }
    return false;
}

/* Clients connect and leave, over and over (after the welcome, at once, or with a
 * reset): the server's memory stays flat and it still serves afterwards. */
Test(stress, connect_disconnect_churn)
{
    const long total = stress_n(20000, 1000000);
    h_server s;
    cr_assert(h_server_start(&s, "-q", NULL), "no banner");
    long rss_start = server_rss_kib(&s), rss_warm = 0, welcomed = 0, failed = 0;
    long long start = h_now_ms();
    for (long k = 0; k < total; k++) {
        if (k == total / 10)
            rss_warm = server_rss_kib(&s);
        int fd = churn_connect(s.port, (unsigned)k);
        if (fd < 0) {
            failed++;
            cr_assert(failed < 100, "connect failed %ld times (last: %s)", failed, strerror(errno));
            continue;
        }
        switch (k % 3) {
        case 0: /* reads the welcome, then leaves */
            welcomed += churn_welcome(fd);
            break;
        case 1: /* leaves at once */
            break;
        case 2: { /* resets */
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
            break;
        }
        }
        close(fd);
    }
    long long took = h_now_ms() - start;
    /* Everyone has gone: a newcomer is alone. */
    bool alone = false;
    long long by = h_now_ms() + 30000;
    while (!alone && h_now_ms() < by) {
        h_proc p;
        char line[512];
        cr_assert(h_tcp_connect(&p, "127.0.0.1", s.port));
        alone = h_read_line(&p.out, line, sizeof(line), H_WAIT_MS) > 0 &&
                strstr(line, "! 1 user online.");
        h_proc_close(&p);
        if (!alone)
            usleep(20000);
    }
    long rss_end = server_rss_kib(&s), hwm = server_hwm_kib(&s);
    cr_expect(alone, "sessions of departed clients are still there");
    cr_expect_eq(welcomed, (total + 2) / 3, "%ld of %ld welcomes came", welcomed, (total + 2) / 3);
    cr_expect(server_sanitized(&s) || rss_end <= rss_warm + rss_warm / 4 + 1024,
              "server RSS grew from %ld to %ld KiB", rss_warm, rss_end);
    stress_report("churn", "%ld connections opened and closed (a third after the welcome, a "
                  "third at once, a third reset) in %.1f s (%.0f/s), %ld failed; server RSS %ld "
                  "KiB at start, %ld after 10%%, %ld at the end, peak %ld",
                  total, (double)took / 1000.0, (double)total * 1000.0 / (double)(took ? took : 1),
                  failed, rss_start, rss_warm, rss_end, hwm);
    h_server_stop(&s);
}
