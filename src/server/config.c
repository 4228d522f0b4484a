/*
 * Options: one table, options[], gives each option its names, the kind of value
 * it takes, where that goes in srv_config, its bounds and the words of its error;
 * getopt_long reads argv by it, every value is checked, and one error line names
 * the option on failure.  Defaults live in config.h and --help (usage(), written
 * out in the table's order), and the README's table explains why each was chosen.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef ST_VERSION
#define ST_VERSION "0.2.0"
#endif

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "Usage: %s [options] [port]\n"
            "A multithreaded telnet/netcat chat server on libproactor.\n"
            "\n"
            "  port                   TCP port to listen on (default %d)\n"
            "  -p, --port N           same as the positional port; 0 picks a free port\n"
            "  -b, --bind ADDR        listen on ADDR only (default: every IPv6 and IPv4 address)\n"
            "      --raw              plain relay: each line to every other client, unchanged\n"
            "                         (no nicknames, commands, telnet handling or flood limit;\n"
            "                         control bytes pass: for trusted networks only)\n"
            "  -d, --dispatch MODE    where handlers run: pool (default: worker threads),\n"
            "                         thread (a new thread per message, the original design),\n"
            "                         inline (on the I/O loop thread)\n"
            "  -t, --threads N        pool size (default: one per CPU)\n"
            "      --backend NAME     auto (default), epoll, io_uring\n"
            "      --max-clients N    refuse clients beyond N (default 0: no limit)\n"
            "      --max-line BYTES   longest accepted line (default %d)\n"
            "      --sendq BYTES      output queued for one client before it is dropped as\n"
            "                         too slow (default %u; K, M, G suffixes)\n"
            "      --flood R[:B]      at most R lines/s per client, bursts of B (default %d:%d\n"
            "                         in chat mode, off with --raw; 0 turns it off)\n"
            "      --idle-timeout S   disconnect clients silent for S seconds (default 0: off)\n"
            "      --history N        lines of a room replayed to a new member (default %d)\n"
            "      --announce-max N   join/leave notices only in rooms of at most N members\n"
            "                         (default %d; 0: none)\n"
            "      --keepalive S      TCP keepalive probes after S seconds of silence, so\n"
            "                         vanished peers are noticed (default %d; 0: off)\n"
            "      --shutdown-wait MS at SIGINT/SIGTERM, time queued output may take to\n"
            "                         reach clients (default %d)\n"
            "      --cluster URL      share rooms with other servers through Redis:\n"
            "                         redis://HOST[:PORT][/DB] (default: run alone)\n"
            "      --node-name NAME   this server's name in the cluster (default: host name)\n"
            "      --cluster-optional start even when Redis is unreachable (and keep trying)\n"
            "      --cluster-ttl S    a crashed server's users leave the cluster's lists\n"
            "                         and names after S seconds (default %d)\n"
            "  -q, --quiet            log errors and warnings only\n"
            "  -v, --verbose          log more, including message text\n"
            "  -h, --help             show this help and exit\n"
            "  -V, --version          show the version and exit\n",
            prog, SRV_DEFAULT_PORT, SRV_DEFAULT_MAX_LINE, SRV_DEFAULT_SENDQ,
            SRV_DEFAULT_FLOOD_RATE, SRV_DEFAULT_FLOOD_BURST, SRV_DEFAULT_HISTORY,
            SRV_DEFAULT_ANNOUNCE_MAX, SRV_DEFAULT_KEEPALIVE_S, SRV_DEFAULT_SHUTDOWN_WAIT_MS,
            SRV_DEFAULT_CLUSTER_TTL_S);
}

const char *srv_shown(const char *s, char out[SRV_SHOWN_MAX])
{
    size_t o = 0, i = 0;
    for (; s[i] && i < 64; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7F) /* C0, DEL, and any byte that could be C1 */
            o += (size_t)snprintf(out + o, 5, "\\x%02X", c);
        else
            out[o++] = (char)c;
    }
    if (s[i])
        memcpy(out + o, "...", 3), o += 3;
    out[o] = '\0';
    return out;
}

