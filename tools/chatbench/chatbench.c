/* chatbench: a load generator for fan-out (chat / pub-sub) servers on loopback.
 *
 * N clients connect; P of them publish M messages of S bytes each (window-bounded, or at a
 * fixed rate); every client receives. Each payload carries publisher id, sequence number,
 * a CLOCK_MONOTONIC timestamp and a checksum, so every receiver counts lost, reordered,
 * duplicated and damaged messages, and the receivers' interleavings of different
 * publishers are compared (sampled). Latency goes into a log-linear histogram.
 * A connect-only mode (--idle K) measures the server's RSS per idle connection.
 *
 * Protocols: line (st_proactor --raw, ncat --chat), redis (RESP pub/sub), nats.
 * See tools/chatbench/README.md for the design choices; --help for the options.
 * Plain libc + pthreads; C11; Linux (epoll, eventfd, timerfd).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* ------------------------------------------------------------------------- */
/* Options */

enum { PROTO_LINE, PROTO_REDIS, PROTO_NATS };
#define MAX_PORTS 16
static const char *const proto_names[] = {"line", "redis", "nats"};

static struct {
    const char *host;
    int port; /* the first of ports */
    int ports[MAX_PORTS], nports;
    int proto;
    long clients, publishers, messages, size, window;
    double rate, duration, timeout, stall, settle, connect_rate, hold;
    long idle;
    long server_pid;
    int sources;
    const char *channel;
    int threads;
    long order_sample;
    int verbose;
    bool publishers_set, window_set, timeout_set, size_set;
} O = {
    .host = "127.0.0.1", .port = -1, .proto = PROTO_LINE, .clients = 10, .publishers = -1,
    .messages = 1000, .size = 100, .window = 64, .rate = 0, .duration = 10, .timeout = 60,
    .stall = 5, .settle = 1, .idle = 0, .server_pid = 0, .sources = 1, .channel = "chatbench",
    .threads = 1, .order_sample = 0, .verbose = 0,
};

/* ------------------------------------------------------------------------- */
/* Small helpers */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("chatbench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p)
        die("out of memory (%zu x %zu bytes)", n, sz);
    return p;
}

static void *xrealloc(void *p, size_t sz)
{
    p = realloc(p, sz);
    if (!p)
        die("out of memory (%zu bytes)", sz);
    return p;
}

static const char HEX[] = "0123456789abcdef";

static void hexput(char *d, uint64_t v, int w)
{
    for (int i = w - 1; i >= 0; i--) {
        d[i] = HEX[v & 15];
        v >>= 4;
    }
}

/* Hex digit values, 0xff for anything else (filled by hex_init). A table instead of
 * branches: every delivered message has 38 hex digits to check. */
static uint8_t hexv[256];

static void hex_init(void)
{
    memset(hexv, 0xff, sizeof hexv);
    for (int i = 0; i < 10; i++)
        hexv['0' + i] = (uint8_t)i;
    for (int i = 0; i < 6; i++)
        hexv['a' + i] = (uint8_t)(10 + i);
}

static bool hexget(const char *s, int w, uint64_t *out)
{
    uint64_t v = 0;
    unsigned bad = 0;
    for (int i = 0; i < w; i++) {
        unsigned d = hexv[(unsigned char)s[i]];
        bad |= d;
        v = v << 4 | (d & 15);
    }
    *out = v;
    return !(bad & 0x80);
}

/* Raise RLIMIT_NOFILE: to `want` if allowed (root may raise the hard limit), else to the
 * hard limit. Returns the resulting soft limit. */
static rlim_t raise_nofile(rlim_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (want > rl.rlim_max) {
        struct rlimit r2 = {want, want};
        if (setrlimit(RLIMIT_NOFILE, &r2) == 0)
            return want;
    }
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    return rl.rlim_cur;
}

