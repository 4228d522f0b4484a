/*
 * libFuzzer target: command-line option parsing (src/server/config.c).
 * The input is an argument vector, arguments separated by NUL bytes.  Checks: a
 * vector parsed twice gives the same result and configuration (getopt's hidden
 * state is reset between parses); an accepted configuration respects every
 * documented bound; a refused one prints exactly one line, on the error stream,
 * starting with "st_proactor: "; --help and --version print on the output stream.
 */
#include "server/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARGS 32

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_options: invariant broken: %s\n", what);
        abort();
    }
}

typedef struct parsed {
    srv_parse_result rc;
    srv_config cfg;
    char out[4096], err[1024];
    size_t out_len, err_len;
} parsed;

static void parse(int argc, char **argv, parsed *p)
{
    memset(p, 0, sizeof(*p));
    FILE *out = fmemopen(p->out, sizeof(p->out) - 1, "w");
    FILE *err = fmemopen(p->err, sizeof(p->err) - 1, "w");
    check(out && err, "fmemopen");
    p->rc = srv_config_parse(argc, argv, &p->cfg, out, err);
    fflush(out);
    fflush(err);
    p->out_len = (size_t)ftell(out);
    p->err_len = (size_t)ftell(err);
    fclose(out);
    fclose(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Each argument in its own heap block: ASan catches a read past its end. */
    char *argv[MAX_ARGS + 2] = {0};
    int argc = 0;
    argv[argc++] = strdup("st_proactor");
    size_t start = 0;
    for (size_t i = 0; i <= size && argc < MAX_ARGS + 1; i++) {
        if (i == size || data[i] == 0) {
            if (i == size && i == start && argc > 1)
                break; /* a trailing NUL ends the vector */
            char *a = malloc(i - start + 1);
            check(a != NULL, "memory");
            memcpy(a, data + start, i - start);
            a[i - start] = '\0';
            argv[argc++] = a;
            start = i + 1;
        }
    }
    /* getopt_long may permute argv: each parse gets its own copy of the vector. */
    char *v1[MAX_ARGS + 2], *v2[MAX_ARGS + 2];
    memcpy(v1, argv, sizeof(argv));
    memcpy(v2, argv, sizeof(argv));
    static parsed a, b;
    parse(argc, v1, &a);
    parse(argc, v2, &b);

    check(a.rc == b.rc, "the same arguments parsed twice give different results");
    check(a.err_len == b.err_len && memcmp(a.err, b.err, a.err_len) == 0,
          "the same arguments parsed twice give different errors");
    switch (a.rc) {
    case SRV_PARSE_RUN:
        check(a.cfg.port == b.cfg.port && a.cfg.max_line == b.cfg.max_line &&
                  a.cfg.sendq == b.cfg.sendq && a.cfg.flood_rate == b.cfg.flood_rate &&
                  a.cfg.flood_burst == b.cfg.flood_burst && a.cfg.threads == b.cfg.threads &&
                  a.cfg.raw == b.cfg.raw && a.cfg.history == b.cfg.history &&
                  a.cfg.idle_timeout == b.cfg.idle_timeout &&
                  a.cfg.max_clients == b.cfg.max_clients &&
                  a.cfg.announce_max == b.cfg.announce_max && a.cfg.keepalive == b.cfg.keepalive &&
                  a.cfg.shutdown_wait == b.cfg.shutdown_wait &&
                  a.cfg.cluster_ttl == b.cfg.cluster_ttl,
              "the same arguments parsed twice give different configurations");
        check(a.out_len == 0 && a.err_len == 0, "an accepted configuration printed something");
        check(a.cfg.port <= 65535, "port above 65535");
        check(a.cfg.max_line >= 16 && a.cfg.max_line <= (1u << 20), "--max-line out of range");
        check(a.cfg.sendq >= 2 * (a.cfg.max_line * 3 + 64), "--sendq below two longest lines");
        check(a.cfg.threads <= 1024, "--threads above 1024");
        check(a.cfg.flood_rate <= 1000000 && a.cfg.flood_burst <= 2000000, "--flood too large");
        check(!a.cfg.flood_rate || a.cfg.flood_burst >= 1, "a flood limit with no burst");
        check(a.cfg.history <= 10000, "--history above 10000");
        check(a.cfg.idle_timeout <= 30u * 24 * 3600, "--idle-timeout above 30 days");
        check(!(a.cfg.quiet && a.cfg.verbose), "--quiet with --verbose accepted");
        check(!a.cfg.bind || *a.cfg.bind, "an empty --bind accepted");
        check(a.cfg.keepalive <= PX_KEEPALIVE_MAX, "--keepalive above what px_listen takes");
        check(a.cfg.shutdown_wait <= 600000, "--shutdown-wait above 10 minutes");
        check(a.cfg.announce_max <= 100000000, "--announce-max above 10^8");
        check(a.cfg.sendq <= (1u << 30), "--sendq above 1G");
        check(a.cfg.cluster_ttl >= 3 && a.cfg.cluster_ttl <= 3600, "--cluster-ttl out of range");
        check(a.cfg.cluster || !a.cfg.cluster_optional, "--cluster-optional without --cluster");
        break;
    case SRV_PARSE_EXIT:
        check(a.out_len > 0 && a.err_len == 0, "--help/--version printed nothing");
        break;
    case SRV_PARSE_ERROR:
        check(a.out_len == 0, "an error printed on the output stream");
        check(a.err_len > 13 && memcmp(a.err, "st_proactor: ", 13) == 0,
              "an error line does not start with 'st_proactor: '");
        check(memchr(a.err, '\n', a.err_len) == a.err + a.err_len - 1,
              "an error is not exactly one line");
        for (size_t i = 0; i + 1 < a.err_len; i++)
            check((unsigned char)a.err[i] >= 0x20 && (unsigned char)a.err[i] < 0x7F,
                  "an error shows a control or non-ASCII byte of an argument raw");
        break;
    default:
        check(0, "unknown parse result");
    }
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    return 0;
}
