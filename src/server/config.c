/*
 * Options: getopt_long over argv, every value checked, one error line naming
 * the option on failure.  Defaults live here and in --help, nowhere else.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#ifndef ST_VERSION
#define ST_VERSION "0.1.0"
#endif

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "Usage: %s [options] [port]\n"
            "A multithreaded line-relay chat server on libproactor: each line a\n"
            "client sends is delivered to every other connected client.\n"
            "\n"
            "  port                  TCP port to listen on (default %d)\n"
            "  -p, --port N          same as the positional port; 0 picks a free port\n"
            "  -b, --bind ADDR       listen on ADDR only (default: every IPv6 and IPv4 address)\n"
            "  -d, --dispatch MODE   where handlers run: pool (default: worker threads),\n"
            "                        thread (a new thread per message, the original design),\n"
            "                        inline (on the I/O loop thread)\n"
            "  -t, --threads N       pool size (default: one per CPU)\n"
            "      --backend NAME    auto (default), epoll, io_uring\n"
            "  -q, --quiet           log errors only\n"
            "  -v, --verbose         log more\n"
            "  -h, --help            show this help and exit\n"
            "  -V, --version         show the version and exit\n",
            prog, SRV_DEFAULT_PORT);
}

/* Parses a whole decimal string in [min, max]. */
static bool parse_uint(const char *s, unsigned long min, unsigned long max,
                       unsigned long *out)
{
    if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
        return false;
    errno = 0;
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static bool set_port(const char *s, srv_config *cfg, FILE *err)
{
    unsigned long v;
    if (!parse_uint(s, 0, 65535, &v)) {
        fprintf(err, "st_proactor: invalid port '%s' (expected a number from 0 to 65535)\n", s);
        return false;
    }
    cfg->port = (unsigned)v;
    return true;
}

srv_parse_result srv_config_parse(int argc, char **argv, srv_config *cfg, FILE *out,
                                  FILE *err)
{
    *cfg = (srv_config){.port = SRV_DEFAULT_PORT};
    enum { OPT_BACKEND = 256 };
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'p'},
        {"bind", required_argument, NULL, 'b'},
        {"dispatch", required_argument, NULL, 'd'},
        {"threads", required_argument, NULL, 't'},
        {"backend", required_argument, NULL, OPT_BACKEND},
        {"quiet", no_argument, NULL, 'q'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {0, 0, 0, 0},
    };
    const char *prog = argc > 0 && argv[0] ? argv[0] : "st_proactor";
    opterr = 0;
    optind = 1;
    bool port_set = false;
    int c;
    while ((c = getopt_long(argc, argv, ":p:b:d:t:qvhV", longopts, NULL)) != -1) {
        unsigned long v;
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
        case 'd':
            if (px_executor_parse(optarg, &cfg->dispatch) != 0) {
                fprintf(err, "st_proactor: invalid --dispatch '%s' (expected thread, pool or inline)\n",
                        optarg);
                return SRV_PARSE_ERROR;
            }
            break;
        case 't':
            if (!parse_uint(optarg, 1, 1024, &v)) {
                fprintf(err, "st_proactor: invalid --threads '%s' (expected 1 to 1024)\n", optarg);
                return SRV_PARSE_ERROR;
            }
            cfg->threads = (unsigned)v;
            break;
        case OPT_BACKEND:
            if (px_backend_parse(optarg, &cfg->backend) != 0) {
                fprintf(err, "st_proactor: invalid --backend '%s' (expected auto, epoll or io_uring)\n",
                        optarg);
                return SRV_PARSE_ERROR;
            }
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
            fprintf(err, "st_proactor: option '%s' needs a value (see --help)\n", argv[optind - 1]);
            return SRV_PARSE_ERROR;
        default:
            fprintf(err, "st_proactor: unknown option '%s' (see --help)\n", argv[optind - 1]);
            return SRV_PARSE_ERROR;
        }
    }
    if (optind < argc) {
        if (port_set || optind + 1 < argc) {
            fprintf(err, "st_proactor: unexpected argument '%s' (see --help)\n",
                    argv[port_set ? optind : optind + 1]);
            return SRV_PARSE_ERROR;
        }
        if (!set_port(argv[optind], cfg, err))
            return SRV_PARSE_ERROR;
    }
    return SRV_PARSE_RUN;
}