bool srv_parse_redis_url(const char *url, char *host, size_t cap, int *port, int *db)
{
    static const char scheme[] = "redis://";
    if (!url || strncmp(url, scheme, sizeof(scheme) - 1) != 0)
        return false;
    const char *h = url + sizeof(scheme) - 1, *end = h + strcspn(h, ":/");
    if (end == h || (size_t)(end - h) >= cap)
        return false;
    memcpy(host, h, (size_t)(end - h));
    host[end - h] = '\0';
    *port = 6379;
    *db = 0;
    if (*end == ':') {
        char *e;
        long p = strtol(end + 1, &e, 10);
        if (e == end + 1 || p < 1 || p > 65535)
            return false;
        *port = (int)p;
        end = e;
    }
    if (*end == '/') {
        char *e;
        long d = strtol(end + 1, &e, 10);
        if (e == end + 1 || d < 0 || d > 1000000)
            return false;
        *db = (int)d;
        end = e;
    }
    return *end == '\0';
}

/* Parses a whole decimal string in [min, max], with an optional K/M/G
 * (binary) suffix when sized is set. */
static bool parse_num(const char *s, unsigned long long min, unsigned long long max,
                      bool sized, unsigned long long *out)
{
    if (!s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return false;
    if (sized && *end) {
        unsigned shift = 0;
        switch (*end) {
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        default: return false;
        }
        end++;
        if (v > (ULLONG_MAX >> shift))
            return false;
        v <<= shift;
    }
    if (*end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* getopt_long's value for an option without a short letter: past every char.  The
 * numbers are kept as they were, since one shows in a message: a long option that
 * takes no value, given one, is reported by its value as a short option
 * ("--raw=1" is an "unknown option '-\x01'"). */
enum {
    KEY_BACKEND = 256, KEY_RAW, KEY_MAX_CLIENTS, KEY_MAX_LINE, KEY_SENDQ, KEY_FLOOD,
    KEY_IDLE, KEY_HISTORY, KEY_ANNOUNCE, KEY_KEEPALIVE, KEY_SHUTDOWN_WAIT, KEY_CLUSTER,
    KEY_NODE_NAME, KEY_CLUSTER_OPTIONAL, KEY_CLUSTER_TTL,
    KEY_END
};

/* What an option takes, and so how its value is checked and stored. */
typedef enum opt_kind {
    OPT_FLAG,    /* no value: sets a bool */
    OPT_UINT,    /* a decimal number in [min, max], into an unsigned */
    OPT_BYTES,   /* the same with an optional K, M or G suffix, into a size_t */
    OPT_TEXT,    /* a string check() accepts, kept as a pointer into argv */
    OPT_PARSED,  /* a value set() parses into the configuration itself */
    OPT_HELP,    /* prints --help and ends the parse */
    OPT_VERSION, /* prints the version and ends the parse */
} opt_kind;

typedef struct opt_spec {
    const char *name;        /* the long name, without "--" */
    int key;                 /* the short letter, or a KEY_ */
    opt_kind kind;
    size_t field;            /* where the value goes in srv_config (FLAG, UINT, BYTES, TEXT) */
    unsigned long long min, max;                  /* UINT, BYTES */
    bool (*check)(const char *arg);               /* TEXT */
    bool (*set)(srv_config *cfg, const char *arg); /* PARSED */
    /* A refused value: "invalid LABEL 'ARG' (expected EXPECT)", LABEL being "--NAME"
     * unless label is set; or refusal, the whole line, when that is set. */
    const char *label, *expect, *refusal;
} opt_spec;

/* offsetof(srv_config, f), refused by the compiler unless f has type t. */
#define FIELD(f, t) (offsetof(srv_config, f) + 0 * sizeof(_Generic(((srv_config *)0)->f, t: 1)))
#define FLAG(n, k, f) {.name = n, .key = k, .kind = OPT_FLAG, .field = FIELD(f, bool)}
#define UINT(n, k, f, lo, hi, e)                                                          \
    {.name = n, .key = k, .kind = OPT_UINT, .field = FIELD(f, unsigned), .min = lo,       \
     .max = hi, .expect = e}
#define BYTES(n, k, f, lo, hi, e)                                                         \
    {.name = n, .key = k, .kind = OPT_BYTES, .field = FIELD(f, size_t), .min = lo,        \
     .max = hi, .expect = e}
#define TEXT(n, k, f, ok, e)                                                              \
    {.name = n, .key = k, .kind = OPT_TEXT, .field = FIELD(f, const char *), .check = ok, \
     .expect = e}
#define PARSED(n, k, fn, e) {.name = n, .key = k, .kind = OPT_PARSED, .set = fn, .expect = e}

static bool address_given(const char *s)
{
    return *s != '\0';
}

static bool redis_url_valid(const char *s)
{
    char host[256];
    int port, db;
    return srv_parse_redis_url(s, host, sizeof(host), &port, &db);
}

static bool node_name_valid(const char *s)
{
    size_t n = strlen(s), ok = 0;
    for (size_t i = 0; i < n; i++)
        ok += s[i] > ' ' && s[i] < 0x7F;
    return n && n <= 32 && ok == n;
}

static bool set_dispatch(srv_config *cfg, const char *s)
{
    return px_executor_parse(s, &cfg->dispatch) == 0;
}

static bool set_backend(srv_config *cfg, const char *s)
{
    return px_backend_parse(s, &cfg->backend) == 0;
}

/* R or R:B; B defaults to twice R (at least 1). */
static bool set_flood(srv_config *cfg, const char *s)
{
    char buf[64];
    if (strlen(s) >= sizeof(buf))
        return false;
    strcpy(buf, s);
    char *colon = strchr(buf, ':');
    if (colon)
        *colon = '\0';
    unsigned long long rate, burst = 0;
    if (!parse_num(buf, 0, 1000000, false, &rate) ||
        (colon && !parse_num(colon + 1, 1, 1000000, false, &burst)))
        return false;
    cfg->flood_rate = (unsigned)rate;
    cfg->flood_burst = colon ? (unsigned)burst : (unsigned)(rate * 2 > 0 ? rate * 2 : 1);
    return true;
}

/* Every option, in the order of --help (which usage() writes out by hand). */
static const opt_spec options[] = {
    {.name = "port", .key = 'p', .kind = OPT_UINT, .field = FIELD(port, unsigned), .min = 0,
     .max = 65535, .label = "port", .expect = "a number from 0 to 65535"},
    {.name = "bind", .key = 'b', .kind = OPT_TEXT, .field = FIELD(bind, const char *),
     .check = address_given, .refusal = "--bind needs an address"},
    FLAG("raw", KEY_RAW, raw),
    PARSED("dispatch", 'd', set_dispatch, "thread, pool or inline"),
    UINT("threads", 't', threads, 1, 1024, "1 to 1024"),
    PARSED("backend", KEY_BACKEND, set_backend, "auto, epoll or io_uring"),
    UINT("max-clients", KEY_MAX_CLIENTS, max_clients, 0, 100000000, "a number, 0 for no limit"),
    BYTES("max-line", KEY_MAX_LINE, max_line, 16, 1u << 20, "16 bytes to 1M"),
    BYTES("sendq", KEY_SENDQ, sendq, 1024, 1ull << 30, "1024 bytes to 1G, e.g. 256K or 4M"),
    PARSED("flood", KEY_FLOOD, set_flood, "LINES/S or LINES/S:BURST, e.g. 20:40"),
    UINT("idle-timeout", KEY_IDLE, idle_timeout, 0, 30u * 24 * 3600, "seconds, 0 for none"),
    UINT("history", KEY_HISTORY, history, 0, 10000, "0 to 10000 lines"),
    UINT("announce-max", KEY_ANNOUNCE, announce_max, 0, 100000000,
         "a number of members, 0 for none"),
    UINT("keepalive", KEY_KEEPALIVE, keepalive, 0, PX_KEEPALIVE_MAX,
         "seconds up to 32767, 0 for off"),
    UINT("shutdown-wait", KEY_SHUTDOWN_WAIT, shutdown_wait, 0, 600000,
         "milliseconds up to 600000"),
    TEXT("cluster", KEY_CLUSTER, cluster, redis_url_valid, "redis://HOST[:PORT][/DB]"),
    TEXT("node-name", KEY_NODE_NAME, node_name, node_name_valid,
         "1 to 32 printable characters, no spaces"),
    FLAG("cluster-optional", KEY_CLUSTER_OPTIONAL, cluster_optional),
    UINT("cluster-ttl", KEY_CLUSTER_TTL, cluster_ttl, 3, 3600, "3 to 3600 seconds"),
    FLAG("quiet", 'q', quiet),
    FLAG("verbose", 'v', verbose),
    {.name = "help", .key = 'h', .kind = OPT_HELP},
    {.name = "version", .key = 'V', .kind = OPT_VERSION},
};
#define OPTION_COUNT (sizeof(options) / sizeof(options[0]))

/* One parse: where it writes, and which options it has met. */
typedef struct parse_state {
    srv_config *cfg;
    FILE *out, *err;
    const char *prog;
    bool given[KEY_END]; /* by key */
} parse_state;

static const opt_spec *opt_find(int key)
{
    for (size_t i = 0; i < OPTION_COUNT; i++)
        if (options[i].key == key)
            return &options[i];
    return NULL;
}

/* getopt_long's view of options[]: ":" first (a missing value is told from an
 * unknown option), then each short letter, with ':' after it if it takes a value. */
static void opt_getopt_tables(struct option longopts[OPTION_COUNT + 1],
                              char shortopts[2 * OPTION_COUNT + 2])
{
    size_t n = 0;
    shortopts[n++] = ':';
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        const opt_spec *o = &options[i];
        bool takes_value = o->kind != OPT_FLAG && o->kind != OPT_HELP && o->kind != OPT_VERSION;
        longopts[i] = (struct option){o->name, takes_value ? required_argument : no_argument,
                                      NULL, o->key};
        if (o->key < 256) {
            shortopts[n++] = (char)o->key;
            if (takes_value)
                shortopts[n++] = ':';
        }
    }
    longopts[OPTION_COUNT] = (struct option){0, 0, 0, 0};
    shortopts[n] = '\0';
}

/* Checks arg (NULL for an option without a value) and stores it as o says; on a
 * refusal, the one error line. */
static srv_parse_result opt_apply(parse_state *p, const opt_spec *o, const char *arg)
{
    char *field = (char *)p->cfg + o->field;
    unsigned long long v;
    bool ok = true;
    switch (o->kind) {
    case OPT_FLAG:
        *(bool *)field = true;
        break;
    case OPT_UINT:
        if ((ok = parse_num(arg, o->min, o->max, false, &v)))
            *(unsigned *)field = (unsigned)v;
        break;
    case OPT_BYTES:
        if ((ok = parse_num(arg, o->min, o->max, true, &v)))
            *(size_t *)field = (size_t)v;
        break;
    case OPT_TEXT:
        if ((ok = o->check(arg)))
            *(const char **)field = arg;
        break;
    case OPT_PARSED:
        ok = o->set(p->cfg, arg);
        break;
    case OPT_HELP:
        usage(p->out, p->prog);
        return SRV_PARSE_EXIT;
    case OPT_VERSION:
        fprintf(p->out, "st_proactor %s (libproactor)\n", ST_VERSION);
        return SRV_PARSE_EXIT;
    }
    if (ok) {
        p->given[o->key] = true;
        return SRV_PARSE_RUN;
    }
    char shown[SRV_SHOWN_MAX];
    if (o->refusal)
        fprintf(p->err, "st_proactor: %s\n", o->refusal);
    else
        fprintf(p->err, "st_proactor: invalid %s%s '%s' (expected %s)\n", o->label ? "" : "--",
                o->label ? o->label : o->name, srv_shown(arg, shown), o->expect);
    return SRV_PARSE_ERROR;
}

/* What getopt_long refused: c is ':' for a missing value, '?' for the rest. */
static srv_parse_result opt_refused(int c, char **argv, FILE *err)
{
    char buf[SRV_SHOWN_MAX];
    if (c == ':') {
        if (optopt && optopt < 256)
            fprintf(err, "st_proactor: option '-%c' needs a value (see --help)\n", optopt);
        else
            fprintf(err, "st_proactor: option '%s' needs a value (see --help)\n",
                    srv_shown(argv[optind - 1], buf));
    } else if (optopt) {
        fprintf(err, "st_proactor: unknown option '%s' (see --help)\n",
                srv_shown((char[]){'-', (char)optopt, '\0'}, buf));
    } else {
        fprintf(err, "st_proactor: unknown option '%s' (see --help)\n",
                srv_shown(argv[optind - 1], buf));
    }
    return SRV_PARSE_ERROR;
}

/* The rules between options, once all are read. */
static srv_parse_result check_together(const parse_state *p)
{
    srv_config *cfg = p->cfg;
    FILE *err = p->err;
    if (cfg->raw && !p->given[KEY_FLOOD])
        cfg->flood_rate = 0; /* the original relay has no rate limit */
    /* One line of the longest kind (sanitising can triple it, then a prefix)
     * must fit in a queue twice over, or a reader would be dropped as too
     * slow for one message. */
    size_t one_line = cfg->max_line * 3 + 64;
    if (cfg->sendq < 2 * one_line) {
        fprintf(err, "st_proactor: invalid --sendq %zu (must be at least %zu with --max-line %zu)\n",
                cfg->sendq, 2 * one_line, cfg->max_line);
        return SRV_PARSE_ERROR;
    }
    if ((cfg->node_name || cfg->cluster_optional || p->given[KEY_CLUSTER_TTL]) && !cfg->cluster) {
        fprintf(err, "st_proactor: --node-name, --cluster-optional and --cluster-ttl need "
                     "--cluster\n");
        return SRV_PARSE_ERROR;
    }
    if (cfg->cluster && cfg->raw) {
        fprintf(err, "st_proactor: --cluster works in chat mode, not with --raw\n");
        return SRV_PARSE_ERROR;
    }
    if (cfg->quiet && cfg->verbose) {
        fprintf(err, "st_proactor: --quiet and --verbose exclude each other\n");
        return SRV_PARSE_ERROR;
    }
    return SRV_PARSE_RUN;
}

srv_parse_result srv_config_parse(int argc, char **argv, srv_config *cfg, FILE *out,
                                  FILE *err)
{
    *cfg = (srv_config){
        .port = SRV_DEFAULT_PORT,
        .max_line = SRV_DEFAULT_MAX_LINE,
        .sendq = SRV_DEFAULT_SENDQ,
        .flood_rate = SRV_DEFAULT_FLOOD_RATE,
        .flood_burst = SRV_DEFAULT_FLOOD_BURST,
        .history = SRV_DEFAULT_HISTORY,
        .announce_max = SRV_DEFAULT_ANNOUNCE_MAX,
        .keepalive = SRV_DEFAULT_KEEPALIVE_S,
        .shutdown_wait = SRV_DEFAULT_SHUTDOWN_WAIT_MS,
        .cluster_ttl = SRV_DEFAULT_CLUSTER_TTL_S,
    };
    parse_state p = {
        .cfg = cfg,
        .out = out,
        .err = err,
        .prog = argc > 0 && argv[0] ? argv[0] : "st_proactor",
    };
    struct option longopts[OPTION_COUNT + 1];
    char shortopts[2 * OPTION_COUNT + 2];
    opt_getopt_tables(longopts, shortopts);
    opterr = 0;
    /* 0, not 1: glibc then also forgets where it was inside a cluster of short options,
     * so a parse that stopped at an error in "-qx" does not leak into the next one. */
    optind = 0;
    int c;
    while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
        const opt_spec *o = opt_find(c);
        srv_parse_result rc = o ? opt_apply(&p, o, optarg) : opt_refused(c, argv, err);
        if (rc != SRV_PARSE_RUN)
            return rc;
    }
    if (optind < argc) {
        char buf[SRV_SHOWN_MAX];
        bool port_given = p.given['p'];
        if (port_given || optind + 1 < argc) {
            fprintf(err, "st_proactor: unexpected argument '%s' (see --help)\n",
                    srv_shown(argv[port_given ? optind : optind + 1], buf));
            return SRV_PARSE_ERROR;
        }
        if (opt_apply(&p, opt_find('p'), argv[optind]) != SRV_PARSE_RUN)
            return SRV_PARSE_ERROR;
    }
    return check_together(&p);
}