static long read_rss_kb(long pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

static long count_fds(long pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd", pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* ------------------------------------------------------------------------- */
/* Log-linear latency histogram (HdrHistogram-like: 32 sub-buckets per power of two,
 * i.e. <= ~3% relative error; values in ns; exact max kept separately). */

#define HIST_BUCKETS 2048

typedef struct {
    uint64_t c[HIST_BUCKETS];
    uint64_t n, max, min;
    double sum;
} hist;

static int hist_index(uint64_t v)
{
    if (v < 64)
        return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int sh = msb - 5;
    return 64 + (sh - 1) * 32 + (int)((v >> sh) - 32);
}

static uint64_t hist_upper(int i)
{
    if (i < 64)
        return (uint64_t)i;
    int sh = (i - 64) / 32 + 1;
    uint64_t top = (uint64_t)((i - 64) % 32 + 32);
    return ((top + 1) << sh) - 1;
}

static void hist_add(hist *h, uint64_t v)
{
    h->c[hist_index(v)]++;
    if (h->n == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->n++;
    h->sum += (double)v;
}

static void hist_merge(hist *d, const hist *s)
{
    for (int i = 0; i < HIST_BUCKETS; i++)
        d->c[i] += s->c[i];
    if (s->n && (d->n == 0 || s->min < d->min))
        d->min = s->min;
    if (s->max > d->max)
        d->max = s->max;
    d->n += s->n;
    d->sum += s->sum;
}

/* Value at quantile q: the upper edge of the bucket holding the ceil(q*n)-th sample. */
static uint64_t hist_q(const hist *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t target = (uint64_t)(q * (double)h->n);
    if ((double)target < q * (double)h->n)
        target++;
    if (target == 0)
        target = 1;
    uint64_t cum = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        cum += h->c[i];
        if (cum >= target) {
            uint64_t u = hist_upper(i);
            return u < h->max ? u : h->max;
        }
    }
    return h->max;
}

/* ------------------------------------------------------------------------- */
/* Payload: "CB pppppp ssssssss tttttttttttttttt cccccccc" + " " + padding (a-z), then '\n'
 * for the line protocol. p = publisher id, s = sequence, t = timestamp (ns, CLOCK_MONOTONIC;
 * the scheduled send time in rate mode), c = a 32-bit hash (payload_ck) of every content byte
 * except the checksum field itself. All printable ASCII. Sync messages are "CBSYNC rrrrrrrr". */

#define HDR_LEN 44
#define CK_OFF 36

/* 8 bytes per step (a serial byte-wise hash was most of the tool's own CPU time, and the
 * tool shares the machine with the server it measures). Every step is a bijection of h, so
 * any change confined to one word always changes the result. */
static inline uint64_t ck_mix(uint64_t h, const char *d, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, d + i, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 31;
    }
    if (i < n) {
        uint64_t w = 0;
        for (size_t k = i; k < n; k++)
            w = w << 8 | (unsigned char)d[k];
        h = (h ^ w ^ (uint64_t)(n - i) << 59) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 31;
    }
    return h;
}

static uint32_t payload_ck(const char *d, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull ^ n;
    if (n <= CK_OFF) {
        h = ck_mix(h, d, n);
    } else {
        h = ck_mix(h, d, CK_OFF);
        if (n > CK_OFF + 8)
            h = ck_mix(h, d + CK_OFF + 8, n - CK_OFF - 8);
    }
    return (uint32_t)(h ^ h >> 32);
}

/* ------------------------------------------------------------------------- */
/* Run state */

enum { PH_CONNECT, PH_SYNC, PH_RUN, PH_DONE, PH_ABORT };
enum { END_NONE, END_COMPLETE, END_TIMEOUT, END_STALL };

typedef struct thr thr;
typedef struct client client;

typedef struct conn {
    int fd;
    client *cl;
    bool is_rx;
    bool connected, ready, closed, out_armed, skipping;
    char *in;
    size_t inlen, incap;
    char *out;
    size_t outoff, outlen, outcap;
} conn;

struct client {
    int id;
    thr *th;
    conn *rx, *tx;
    int nconns, nready;
    bool synced, is_pub, finished;
    /* receiver state */
    uint64_t *seen;      /* P bitmaps of words_per_pub words */
    uint32_t *hi;        /* per publisher: highest seq received + 1 */
    uint64_t got, reordered, dup, damaged, self;
    uint64_t *samp;      /* sampled delivery order: pub << 32 | seq */
    size_t nsamp, capsamp;
    /* publisher state */
    uint64_t sent, target, t0, next_due;
};

struct thr {
    int idx, ep, evfd, tfd;
    pthread_t tid;
    int *cls, ncls, *pubs, npubs, nextc, pending;
    hist h;
    _Atomic uint64_t last_rx;
    uint64_t proto_errors, disconnects, foreign, prefixed, overlong;
    char prefix[48], foreign_sample[96], err[256], proto_err[160];
    uint64_t timer_at;
    uint64_t rx_now; /* when the bytes being parsed were received */
};

static struct {
    long N, P;
    uint64_t Mmax;          /* messages per publisher (capacity) */
    size_t plen;            /* payload content length (S, or S-1 for the line protocol) */
    size_t wpp;             /* bitmap words per publisher */
    uint64_t sample_k;
    double period_ns;
    char *alpha;
    struct sockaddr_in dst[MAX_PORTS]; /* --port P1,P2,...: client i goes to P(i mod n) */
    int ndst;
    client *cl;
    thr *th;
    int nthreads;
    _Atomic uint32_t *rcount;       /* per (pub, seq): receivers that got it */
    _Atomic uint64_t *completed;    /* per pub: messages received by all N-1 others */
    _Atomic int *waiting;           /* per pub: publisher blocked on its window */
    _Atomic uint64_t total_sent, total_completed;
    _Atomic long n_ready, n_synced, n_fail, pubs_finished;
    _Atomic int phase;
    int end_reason;
    uint64_t t_begin, t_start, t_end, deadline, sync_at;
    unsigned sync_round;
    int sentinel_ev, sentinel_tmr;
} G;

/* ------------------------------------------------------------------------- */
/* Output buffers and framing */

static void out_reserve(conn *c, size_t add)
{
    if (c->outoff && c->outoff == c->outlen)
        c->outoff = c->outlen = 0;
    if (c->outlen + add <= c->outcap)
        return;
    if (c->outoff) {
        memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
        c->outlen -= c->outoff;
        c->outoff = 0;
        if (c->outlen + add <= c->outcap)
            return;
    }
    size_t nc = c->outcap ? c->outcap : 4096;
    while (nc < c->outlen + add)
        nc *= 2;
    c->out = xrealloc(c->out, nc);
    c->outcap = nc;
}

static void out_put(conn *c, const void *p, size_t n)
{
    out_reserve(c, n);
    memcpy(c->out + c->outlen, p, n);
    c->outlen += n;
}

static void out_str(conn *c, const char *s) { out_put(c, s, strlen(s)); }

/* Reserves a framed publish of n content bytes; returns where the content goes. */
static char *begin_publish(conn *c, size_t n)
{
    char hdr[256];
    int hl = 0;
    const char *ch = O.channel;
    size_t tail = 0;
    switch (O.proto) {
    case PROTO_LINE:
        tail = 1;
        break;
    case PROTO_REDIS:
        hl = snprintf(hdr, sizeof hdr, "*3\r\n$7\r\nPUBLISH\r\n$%zu\r\n%s\r\n$%zu\r\n",
                      strlen(ch), ch, n);
        tail = 2;
        break;
    case PROTO_NATS:
        hl = snprintf(hdr, sizeof hdr, "PUB %s %zu\r\n", ch, n);
        tail = 2;
        break;
    }
    out_reserve(c, (size_t)hl + n + tail);
    memcpy(c->out + c->outlen, hdr, (size_t)hl);
    char *p = c->out + c->outlen + hl;
    if (tail == 1)
        p[n] = '\n';
    else
        memcpy(p + n, "\r\n", 2);
    c->outlen += (size_t)hl + n + tail;
    return p;
}

static void build_payload(char *d, uint32_t pub, uint32_t seq, uint64_t ts)
{
    size_t n = G.plen;
    memcpy(d, "CB ", 3);
    hexput(d + 3, pub, 6);
    d[9] = ' ';
    hexput(d + 10, seq, 8);
    d[18] = ' ';
    hexput(d + 19, ts, 16);
    d[35] = ' ';
    if (n > HDR_LEN) {
        d[HDR_LEN] = ' ';
        if (n > HDR_LEN + 1)
            memcpy(d + HDR_LEN + 1, G.alpha + (pub * 7u + seq) % 26u, n - HDR_LEN - 1);
    }
    hexput(d + CK_OFF, payload_ck(d, n), 8);
}

static bool verify_payload(const char *d, size_t n, uint32_t *pub, uint32_t *seq, uint64_t *ts)
{
    uint64_t p, s, t, ck;
    if (n != G.plen || memcmp(d, "CB ", 3) != 0 || d[9] != ' ' || d[18] != ' ' || d[35] != ' ')
        return false;
    if (!hexget(d + 3, 6, &p) || !hexget(d + 10, 8, &s) || !hexget(d + 19, 16, &t) ||
        !hexget(d + CK_OFF, 8, &ck))
        return false;
    if (ck != payload_ck(d, n) || p >= (uint64_t)G.P || s >= G.Mmax)
        return false;
    *pub = (uint32_t)p;
    *seq = (uint32_t)s;
    *ts = t;
    return true;
}

/* ------------------------------------------------------------------------- */
/* Connections */

static void conn_lost(thr *t, conn *c, int err);

static void set_out_interest(thr *t, conn *c, bool want)
{
    if (want == c->out_armed)
        return;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0),
                             .data.ptr = c};
    epoll_ctl(t->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->out_armed = want;
}

static void flush(thr *t, conn *c)
{
    if (c->closed || !c->connected)
        return;
    while (c->outoff < c->outlen) {
        ssize_t w = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
        if (w > 0) {
            c->outoff += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            conn_lost(t, c, errno);
            return;
        }
    }
    if (c->outoff == c->outlen)
        c->outoff = c->outlen = 0;
    set_out_interest(t, c, c->outlen > 0);
}

static void conn_ready(thr *t, conn *c)
{
    (void)t;
    if (c->ready)
        return;
    c->ready = true;
    if (++c->cl->nready == c->cl->nconns)
        atomic_fetch_add(&G.n_ready, 1);
}

static void pub_finish(client *cl)
{
    if (!cl->finished) {
        cl->finished = true;
        atomic_fetch_add(&G.pubs_finished, 1);
    }
}

static void conn_lost(thr *t, conn *c, int err)
{
    if (c->closed)
        return;
    c->closed = true;
    epoll_ctl(t->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    int ph = atomic_load(&G.phase);
    if (ph < PH_RUN) {
        if (!t->err[0])
            snprintf(t->err, sizeof t->err, "client %d: %s %s", c->cl->id,
                     c->connected ? "connection closed by the server:" : "connect failed:",
                     err ? strerror(err) : "end of stream");
        atomic_fetch_add(&G.n_fail, 1);
        return;
    }
    t->disconnects++;
    if (O.verbose)
        fprintf(stderr, "chatbench: client %d disconnected: %s\n", c->cl->id,
                err ? strerror(err) : "closed by server");
    if (c == c->cl->tx && c->cl->is_pub)
        pub_finish(c->cl);
}

static void on_connected(thr *t, conn *c)
{
    char buf[512];
    c->connected = true;
    switch (O.proto) {
    case PROTO_LINE:
        conn_ready(t, c);
        break;
    case PROTO_REDIS:
        if (c->is_rx) {
            snprintf(buf, sizeof buf, "*2\r\n$9\r\nSUBSCRIBE\r\n$%zu\r\n%s\r\n",
                     strlen(O.channel), O.channel);
            out_str(c, buf);
        } else {
            conn_ready(t, c);
        }
        break;
    case PROTO_NATS:
        snprintf(buf, sizeof buf,
                 "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,"
                 "\"name\":\"chatbench-%d\",\"lang\":\"c\",\"version\":\"1\"}\r\n"
                 "SUB %s 1\r\nPING\r\n",
                 c->cl->id, O.channel);
        out_str(c, buf);
        break;
    }
    flush(t, c);
}

/* Connects c to the server of client (or connection) number who. */
static int start_connect(thr *t, conn *c, int srcidx, long who)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (O.sources > 1) {
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)(1 + srcidx % O.sources));
        if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
            int e = errno;
            close(fd);
            return -e;
        }
    }
    c->fd = fd;
    const struct sockaddr_in *dst = &G.dst[who % G.ndst];
    int r = connect(fd, (const struct sockaddr *)dst, sizeof *dst);
    if (r != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (t) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
        epoll_ctl(t->ep, EPOLL_CTL_ADD, fd, &ev);
        c->out_armed = true;
    }
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Receiving */

static void wake_publisher(thr *t, uint32_t pub)
{
    if (atomic_exchange(&G.waiting[pub], 0)) {
        thr *pt = G.cl[pub].th;
        if (pt != t) {
            uint64_t one = 1;
            ssize_t w = write(pt->evfd, &one, sizeof one);
            (void)w;
        }
    }
}

