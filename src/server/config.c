/*
 * Options: getopt_long over argv, every value checked, one error line naming
 * the option on failure.  Defaults live in config.h and --help, and the
 * README's table explains why each was chosen.
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
            "                         (no nicknames, commands, telnet handling or flood limit)\n"
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
            "  -q, --quiet            log errors only\n"
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

static bool bad(FILE *err, const char *opt, const char *val, const char *expect)
{
    char buf[SRV_SHOWN_MAX];
    fprintf(err, "st_proactor: invalid %s '%s' (expected %s)\n", opt, srv_shown(val, buf), expect);
    return false;
}

static bool set_port(const char *s, srv_config *cfg, FILE *err)
{
    unsigned long long v;
    if (!parse_num(s, 0, 65535, false, &v))
        return bad(err, "port", s, "a number from 0 to 65535");
    cfg->port = (unsigned)v;
    return true;
}

static bool set_flood(const char *s, srv_config *cfg, FILE *err)
{
    char buf[64];
    if (strlen(s) >= sizeof(buf))
        return bad(err, "--flood", s, "LINES/S or LINES/S:BURST, e.g. 20:40");
    strcpy(buf, s);
    char *colon = strchr(buf, ':');
    if (colon)
        *colon = '\0';
    unsigned long long rate, burst = 0;
    if (!parse_num(buf, 0, 1000000, false, &rate) ||
        (colon && !parse_num(colon + 1, 1, 1000000, false, &burst)))
        return bad(err, "--flood", s, "LINES/S or LINES/S:BURST, e.g. 20:40");
    cfg->flood_rate = (unsigned)rate;
    cfg->flood_burst = colon ? (unsigned)burst : (unsigned)(rate * 2 > 0 ? rate * 2 : 1);
    return true;
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
    enum {
        OPT_BACKEND = 256, OPT_RAW, OPT_MAX_CLIENTS, OPT_MAX_LINE, OPT_SENDQ, OPT_FLOOD,
        OPT_IDLE, OPT_HISTORY, OPT_ANNOUNCE, OPT_KEEPALIVE, OPT_SHUTDOWN_WAIT, OPT_CLUSTER,
        OPT_NODE_NAME, OPT_CLUSTER_OPTIONAL, OPT_CLUSTER_TTL,
    };
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'p'},
        {"bind", required_argument, NULL, 'b'},
        {"raw", no_argument, NULL, OPT_RAW},
        {"dispatch", required_argument, NULL, 'd'},
        {"threads", required_argument, NULL, 't'},
        {"backend", required_argument, NULL, OPT_BACKEND},
        {"max-clients", required_argument, NULL, OPT_MAX_CLIENTS},
        {"max-line", required_argument, NULL, OPT_MAX_LINE},
        {"sendq", required_argument, NULL, OPT_SENDQ},
        {"flood", required_argument, NULL, OPT_FLOOD},
        {"idle-timeout", required_argument, NULL, OPT_IDLE},
        {"history", required_argument, NULL, OPT_HISTORY},
        {"announce-max", required_argument, NULL, OPT_ANNOUNCE},
        {"keepalive", required_argument, NULL, OPT_KEEPALIVE},
        {"shutdown-wait", required_argument, NULL, OPT_SHUTDOWN_WAIT},
        {"cluster", required_argument, NULL, OPT_CLUSTER},
        {"node-name", required_argument, NULL, OPT_NODE_NAME},
        {"cluster-optional", no_argument, NULL, OPT_CLUSTER_OPTIONAL},
        {"cluster-ttl", required_argument, NULL, OPT_CLUSTER_TTL},
        {"quiet", no_argument, NULL, 'q'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {0, 0, 0, 0},
    };
    const char *prog = argc > 0 && argv[0] ? argv[0] : "st_proactor";
    opterr = 0;
    /* 0, not 1: glibc then also forgets where it was inside a cluster of short options,
     * so a parse that stopped at an error in "-qx" does not leak into the next one. */
    optind = 0;
    bool port_set = false, flood_set = false, ttl_set = false;
    char buf[SRV_SHOWN_MAX];
    int c;
    while ((c = getopt_long(argc, argv, ":p:b:d:t:qvhV", longopts, NULL)) != -1) {
        unsigned long long v;
        switch (c) {
        case 'p':
            if (!set_port(optarg, cfg, err))
                return SRV_PARSE_ERROR;
            port_set = true;
            break;
        case 'b':
            if (!*optarg) {
                fprintf(err, "st_proactor: --bind needs an address\n");
                return SRV_PARSE_ERROR;
            }
            cfg->bind = optarg;
            break;
        case OPT_RAW:
            cfg->raw = true;
            break;
        case 'd':
            if (px_executor_parse(optarg, &cfg->dispatch) != 0) {
                bad(err, "--dispatch", optarg, "thread, pool or inline");
                return SRV_PARSE_ERROR;
            }
            break;
        case 't':
            if (!parse_num(optarg, 1, 1024, false, &v)) {
                bad(err, "--threads", optarg, "1 to 1024");
                return SRV_PARSE_ERROR;
            }
            cfg->threads = (unsigned)v;
            break;
        case OPT_BACKEND:
            if (px_backend_parse(optarg, &cfg->backend) != 0) {
                bad(err, "--backend", optarg, "auto, epoll or io_uring");
                return SRV_PARSE_ERROR;
            }
            break;
        case OPT_MAX_CLIENTS:
            if (!parse_num(optarg, 0, 100000000, false, &v)) {
                bad(err, "--max-clients", optarg, "a number, 0 for no limit");
                return SRV_PARSE_ERROR;
            }
            cfg->max_clients = (unsigned)v;
            break;
        case OPT_MAX_LINE:
            if (!parse_num(optarg, 16, 1u << 20, true, &v)) {
                bad(err, "--max-line", optarg, "16 bytes to 1M");
                return SRV_PARSE_ERROR;
            }
            cfg->max_line = (size_t)v;
            break;
        case OPT_SENDQ:
            if (!parse_num(optarg, 1024, 1ull << 30, true, &v)) {
                bad(err, "--sendq", optarg, "1024 bytes to 1G, e.g. 256K or 4M");
                return SRV_PARSE_ERROR;
            }
            cfg->sendq = (size_t)v;
            break;
        case OPT_FLOOD:
            if (!set_flood(optarg, cfg, err))
                return SRV_PARSE_ERROR;
            flood_set = true;
            break;
        case OPT_IDLE:
            if (!parse_num(optarg, 0, 30u * 24 * 3600, false, &v)) {
                bad(err, "--idle-timeout", optarg, "seconds, 0 for none");
                return SRV_PARSE_ERROR;
            }
            cfg->idle_timeout = (unsigned)v;
            break;
        case OPT_HISTORY:
            if (!parse_num(optarg, 0, 10000, false, &v)) {
                bad(err, "--history", optarg, "0 to 10000 lines");
                return SRV_PARSE_ERROR;
            }
            cfg->history = (unsigned)v;
            break;
        case OPT_ANNOUNCE:
            if (!parse_num(optarg, 0, 100000000, false, &v)) {
                bad(err, "--announce-max", optarg, "a number of members, 0 for none");
                return SRV_PARSE_ERROR;
            }
            cfg->announce_max = (unsigned)v;
            break;
        case OPT_KEEPALIVE:
            if (!parse_num(optarg, 0, PX_KEEPALIVE_MAX, false, &v)) {
                bad(err, "--keepalive", optarg, "seconds up to 32767, 0 for off");
                return SRV_PARSE_ERROR;
            }
            cfg->keepalive = (unsigned)v;
            break;
        case OPT_CLUSTER: {
            char host[256];
            int port, db;
            if (!srv_parse_redis_url(optarg, host, sizeof(host), &port, &db)) {
                bad(err, "--cluster", optarg, "redis://HOST[:PORT][/DB]");
                return SRV_PARSE_ERROR;
            }
            cfg->cluster = optarg;
            break;
        }
        case OPT_NODE_NAME: {
            size_t n = strlen(optarg), ok = 0;
            for (size_t i = 0; i < n; i++)
                ok += optarg[i] > ' ' && optarg[i] < 0x7F;
            if (!n || n > 32 || ok != n) {
                bad(err, "--node-name", optarg, "1 to 32 printable characters, no spaces");
                return SRV_PARSE_ERROR;
            }
            cfg->node_name = optarg;
            break;
        }
        case OPT_CLUSTER_OPTIONAL:
            cfg->cluster_optional = true;
            break;
        case OPT_CLUSTER_TTL:
            if (!parse_num(optarg, 3, 3600, false, &v)) {
                bad(err, "--cluster-ttl", optarg, "3 to 3600 seconds");
                return SRV_PARSE_ERROR;
            }
            cfg->cluster_ttl = (unsigned)v;
            ttl_set = true;
            break;
        case OPT_SHUTDOWN_WAIT:
            if (!parse_num(optarg, 0, 600000, false, &v)) {
                bad(err, "--shutdown-wait", optarg, "milliseconds up to 600000");
                return SRV_PARSE_ERROR;
            }
            cfg->shutdown_wait = (unsigned)v;
            break;
        case 'q':
            cfg->quiet = true;
            break;
        case 'v':
            cfg->verbose = true;
            break;
        case 'h':
            usage(out, prog);
            return SRV_PARSE_EXIT;
        case 'V':
            fprintf(out, "st_proactor %s (libproactor)\n", ST_VERSION);
            return SRV_PARSE_EXIT;
        case ':':
            if (optopt && optopt < 256)
                fprintf(err, "st_proactor: option '-%c' needs a value (see --help)\n", optopt);
            else
                fprintf(err, "st_proactor: option '%s' needs a value (see --help)\n",
                        srv_shown(argv[optind - 1], buf));
            return SRV_PARSE_ERROR;
        default:
            if (optopt)
                fprintf(err, "st_proactor: unknown option '%s' (see --help)\n",
                        srv_shown((char[]){'-', (char)optopt, '\0'}, buf));
            else
                fprintf(err, "st_proactor: unknown option '%s' (see --help)\n",
                        srv_shown(argv[optind - 1], buf));
            return SRV_PARSE_ERROR;
        }
    }
    if (optind < argc) {
        if (port_set || optind + 1 < argc) {
            fprintf(err, "st_proactor: unexpected argument '%s' (see --help)\n",
                    srv_shown(argv[port_set ? optind : optind + 1], buf));
            return SRV_PARSE_ERROR;
        }
        if (!set_port(argv[optind], cfg, err))
            return SRV_PARSE_ERROR;
    }
    if (cfg->raw && !flood_set)
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
    if ((cfg->node_name || cfg->cluster_optional || ttl_set) && !cfg->cluster) {
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
