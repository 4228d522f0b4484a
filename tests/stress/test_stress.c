/*
 * Fault, load and abuse tests against the real st_proactor binary (loopback only, every
 * wait bounded).  Each asserts what the other clients observed: messages lost (must be
 * 0), order, latency, and that the server stays up; each prints one "stress NAME:" line
 * with its figures.  make test runs the short version, make stress (ST_STRESS=long) the
 * long one.
 */
#include "crowd.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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