static void on_payload(thr *t, conn *c, const char *p, size_t n)
{
    client *r = c->cl;
    if (!c->is_rx) {
        t->proto_errors++;
        return;
    }
    if (n >= 6 && memcmp(p, "CBSYNC", 6) == 0) {
        if (r->id != 0 && !r->synced) {
            r->synced = true;
            atomic_fetch_add(&G.n_synced, 1);
        }
        return;
    }
    uint32_t pub, seq;
    uint64_t ts;
    if (!verify_payload(p, n, &pub, &seq, &ts)) {
        if (n >= 2 && p[0] == 'C' && p[1] == 'B') {
            r->damaged++;
        } else {
            t->foreign++;
            if (!t->foreign_sample[0])
                snprintf(t->foreign_sample, sizeof t->foreign_sample, "%.*s",
                         (int)(n < 80 ? n : 80), p);
        }
        return;
    }
    if (pub == (uint32_t)r->id) {
        r->self++;
        return;
    }
    uint64_t *bm = r->seen + (size_t)pub * G.wpp;
    uint64_t bit = 1ull << (seq & 63);
    if (bm[seq >> 6] & bit) {
        r->dup++;
        return;
    }
    bm[seq >> 6] |= bit;
    if (seq < r->hi[pub])
        r->reordered++;
    else
        r->hi[pub] = seq + 1;
    r->got++;
    uint64_t now = t->rx_now;
    hist_add(&t->h, now > ts ? now - ts : 0);
    atomic_store_explicit(&t->last_rx, now, memory_order_relaxed);
    uint64_t m = (uint64_t)pub * 0x9E3779B97F4A7C15ull ^ (uint64_t)seq * 0xC2B2AE3D27D4EB4Full;
    m ^= m >> 29;
    if (G.sample_k <= 1 || m % G.sample_k == 0) {
        if (r->nsamp == r->capsamp) {
            r->capsamp = r->capsamp ? r->capsamp * 2 : 1024;
            r->samp = xrealloc(r->samp, r->capsamp * sizeof *r->samp);
        }
        r->samp[r->nsamp++] = (uint64_t)pub << 32 | seq;
    }
    uint32_t cnt = atomic_fetch_add_explicit(&G.rcount[(size_t)pub * G.Mmax + seq], 1,
                                             memory_order_relaxed) + 1;
    if (cnt == (uint32_t)(G.N - 1)) {
        atomic_fetch_add(&G.completed[pub], 1);
        atomic_fetch_add(&G.total_completed, 1);
        wake_publisher(t, pub);
    }
}

static void consume(conn *c, size_t pos)
{
    if (pos == 0)
        return;
    memmove(c->in, c->in + pos, c->inlen - pos);
    c->inlen -= pos;
}

static void handle_line(thr *t, conn *c, const char *p, size_t n)
{
    if (n >= 2 && p[0] == 'C' && p[1] == 'B') {
        on_payload(t, c, p, n);
        return;
    }
    const char *m = memmem(p, n, "CB", 2);
    if (!m) {
        t->foreign++;
        if (!t->foreign_sample[0])
            snprintf(t->foreign_sample, sizeof t->foreign_sample, "%.*s", (int)(n < 80 ? n : 80),
                     p);
        return;
    }
    t->prefixed++;
    if (!t->prefix[0])
        snprintf(t->prefix, sizeof t->prefix, "%.*s", (int)(m - p < 40 ? m - p : 40), p);
    on_payload(t, c, m, n - (size_t)(m - p));
}

static void parse_line(thr *t, conn *c)
{
    size_t pos = 0;
    while (pos < c->inlen && !c->closed) {
        char *nl = memchr(c->in + pos, '\n', c->inlen - pos);
        if (!nl)
            break;
        size_t end = (size_t)(nl - c->in);
        if (c->skipping) {
            c->skipping = false;
        } else {
            size_t len = end - pos;
            if (len && c->in[pos + len - 1] == '\r')
                len--;
            handle_line(t, c, c->in + pos, len);
        }
        pos = end + 1;
    }
    consume(c, pos);
    if (c->inlen == c->incap) { /* a line longer than the buffer: not ours */
        c->skipping = true;
        c->inlen = 0;
        t->overlong++;
    }
}

typedef struct {
    char type;
    const char *p;
    long long len;
} rv;

/* One RESP element: bytes consumed, 0 if incomplete, -1 if malformed. */
static long resp_elem(const char *b, size_t n, rv *out)
{
    if (n < 3)
        return 0;
    const char *e = memchr(b, '\r', n);
    if (!e || (size_t)(e - b) + 1 >= n)
        return 0;
    if (e[1] != '\n')
        return -1;
    size_t hl = (size_t)(e - b) + 2;
    out->type = b[0];
    switch (b[0]) {
    case '+':
    case '-':
    case ':':
        out->p = b + 1;
        out->len = e - b - 1;
        return (long)hl;
    case '$': {
        long long l = strtoll(b + 1, NULL, 10);
        if (l < 0) {
            out->p = NULL;
            out->len = -1;
            return (long)hl;
        }
        if (n < hl + (size_t)l + 2)
            return 0;
        out->p = b + hl;
        out->len = l;
        return (long)(hl + (size_t)l + 2);
    }
    case '*':
        out->len = strtoll(b + 1, NULL, 10);
        return (long)hl;
    default:
        return -1;
    }
}

static void proto_error(thr *t, conn *c, const char *what, const char *p, size_t n)
{
    t->proto_errors++;
    if (!t->proto_err[0])
        snprintf(t->proto_err, sizeof t->proto_err, "client %d: %s: %.*s", c->cl->id, what,
                 (int)(n < 100 ? n : 100), p ? p : "");
}

static bool rv_is(const rv *v, const char *s)
{
    size_t l = strlen(s);
    return v->p && (size_t)v->len == l && strncasecmp(v->p, s, l) == 0;
}

static void parse_redis(thr *t, conn *c)
{
    size_t pos = 0;
    while (!c->closed) {
        rv top, el[4];
        long k = resp_elem(c->in + pos, c->inlen - pos, &top);
        if (k == 0)
            break;
        if (k < 0) {
            proto_error(t, c, "malformed RESP", c->in + pos, c->inlen - pos);
            conn_lost(t, c, EPROTO);
            return;
        }
        if (top.type != '*') {
            if (top.type == '-')
                proto_error(t, c, "redis error", top.p, (size_t)top.len);
            pos += (size_t)k;
            continue;
        }
        if (top.len < 0 || top.len > 4) {
            proto_error(t, c, "unexpected RESP array", c->in + pos, c->inlen - pos);
            conn_lost(t, c, EPROTO);
            return;
        }
        size_t q = pos + (size_t)k;
        bool incomplete = false;
        for (int i = 0; i < top.len; i++) {
            long kk = resp_elem(c->in + q, c->inlen - q, &el[i]);
            if (kk == 0) {
                incomplete = true;
                break;
            }
            if (kk < 0 || el[i].type == '*') {
                proto_error(t, c, "malformed RESP element", c->in + q, c->inlen - q);
                conn_lost(t, c, EPROTO);
                return;
            }
            q += (size_t)kk;
        }
        if (incomplete)
            break;
        pos = q;
        if (top.len == 3 && rv_is(&el[0], "message") && el[2].p)
            on_payload(t, c, el[2].p, (size_t)el[2].len);
        else if (top.len == 3 && rv_is(&el[0], "subscribe"))
            conn_ready(t, c);
    }
    consume(c, pos);
    if (c->inlen == c->incap && !c->closed) {
        proto_error(t, c, "RESP reply larger than the buffer", c->in, 60);
        conn_lost(t, c, EPROTO);
    }
}

static void parse_nats(thr *t, conn *c)
{
    size_t pos = 0;
    while (!c->closed) {
        char *b = c->in + pos;
        size_t n = c->inlen - pos;
        char *e = memmem(b, n, "\r\n", 2);
        if (!e)
            break;
        size_t hl = (size_t)(e - b) + 2;
        if (n >= 4 && strncasecmp(b, "MSG ", 4) == 0) {
            const char *s = e;
            while (s > b && s[-1] != ' ')
                s--;
            char num[24];
            size_t nl = (size_t)(e - s);
            if (nl == 0 || nl >= sizeof num) {
                proto_error(t, c, "bad MSG", b, hl);
                conn_lost(t, c, EPROTO);
                return;
            }
            memcpy(num, s, nl);
            num[nl] = 0;
            size_t len = (size_t)strtoul(num, NULL, 10);
            if (n < hl + len + 2)
                break;
            on_payload(t, c, b + hl, len);
            pos += hl + len + 2;
            continue;
        }
        if (n >= 4 && strncasecmp(b, "PING", 4) == 0) {
            out_str(c, "PONG\r\n");
            flush(t, c);
        } else if (n >= 4 && strncasecmp(b, "PONG", 4) == 0) {
            conn_ready(t, c);
        } else if (n >= 4 && strncasecmp(b, "-ERR", 4) == 0) {
            proto_error(t, c, "nats error", b, hl - 2);
        }
        pos += hl;
    }
    consume(c, pos);
    if (c->inlen == c->incap && !c->closed) {
        proto_error(t, c, "NATS line larger than the buffer", c->in, 60);
        conn_lost(t, c, EPROTO);
    }
}

static void do_read(thr *t, conn *c)
{
    for (int iter = 0; iter < 8 && !c->closed; iter++) {
        size_t space = c->incap - c->inlen;
        ssize_t r = recv(c->fd, c->in + c->inlen, space, 0);
        if (r > 0) {
            c->inlen += (size_t)r;
            t->rx_now = now_ns(); /* one clock read per recv, not per message */
            switch (O.proto) {
            case PROTO_LINE: parse_line(t, c); break;
            case PROTO_REDIS: parse_redis(t, c); break;
            case PROTO_NATS: parse_nats(t, c); break;
            }
            if ((size_t)r < space)
                break;
            continue;
        }
        if (r == 0) {
            conn_lost(t, c, 0);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        conn_lost(t, c, errno);
        return;
    }
}

/* ------------------------------------------------------------------------- */
/* Publishing */

static void pump(thr *t, client *cl)
{
    conn *c = cl->tx;
    if (cl->finished || c->closed)
        return;
    uint32_t p = (uint32_t)cl->id;
    uint64_t now = now_ns();
    cl->next_due = 0;
    while (cl->sent < cl->target) {
        if (c->outlen - c->outoff > (1u << 20))
            break;
        if (O.window > 0) {
            uint64_t comp = atomic_load(&G.completed[p]);
            if (cl->sent - comp >= (uint64_t)O.window) {
                atomic_store(&G.waiting[p], 1);
                comp = atomic_load(&G.completed[p]);
                if (cl->sent - comp >= (uint64_t)O.window)
                    break;
                atomic_store(&G.waiting[p], 0);
            }
        }
        uint64_t ts;
        if (O.rate > 0) {
            uint64_t sched = cl->t0 + (uint64_t)((double)cl->sent * G.period_ns);
            if (sched > now) {
                now = now_ns();
                if (sched > now) {
                    cl->next_due = sched;
                    break;
                }
            }
            ts = sched;
        } else {
            ts = now_ns();
        }
        char *d = begin_publish(c, G.plen);
        build_payload(d, p, (uint32_t)cl->sent, ts);
        cl->sent++;
        atomic_fetch_add(&G.total_sent, 1);
    }
    if (cl->sent >= cl->target)
        pub_finish(cl);
    flush(t, c);
}

static void send_sync(thr *t)
{
    client *c0 = &G.cl[0];
    char s[32];
    int n = snprintf(s, sizeof s, "CBSYNC %08x", ++G.sync_round);
    char *d = begin_publish(c0->tx, (size_t)n);
    memcpy(d, s, (size_t)n);
    flush(t, c0->tx);
    G.sync_at = now_ns();
}

/* ------------------------------------------------------------------------- */
/* Event loop */

static void end_run(int reason)
{
    G.end_reason = reason;
    G.t_end = now_ns();
    atomic_store(&G.phase, PH_DONE);
}

static void control(thr *t)
{
    int ph = atomic_load(&G.phase);
    uint64_t now = now_ns();
    if (ph < PH_RUN && atomic_load(&G.n_fail) > 0) {
        atomic_store(&G.phase, PH_ABORT);
        return;
    }
    if (ph < PH_RUN && now >= G.deadline) {
        snprintf(t->err, sizeof t->err, "%s before the deadline (%ld of %ld clients ready, "
                 "%ld of %ld saw the sync message)",
                 ph == PH_CONNECT ? "could not connect all clients" : "the server did not relay "
                 "the sync message to every client",
                 atomic_load(&G.n_ready), G.N, atomic_load(&G.n_synced), G.N - 1);
        atomic_store(&G.phase, PH_ABORT);
        return;
    }
    if (ph == PH_CONNECT && atomic_load(&G.n_ready) == G.N) {
        atomic_store(&G.phase, PH_SYNC);
        send_sync(t);
        return;
    }
    if (ph == PH_SYNC) {
        if (atomic_load(&G.n_synced) == G.N - 1) {
            G.t_start = now_ns();
            for (long i = 0; i < G.P; i++)
                G.cl[i].t0 = G.t_start + (uint64_t)(G.period_ns * (double)i / (double)G.P);
            atomic_store(&G.phase, PH_RUN);
        } else if (now - G.sync_at > 200000000ull) {
            send_sync(t);
        }
        return;
    }
    if (ph == PH_RUN) {
        if (atomic_load(&G.pubs_finished) == G.P &&
            atomic_load(&G.total_completed) == atomic_load(&G.total_sent)) {
            end_run(END_COMPLETE);
            return;
        }
        if (now >= G.deadline) {
            end_run(END_TIMEOUT);
            return;
        }
        uint64_t last = G.t_start;
        for (int i = 0; i < G.nthreads; i++) {
            uint64_t l = atomic_load_explicit(&G.th[i].last_rx, memory_order_relaxed);
            if (l > last)
                last = l;
        }
        if (now > last && now - last > (uint64_t)(O.stall * 1e9))
            end_run(END_STALL);
    }
}

static void start_connects(thr *t)
{
    long budget = t->ncls;
    if (O.connect_rate > 0) { /* pacing, for servers with a short listen backlog */
        double el = (double)(now_ns() - G.t_begin) / 1e9;
        budget = (long)(el * O.connect_rate / G.nthreads) + 1;
    }
    while (t->pending < 128 && t->nextc < t->ncls && t->nextc < budget) {
        client *cl = &G.cl[t->cls[t->nextc++]];
        conn *cs[2] = {cl->rx, cl->tx != cl->rx ? cl->tx : NULL};
        for (int k = 0; k < 2; k++) {
            if (!cs[k])
                continue;
            int r = start_connect(t, cs[k], cl->id * 2 + k, cl->id);
            if (r < 0) {
                if (!t->err[0])
                    snprintf(t->err, sizeof t->err, "client %d: cannot connect: %s", cl->id,
                             strerror(-r));
                cs[k]->closed = true;
                atomic_fetch_add(&G.n_fail, 1);
                return;
            }
            t->pending++;
        }
    }
}

static void arm_timer(thr *t)
{
    if (O.rate <= 0)
        return;
    uint64_t due = 0;
    for (int i = 0; i < t->npubs; i++) {
        client *cl = &G.cl[t->pubs[i]];
        if (!cl->finished && cl->next_due && (!due || cl->next_due < due))
            due = cl->next_due;
    }
    if (due == t->timer_at)
        return;
    t->timer_at = due;
    struct itimerspec its = {0};
    its.it_value.tv_sec = (time_t)(due / 1000000000ull);
    its.it_value.tv_nsec = (long)(due % 1000000000ull);
    timerfd_settime(t->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void *thread_main(void *arg)
{
    thr *t = arg;
    struct epoll_event evs[256];
    for (;;) {
        int ph = atomic_load(&G.phase);
        if (ph >= PH_DONE)
            break;
        if (ph == PH_CONNECT)
            start_connects(t);
        if (t->idx == 0) {
            control(t);
            ph = atomic_load(&G.phase);
            if (ph >= PH_DONE)
                break;
        }
        if (ph == PH_RUN) {
            for (int i = 0; i < t->npubs; i++)
                pump(t, &G.cl[t->pubs[i]]);
            arm_timer(t);
        }
        int n = epoll_wait(t->ep, evs, 256, t->idx == 0 ? 5 : 20);
        for (int i = 0; i < n; i++) {
            void *ptr = evs[i].data.ptr;
            if (ptr == &G.sentinel_ev) {
                uint64_t v;
                ssize_t r = read(t->evfd, &v, sizeof v);
                (void)r;
                continue;
            }
            if (ptr == &G.sentinel_tmr) {
                uint64_t v;
                ssize_t r = read(t->tfd, &v, sizeof v);
                (void)r;
                t->timer_at = 0;
                continue;
            }
            conn *c = ptr;
            uint32_t e = evs[i].events;
            if (c->closed)
                continue;
            if (!c->connected) {
                if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
                    int err = 0;
                    socklen_t len = sizeof err;
                    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                    t->pending--;
                    if (err) {
                        conn_lost(t, c, err);
                        continue;
                    }
                    on_connected(t, c);
                }
                continue;
            }
            if (e & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))
                do_read(t, c);
            if ((e & EPOLLOUT) && !c->closed)
                flush(t, c);
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------- */
/* Order check (after the run): each receiver's sampled delivery sequence (the same
 * 1-in-K subset of messages for every receiver, chosen by a hash of (publisher, seq)) is
 * compared with the sequences of up to 5 reference receivers: non-publishers first (they
 * see every message), then clients 0, 1, ... A "mismatch" is an adjacent pair in the
 * receiver's sampled sequence, from two different publishers, that the reference received
 * in the opposite order (pairs the reference did not receive are skipped; a receiver's own
 * messages never reach it). Per receiver the lower median of its counts against the other
 * references is taken, so one misbehaving reference does not condemn everybody. */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t order_check(uint64_t *receivers_bad)
{
    size_t tot = (size_t)G.P * G.Mmax;
    int32_t *rank = xcalloc(tot, sizeof *rank);
    enum { NREF = 5 };
    long refs[NREF];
    int nref = 0;
    for (long i = G.P; i < G.N && nref < NREF; i++)
        refs[nref++] = i;
    for (long i = 0; i < G.P && nref < NREF; i++)
        refs[nref++] = i;
    uint64_t *cnt = xcalloc((size_t)G.N * NREF, sizeof *cnt);
    for (int k = 0; k < nref; k++) {
        for (size_t i = 0; i < tot; i++)
            rank[i] = -1;
        client *rc = &G.cl[refs[k]];
        for (size_t i = 0; i < rc->nsamp; i++) {
            uint64_t s = rc->samp[i];
            rank[(s >> 32) * G.Mmax + (uint32_t)s] = (int32_t)i;
        }
        for (long r = 0; r < G.N; r++) {
            if (r == refs[k])
                continue;
            client *c = &G.cl[r];
            uint64_t mism = 0;
            int32_t prev = -1;
            uint64_t prevpub = UINT64_MAX;
            for (size_t i = 0; i < c->nsamp; i++) {
                uint64_t s = c->samp[i];
                int32_t rk = rank[(s >> 32) * G.Mmax + (uint32_t)s];
                if (rk < 0)
                    continue;
                if (prev >= 0 && rk < prev && (s >> 32) != prevpub)
                    mism++;
                prev = rk;
                prevpub = s >> 32;
            }
            cnt[(size_t)r * NREF + (size_t)k] = mism;
        }
    }
    uint64_t total = 0, bad = 0;
    for (long r = 0; r < G.N; r++) {
        uint64_t v[NREF];
        int nv = 0;
        for (int k = 0; k < nref; k++)
            if (refs[k] != r)
                v[nv++] = cnt[(size_t)r * NREF + (size_t)k];
        if (nv == 0)
            continue;
        qsort(v, (size_t)nv, sizeof v[0], cmp_u64);
        uint64_t m = v[(nv - 1) / 2];
        total += m;
        bad += m > 0;
    }
    free(rank);
    free(cnt);
    *receivers_bad = bad;
    return total;
}

/* ------------------------------------------------------------------------- */
/* Throughput / rate mode */

static int run_bench(void)
{
    G.N = O.clients;
    G.P = O.publishers;
    G.plen = O.proto == PROTO_LINE ? (size_t)O.size - 1 : (size_t)O.size;
    if (O.rate > 0) {
        double m = O.rate * O.duration;
        G.Mmax = (uint64_t)m + ((double)(uint64_t)m < m);
        G.period_ns = 1e9 / O.rate;
    } else {
        G.Mmax = (uint64_t)O.messages;
    }
    if (G.Mmax == 0 || G.Mmax > 0xffffffffull)
        die("messages per publisher must be between 1 and 2^32-1 (got %llu)",
            (unsigned long long)G.Mmax);
    G.wpp = (size_t)((G.Mmax + 63) / 64);
    double mem = (double)G.N * (double)G.P * (double)G.wpp * 8.0 +
                 (double)G.P * (double)G.Mmax * 8.0;
    if (mem > 4e9)
        die("the bookkeeping would need %.1f GB (clients x publishers x messages too large)",
            mem / 1e9);
    uint64_t max_deliveries = G.Mmax * (uint64_t)G.P * (uint64_t)(G.N - 1);
    G.sample_k = O.order_sample > 0 ? (uint64_t)O.order_sample : max_deliveries / 4000000 + 1;

    rlim_t need = (rlim_t)(G.N + (O.proto == PROTO_REDIS ? G.P + 1 : 0) + 64);
    rlim_t have = raise_nofile(need);
    if (have < need)
        die("need %llu file descriptors for %ld clients but RLIMIT_NOFILE is %llu "
            "(raise the hard limit: ulimit -Hn)",
            (unsigned long long)need, G.N, (unsigned long long)have);

    G.alpha = xcalloc(G.plen + 64, 1);
    for (size_t i = 0; i < G.plen + 63; i++)
        G.alpha[i] = (char)('a' + i % 26);
    G.rcount = xcalloc((size_t)G.P * G.Mmax, sizeof *G.rcount);
    G.completed = xcalloc((size_t)G.P, sizeof *G.completed);
    G.waiting = xcalloc((size_t)G.P, sizeof *G.waiting);
    G.nthreads = O.threads;
    G.th = xcalloc((size_t)G.nthreads, sizeof *G.th);
    G.cl = xcalloc((size_t)G.N, sizeof *G.cl);
    size_t incap = 65536;
    if (incap < 4 * (size_t)O.size + 4096)
        incap = 4 * (size_t)O.size + 4096;

    for (int i = 0; i < G.nthreads; i++) {
        thr *t = &G.th[i];
        t->idx = i;
        t->ep = epoll_create1(EPOLL_CLOEXEC);
        t->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        t->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (t->ep < 0 || t->evfd < 0 || t->tfd < 0)
            die("epoll/eventfd/timerfd: %s", strerror(errno));
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &G.sentinel_ev};
        epoll_ctl(t->ep, EPOLL_CTL_ADD, t->evfd, &ev);
        ev.data.ptr = &G.sentinel_tmr;
        epoll_ctl(t->ep, EPOLL_CTL_ADD, t->tfd, &ev);
        t->cls = xcalloc((size_t)G.N / G.nthreads + 1, sizeof(int));
        t->pubs = xcalloc((size_t)G.P / G.nthreads + 1, sizeof(int));
    }
    for (long i = 0; i < G.N; i++) {
        client *cl = &G.cl[i];
        thr *t = &G.th[i % G.nthreads];
        cl->id = (int)i;
        cl->th = t;
        t->cls[t->ncls++] = (int)i;
        cl->is_pub = i < G.P;
        cl->target = cl->is_pub ? G.Mmax : 0;
        if (cl->is_pub)
            t->pubs[t->npubs++] = (int)i;
        cl->rx = xcalloc(1, sizeof(conn));
        cl->rx->cl = cl;
        cl->rx->is_rx = true;
        cl->rx->in = xcalloc(incap, 1);
        cl->rx->incap = incap;
        cl->rx->fd = -1;
        cl->nconns = 1;
        /* Redis: a subscribed connection cannot PUBLISH, so publishers (and client 0,
         * which sends the sync message) get a second, publishing-only connection. */
        if (O.proto == PROTO_REDIS && (cl->is_pub || i == 0)) {
            cl->tx = xcalloc(1, sizeof(conn));
            cl->tx->cl = cl;
            cl->tx->in = xcalloc(incap, 1);
            cl->tx->incap = incap;
            cl->tx->fd = -1;
            cl->nconns = 2;
        } else {
            cl->tx = cl->rx;
        }
        cl->seen = xcalloc((size_t)G.P * G.wpp, sizeof(uint64_t));
        cl->hi = xcalloc((size_t)G.P, sizeof(uint32_t));
    }

    G.t_begin = now_ns();
    G.deadline = G.t_begin + (uint64_t)(O.timeout * 1e9);
    atomic_store(&G.phase, PH_CONNECT);
    for (int i = 1; i < G.nthreads; i++)
        if (pthread_create(&G.th[i].tid, NULL, thread_main, &G.th[i]) != 0)
            die("pthread_create failed");
    thread_main(&G.th[0]);
    for (int i = 1; i < G.nthreads; i++)
        pthread_join(G.th[i].tid, NULL);

    if (atomic_load(&G.phase) == PH_ABORT) {
        for (int i = 0; i < G.nthreads; i++)
            if (G.th[i].err[0]) {
                fprintf(stderr, "chatbench: could not run: %s\n", G.th[i].err);
                break;
            }
        for (int i = 0; i < G.nthreads; i++)
            if (G.th[i].proto_err[0])
                fprintf(stderr, "chatbench: protocol error: %s\n", G.th[i].proto_err);
        return 1;
    }

    /* ---- results ---- */
    hist h = {0};
    uint64_t last_rx = G.t_start, proto_errors = 0, disconnects = 0, foreign = 0,
             prefixed = 0, overlong = 0;
    const char *prefix = "", *foreign_sample = "", *proto_err = "";
    for (int i = 0; i < G.nthreads; i++) {
        thr *t = &G.th[i];
        hist_merge(&h, &t->h);
        if (t->last_rx > last_rx)
            last_rx = t->last_rx;
        proto_errors += t->proto_errors;
        disconnects += t->disconnects;
        foreign += t->foreign;
        prefixed += t->prefixed;
        overlong += t->overlong;
        if (!prefix[0])
            prefix = t->prefix;
        if (!foreign_sample[0])
            foreign_sample = t->foreign_sample;
        if (!proto_err[0])
            proto_err = t->proto_err;
    }
    uint64_t sent = 0, good = 0, reordered = 0, dup = 0, damaged = 0, self = 0;
    uint64_t expected = 0, lossy_receivers = 0;
    for (long p = 0; p < G.P; p++)
        sent += G.cl[p].sent;
    for (long r = 0; r < G.N; r++) {
        client *c = &G.cl[r];
        uint64_t exp_r = sent - (r < G.P ? c->sent : 0);
        expected += exp_r;
        good += c->got;
        reordered += c->reordered;
        dup += c->dup;
        damaged += c->damaged;
        self += c->self;
        lossy_receivers += c->got < exp_r;
    }
    uint64_t lost = expected - good;
    uint64_t order_bad_receivers = 0;
    uint64_t order_mism = order_check(&order_bad_receivers);
    double elapsed = (double)(last_rx - G.t_start) / 1e9;
    double run_s = (double)(G.t_end - G.t_start) / 1e9;
    double dps = elapsed > 0 ? (double)good / elapsed : 0;
    const char *reason = G.end_reason == END_COMPLETE ? "complete"
                         : G.end_reason == END_TIMEOUT ? "timeout" : "stalled";

    printf("chatbench: proto=%s %s:%d clients=%ld publishers=%ld size=%ld threads=%d\n",
           proto_names[O.proto], O.host, O.port, G.N, G.P, O.size, G.nthreads);
    if (O.rate > 0)
        printf("  mode: rate %.1f msg/s per publisher for %.1f s (%llu msgs each), window %ld\n",
               O.rate, O.duration, (unsigned long long)G.Mmax, O.window);
    else
        printf("  mode: throughput, %llu msgs per publisher, window %ld (message done when "
               "all %ld other clients got it)\n",
               (unsigned long long)G.Mmax, O.window, G.N - 1);
    printf("  run ended: %s after %.3f s (last delivery at %.3f s)\n", reason, run_s, elapsed);
    printf("  sent %llu messages; expected deliveries %llu (each to every other client)\n",
           (unsigned long long)sent, (unsigned long long)expected);
    printf("  delivered %llu (%.0f/s, %.1f MB/s payload)\n", (unsigned long long)good, dps,
           dps * (double)O.size / 1e6);
    printf("  lost %llu (%llu receivers affected), reordered %llu, duplicated %llu, damaged %llu\n",
           (unsigned long long)lost, (unsigned long long)lossy_receivers,
           (unsigned long long)reordered, (unsigned long long)dup, (unsigned long long)damaged);
    printf("  cross-publisher order mismatches %llu (%llu receivers; 1 in %llu messages sampled)\n",
           (unsigned long long)order_mism, (unsigned long long)order_bad_receivers,
           (unsigned long long)G.sample_k);
    printf("  latency (%s): p50 %.1f us, p90 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us, "
           "mean %.1f us\n",
           O.rate > 0 ? "from scheduled send time" : "from send time",
           hist_q(&h, 0.5) / 1e3, hist_q(&h, 0.9) / 1e3, hist_q(&h, 0.99) / 1e3,
           hist_q(&h, 0.999) / 1e3, h.max / 1e3, h.n ? h.sum / (double)h.n / 1e3 : 0);
    if (self)
        printf("  own messages delivered back to their publisher (ignored): %llu\n",
               (unsigned long long)self);
    if (prefixed)
        printf("  lines with a prefix before the payload (stripped): %llu, e.g. \"%s\"\n",
               (unsigned long long)prefixed, prefix);
    if (foreign)
        printf("  foreign lines/messages ignored: %llu, e.g. \"%s\"\n",
               (unsigned long long)foreign, foreign_sample);
    if (overlong)
        printf("  overlong lines skipped: %llu\n", (unsigned long long)overlong);
    if (disconnects)
        printf("  connections closed by the server during the run: %llu\n",
               (unsigned long long)disconnects);
    if (proto_errors)
        printf("  protocol errors: %llu, first: %s\n", (unsigned long long)proto_errors, proto_err);
    printf("RESULT proto=%s clients=%ld publishers=%ld size=%ld window=%ld rate=%g threads=%d "
           "end=%s sent=%llu expected=%llu deliveries=%llu deliveries_per_s=%.0f elapsed_s=%.3f "
           "lost=%llu reordered=%llu duplicated=%llu damaged=%llu order_mismatches=%llu "
           "self=%llu foreign=%llu disconnects=%llu "
           "p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f\n",
           proto_names[O.proto], G.N, G.P, O.size, O.window, O.rate, G.nthreads, reason,
           (unsigned long long)sent, (unsigned long long)expected, (unsigned long long)good, dps,
           elapsed, (unsigned long long)lost, (unsigned long long)reordered,
           (unsigned long long)dup, (unsigned long long)damaged, (unsigned long long)order_mism,
           (unsigned long long)self, (unsigned long long)foreign,
           (unsigned long long)disconnects, hist_q(&h, 0.5) / 1e3, hist_q(&h, 0.9) / 1e3,
           hist_q(&h, 0.99) / 1e3, hist_q(&h, 0.999) / 1e3, h.max / 1e3);
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Connect-only mode */

enum { IC_NONE, IC_CONNECTING, IC_HANDSHAKE, IC_READY, IC_CLOSED };

typedef struct {
    int fd;
    uint8_t st;
    uint8_t match; /* bytes of the handshake token matched so far */
} iconn;

static const char *idle_token(void)
{
    return O.proto == PROTO_REDIS ? "subscribe" : O.proto == PROTO_NATS ? "PONG" : NULL;
}

static char idle_close_msg[128]; /* what the server said before closing a connection */
static long idle_server_closed;

static uint64_t idle_bytes; /* received by idle connections, all discarded */

static void idle_read(iconn *c, long *nready, long *nclosed)
{
    char buf[16384];
    const char *tok = idle_token();
    ssize_t last = 0;
    for (;;) {
        ssize_t r = recv(c->fd, buf, sizeof buf, 0);
        if (r > 0) {
            last = r;
            idle_bytes += (uint64_t)r;
            if (c->st == IC_HANDSHAKE && tok) {
                size_t tl = strlen(tok);
                for (ssize_t i = 0; i < r && c->st == IC_HANDSHAKE; i++) {
                    if (buf[i] == tok[c->match]) {
                        if (++c->match == tl) {
                            c->st = IC_READY;
                            (*nready)++;
                        }
                    } else {
                        c->match = buf[i] == tok[0];
                    }
                }
            }
            if (O.proto == PROTO_NATS && memmem(buf, (size_t)r, "PING\r\n", 6)) {
                ssize_t w = send(c->fd, "PONG\r\n", 6, MSG_NOSIGNAL);
                (void)w;
            }
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (c->st == IC_READY)
            (*nready)--;
        idle_server_closed++;
        if (!idle_close_msg[0]) {
            if (last > 0) {
                size_t n = (size_t)last < sizeof idle_close_msg - 1 ? (size_t)last
                                                                     : sizeof idle_close_msg - 1;
                for (size_t i = 0; i < n; i++)
                    idle_close_msg[i] = buf[i] >= 32 && buf[i] < 127 ? buf[i] : ' ';
            } else {
                snprintf(idle_close_msg, sizeof idle_close_msg, "(%s)",
                         r < 0 ? strerror(errno) : "closed without a word");
            }
        }
        c->st = IC_CLOSED;
        close(c->fd);
        (*nclosed)++;
        return;
    }
}

/* One wait on the idle connections: reads (and discards) what arrived. */
static void idle_poll(int ep, struct epoll_event *evs, iconn *cs, long *nready, long *nclosed)
{
    int n = epoll_wait(ep, evs, 512, 50);
    for (int i = 0; i < n; i++) {
        iconn *c = &cs[evs[i].data.u64];
        if (c->st == IC_HANDSHAKE || c->st == IC_READY)
            idle_read(c, nready, nclosed);
    }
}

static long idle_open(const iconn *cs, long n)
{
    long open = 0;
    for (long i = 0; i < n; i++)
        open += cs[i].st == IC_READY || cs[i].st == IC_HANDSHAKE;
    return open;
}

static int run_idle(void)
{
    long K = O.idle;
    rlim_t need = (rlim_t)K + 64;
    rlim_t have = raise_nofile(need);
    if (have < need) {
        fprintf(stderr, "chatbench: cannot hold %ld connections: RLIMIT_NOFILE is %llu (hard "
                "limit; %llu needed). Raise it (ulimit -Hn, or run as root) or lower --idle.\n",
                K, (unsigned long long)have, (unsigned long long)need);
        printf("RESULT mode=idle proto=%s conns=0 target=%ld reached=0 error=fd_limit "
               "fd_limit=%llu\n", proto_names[O.proto], K, (unsigned long long)have);
        return 1;
    }
    if (K > 28000L * O.sources)
        fprintf(stderr, "chatbench: warning: %ld connections from %d source address(es) may "
                "exceed the ephemeral port range; consider --sources %ld\n",
                K, O.sources, K / 28000 + 1);
    long rss_before = -1, fds_before = -1;
    if (O.server_pid > 0) {
        rss_before = read_rss_kb(O.server_pid);
        fds_before = count_fds(O.server_pid);
        if (rss_before < 0)
            die("cannot read /proc/%ld/status (is --server-pid right?)", O.server_pid);
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    iconn *cs = xcalloc((size_t)K, sizeof *cs);
    long next = 0, pending = 0, nconn = 0, nready = 0, nclosed = 0, failed_at = -1;
    int first_err = 0;
    char first_err_where[64] = "";
    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(O.timeout * 1e9);
    struct epoll_event evs[512];
    char hs[512];
    size_t hslen = 0;
    if (O.proto == PROTO_REDIS)
        hslen = (size_t)snprintf(hs, sizeof hs, "*2\r\n$9\r\nSUBSCRIBE\r\n$%zu\r\n%s\r\n",
                                 strlen(O.channel), O.channel);
    else if (O.proto == PROTO_NATS)
        hslen = (size_t)snprintf(hs, sizeof hs,
                                 "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false}"
                                 "\r\nSUB %s 1\r\nPING\r\n", O.channel);

    /* connect, at most 256 in flight, stopping at the first failure */
    while ((next < K && failed_at < 0) || pending > 0) {
        while (next < K && pending < 256 && failed_at < 0) {
            conn tmp = {0};
            int r = start_connect(NULL, &tmp, (int)next, next);
            if (r < 0) {
                failed_at = next;
                first_err = -r;
                snprintf(first_err_where, sizeof first_err_where, "socket/bind/connect");
                break;
            }
            cs[next].fd = tmp.fd;
            cs[next].st = IC_CONNECTING;
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP,
                                     .data.u64 = (uint64_t)next};
            epoll_ctl(ep, EPOLL_CTL_ADD, tmp.fd, &ev);
            next++;
            pending++;
        }
        if (now_ns() > deadline) {
            if (failed_at < 0) {
                failed_at = next;
                first_err = ETIMEDOUT;
                snprintf(first_err_where, sizeof first_err_where, "deadline");
            }
            break;
        }
        int n = epoll_wait(ep, evs, 512, 100);
        for (int i = 0; i < n; i++) {
            iconn *c = &cs[evs[i].data.u64];
            if (c->st == IC_CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (!(evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
                    continue;
                pending--;
                if (err) {
                    if (failed_at < 0) {
                        failed_at = (long)evs[i].data.u64;
                        first_err = err;
                        snprintf(first_err_where, sizeof first_err_where, "connect");
                    }
                    close(c->fd);
                    c->st = IC_CLOSED;
                    nclosed++;
                    continue;
                }
                nconn++;
                struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP,
                                         .data.u64 = evs[i].data.u64};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                if (hslen) {
                    c->st = IC_HANDSHAKE;
                    ssize_t w = send(c->fd, hs, hslen, MSG_NOSIGNAL);
                    (void)w;
                } else {
                    c->st = IC_READY;
                    nready++;
                }
            } else if (c->st == IC_HANDSHAKE || c->st == IC_READY) {
                idle_read(c, &nready, &nclosed);
            }
        }
    }
    uint64_t t_connected = now_ns();
    /* handshakes, then wait until the server holds the descriptors, then settle */
    long fds_after = -1;
    uint64_t settle_end = 0;
    for (;;) {
        uint64_t now = now_ns();
        bool hs_done = nready + nclosed >= next || now > deadline;
        bool fds_ok = true;
        if (hs_done && O.server_pid > 0 && !settle_end) {
            fds_after = count_fds(O.server_pid);
            fds_ok = fds_after >= fds_before + nready || now > t_connected + 10000000000ull ||
                     now > deadline;
        }
        if (hs_done && fds_ok && !settle_end)
            settle_end = now + (uint64_t)(O.settle * 1e9);
        if (settle_end && now >= settle_end)
            break;
        idle_poll(ep, evs, cs, &nready, &nclosed);
    }
    long open = idle_open(cs, next);
    long rss_after = -1;
    if (O.server_pid > 0) {
        rss_after = read_rss_kb(O.server_pid);
        fds_after = count_fds(O.server_pid);
    }
    double bpc = (rss_before >= 0 && rss_after >= 0 && open > 0)
                     ? (double)(rss_after - rss_before) * 1024.0 / (double)open : -1;
    double conn_s = (double)(t_connected - t0) / 1e9;
    printf("chatbench: idle mode, proto=%s %s:%d, target %ld connections from %d source "
           "address(es)\n", proto_names[O.proto], O.host, O.port, K, O.sources);
    printf("  opened %ld (%.0f connects/s), %ld ready, %ld open at measurement\n", nconn,
           conn_s > 0 ? (double)nconn / conn_s : 0, nready, open);
    if (O.server_pid > 0)
        printf("  server pid %ld: VmRSS %ld kB -> %ld kB, descriptors %ld -> %ld; %.0f bytes "
               "per connection\n", O.server_pid, rss_before, rss_after, fds_before, fds_after,
               bpc);
    bool reached = open >= K;
    if (idle_server_closed)
        printf("  %ld connections closed by the server, e.g. after: %s\n", idle_server_closed,
               idle_close_msg);
    if (!reached)
        fprintf(stderr, "chatbench: could not reach %ld connections: %ld open%s%s%s\n", K, open,
                first_err ? " (first failure: " : "", first_err ? strerror(first_err) : "",
                first_err ? ")" : "");
    printf("RESULT mode=idle proto=%s conns=%ld target=%ld reached=%d sources=%d "
           "rss_before_kb=%ld rss_after_kb=%ld bytes_per_conn=%.0f server_fds_before=%ld "
           "server_fds_after=%ld server_closed=%ld connect_s=%.3f\n",
           proto_names[O.proto], open, K, reached, O.sources, rss_before, rss_after, bpc,
           fds_before, fds_after, idle_server_closed, conn_s);
    if (O.hold > 0 && reached) {
        /* Keep the connections (reading and discarding what arrives) while other load runs. */
        fflush(stdout);
        long closed0 = idle_server_closed;
        uint64_t bytes0 = idle_bytes, hold_end = now_ns() + (uint64_t)(O.hold * 1e9);
        while (now_ns() < hold_end)
            idle_poll(ep, evs, cs, &nready, &nclosed);
        long still = idle_open(cs, next);
        printf("HOLD held_s=%.1f open=%ld closed_by_server=%ld bytes_received=%llu\n", O.hold,
               still, idle_server_closed - closed0, (unsigned long long)(idle_bytes - bytes0));
    }
    for (long i = 0; i < next; i++)
        if (cs[i].st != IC_CLOSED && cs[i].st != IC_NONE)
            close(cs[i].fd);
    free(cs);
    return reached ? 0 : 1;
}

/* ------------------------------------------------------------------------- */
/* Command line */

static void usage(FILE *f)
{
    fprintf(f,
"usage: chatbench [options]\n"
"Load generator for fan-out chat/pub-sub servers on loopback.\n"
"\n"
"  --host ADDR        server address, loopback only (default 127.0.0.1)\n"
"  --port N[,N...]    server port (default: 9034 line, 6379 redis, 4222 nats); with\n"
"                     several, client i connects to the (i mod n)-th (servers sharing\n"
"                     a room, such as an st_proactor cluster)\n"
"  --proto P          line | redis | nats (default line)\n"
"  --clients N        connected clients, all receive (default 10)\n"
"  --publishers P     clients 0..P-1 also publish (default: all clients)\n"
"  --messages M       messages per publisher, throughput mode (default 1000)\n"
"  --size S           bytes per message, incl. the '\\n' for line (default 100, min %d)\n"
"  --window W         per publisher at most W own messages in flight; a message is done when\n"
"                     ALL other clients received it (default 64; 0 = unbounded)\n"
"  --rate R           messages/s per publisher (0 = as fast as the window allows; default 0);\n"
"                     latency then counts from the scheduled send time\n"
"  --duration SEC     rate mode: publish for SEC seconds (default 10)\n"
"  --timeout SEC      deadline for the whole run; undelivered messages count as lost\n"
"                     (default 60, or duration+30 in rate mode)\n"
"  --stall SEC        stop early when nothing was delivered for SEC seconds (default 5)\n"
"  --threads 1|2      event-loop threads; clients are split between them (default 1)\n"
"  --connect-rate C   open at most C connections/s (default 0 = no limit); for servers\n"
"                     with a short listen backlog (ncat: 10), whose accept queue overflows\n"
"  --channel NAME     redis/nats channel (default chatbench)\n"
"  --order-sample K   order check on 1 in K messages (default: automatic, <= 4M samples)\n"
"  --idle K           connect-only mode: hold K idle connections, measure the server's RSS\n"
"  --server-pid PID   idle mode: the server process whose VmRSS is read\n"
"  --sources n        bind connections to 127.0.0.1..127.0.0.n (default 1)\n"
"  --settle SEC       idle mode: wait before the final RSS reading (default 1)\n"
"  --hold SEC         idle mode: after the RESULT line keep the connections open (reading and\n"
"                     discarding) for SEC more seconds, then print a HOLD line\n"
"  -v, --verbose      report disconnects as they happen\n"
"  -h, --help\n"
"\n"
"Prints a summary and one line 'RESULT key=value ...'. Exit status 0 when the run\n"
"completed (whatever the server lost), 1 when it could not run, 2 on usage errors.\n",
            HDR_LEN + 1);
}

static double parse_num(const char *opt, const char *s, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "chatbench: bad value for --%s: '%s' (expected %g..%g)\n", opt, s, lo, hi);
        exit(2);
    }
    return v;
}

static long parse_int(const char *opt, const char *s, long lo, long hi)
{
    double v = parse_num(opt, s, (double)lo, (double)hi);
    if (v != (double)(long)v) {
        fprintf(stderr, "chatbench: --%s needs an integer: '%s'\n", opt, s);
        exit(2);
    }
    return (long)v;
}

int main(int argc, char **argv)
{
    hex_init();
    static const struct option lo[] = {
        {"host", required_argument, 0, 'H'},     {"port", required_argument, 0, 'p'},
        {"proto", required_argument, 0, 'P'},    {"clients", required_argument, 0, 'c'},
        {"publishers", required_argument, 0, 'u'}, {"messages", required_argument, 0, 'm'},
        {"size", required_argument, 0, 's'},     {"window", required_argument, 0, 'w'},
        {"rate", required_argument, 0, 'r'},     {"duration", required_argument, 0, 'd'},
        {"timeout", required_argument, 0, 't'},  {"stall", required_argument, 0, 'S'},
        {"threads", required_argument, 0, 'T'},  {"channel", required_argument, 0, 'C'},
        {"order-sample", required_argument, 0, 'k'}, {"idle", required_argument, 0, 'i'},
        {"server-pid", required_argument, 0, 'x'}, {"sources", required_argument, 0, 'n'},
        {"settle", required_argument, 0, 'e'},   {"hold", required_argument, 0, 1001},   {"connect-rate", required_argument, 0, 'R'},   {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "vh", lo, NULL)) != -1) {
        switch (ch) {
        case 'H': O.host = optarg; break;
        case 'p': {
            /* one port, or several separated by commas (one server each, e.g. a cluster) */
            O.nports = 0;
            for (char *save = NULL, *tok = strtok_r(optarg, ",", &save); tok;
                 tok = strtok_r(NULL, ",", &save)) {
                if (O.nports == MAX_PORTS) {
                    fprintf(stderr, "chatbench: at most %d ports\n", MAX_PORTS);
                    exit(2);
                }
                O.ports[O.nports++] = (int)parse_int("port", tok, 1, 65535);
            }
            if (!O.nports) {
                fprintf(stderr, "chatbench: --port needs a number\n");
                exit(2);
            }
            O.port = O.ports[0];
            break;
        }
        case 'P':
            if (!strcmp(optarg, "line")) O.proto = PROTO_LINE;
            else if (!strcmp(optarg, "redis")) O.proto = PROTO_REDIS;
            else if (!strcmp(optarg, "nats")) O.proto = PROTO_NATS;
            else {
                fprintf(stderr, "chatbench: --proto must be line, redis or nats\n");
                return 2;
            }
            break;
        case 'c': O.clients = parse_int("clients", optarg, 2, 1000000); break;
        case 'u':
            O.publishers = parse_int("publishers", optarg, 1, 1000000);
            O.publishers_set = true;
            break;
        case 'm': O.messages = parse_int("messages", optarg, 1, 0xffffffffL); break;
        case 's': O.size = parse_int("size", optarg, HDR_LEN, 16 << 20); O.size_set = true; break;
        case 'w': O.window = parse_int("window", optarg, 0, 1L << 30); O.window_set = true; break;
        case 'r': O.rate = parse_num("rate", optarg, 0, 1e9); break;
        case 'd': O.duration = parse_num("duration", optarg, 0.001, 1e6); break;
        case 't': O.timeout = parse_num("timeout", optarg, 0.1, 1e6); O.timeout_set = true; break;
        case 'S': O.stall = parse_num("stall", optarg, 0.1, 1e6); break;
        case 'T': O.threads = (int)parse_int("threads", optarg, 1, 2); break;
        case 'C':
            O.channel = optarg;
            if (!*optarg || strlen(optarg) > 100 || strpbrk(optarg, " \t\r\n")) {
                fprintf(stderr, "chatbench: --channel: 1..100 characters, no whitespace\n");
                return 2;
            }
            break;
        case 'k': O.order_sample = parse_int("order-sample", optarg, 1, 1L << 40); break;
        case 'i': O.idle = parse_int("idle", optarg, 1, 100000000); break;
        case 'x': O.server_pid = parse_int("server-pid", optarg, 1, 1L << 30); break;
        case 'n': O.sources = (int)parse_int("sources", optarg, 1, 254); break;
        case 'e': O.settle = parse_num("settle", optarg, 0, 3600); break;
        case 1001: O.hold = parse_num("hold", optarg, 0, 86400); break;
        case 'R': O.connect_rate = parse_num("connect-rate", optarg, 0, 1e9); break;
        case 'v': O.verbose = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "chatbench: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (O.port < 0) {
        O.port = O.proto == PROTO_REDIS ? 6379 : O.proto == PROTO_NATS ? 4222 : 9034;
        O.ports[0] = O.port;
        O.nports = 1;
    }
    if (!O.publishers_set)
        O.publishers = O.clients;
    if (O.publishers > O.clients) {
        fprintf(stderr, "chatbench: --publishers (%ld) exceeds --clients (%ld)\n", O.publishers,
                O.clients);
        return 2;
    }
    if (O.publishers > 0xffffff) {
        fprintf(stderr, "chatbench: at most %d publishers\n", 0xffffff);
        return 2;
    }
    if (O.proto == PROTO_LINE && O.size < HDR_LEN + 1) {
        fprintf(stderr, "chatbench: --size must be at least %d for the line protocol\n",
                HDR_LEN + 1);
        return 2;
    }
    if (O.rate > 0 && !O.window_set)
        O.window = 0;
    if (O.rate > 0 && !O.timeout_set)
        O.timeout = O.duration + 30 > 60 ? O.duration + 30 : 60;
    if (O.rate > 0 && O.timeout < O.duration)
        fprintf(stderr, "chatbench: warning: --timeout %.1f is shorter than --duration %.1f\n",
                O.timeout, O.duration);
    if (!strcmp(O.host, "localhost"))
        O.host = "127.0.0.1";
    for (G.ndst = 0; G.ndst < O.nports; G.ndst++) {
        G.dst[G.ndst].sin_family = AF_INET;
        G.dst[G.ndst].sin_port = htons((uint16_t)O.ports[G.ndst]);
    }
    if (inet_pton(AF_INET, O.host, &G.dst[0].sin_addr) != 1) {
        fprintf(stderr, "chatbench: --host must be an IPv4 address (got '%s')\n", O.host);
        return 2;
    }
    for (int i = 1; i < G.ndst; i++)
        G.dst[i].sin_addr = G.dst[0].sin_addr;
    if ((ntohl(G.dst[0].sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "chatbench: --host must be a loopback address (127.x.x.x)\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    return O.idle > 0 ? run_idle() : run_bench();
}
