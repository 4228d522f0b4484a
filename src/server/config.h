/* Command-line options of st_proactor and their defaults. */
#ifndef SRV_CONFIG_H
#define SRV_CONFIG_H

#include "proactor.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define SRV_DEFAULT_PORT 9034
#define SRV_DEFAULT_MAX_LINE 2048
#define SRV_DEFAULT_SENDQ (1u << 20)
#define SRV_DEFAULT_FLOOD_RATE 20
#define SRV_DEFAULT_FLOOD_BURST 40
#define SRV_DEFAULT_HISTORY 20
#define SRV_DEFAULT_KEEPALIVE_S 300
#define SRV_DEFAULT_ANNOUNCE_MAX 100
#define SRV_DEFAULT_SHUTDOWN_WAIT_MS 2000
#define SRV_DEFAULT_CLUSTER_TTL_S 30

typedef struct srv_config {
    unsigned port;
    const char *bind;       /* NULL: every address, IPv6 and IPv4 */
    bool raw;               /* the original plain relay */
    px_executor dispatch;
    px_backend backend;
    unsigned threads;       /* 0: one per CPU */
    unsigned max_clients;   /* 0: no limit but the machine's */
    size_t max_line;        /* bytes, terminator excluded */
    size_t sendq;           /* bytes queued per client before it is dropped */
    unsigned flood_rate;    /* lines per second; 0: off */
    unsigned flood_burst;   /* lines */
    unsigned idle_timeout;  /* seconds; 0: off */
    unsigned history;       /* lines replayed to a room's new member */
    unsigned announce_max;  /* join/leave notices only in rooms of at most this many */
    unsigned keepalive;     /* seconds of silence before TCP keepalive probes; 0: off */
    unsigned shutdown_wait; /* ms queued output may take to drain at shutdown */
    const char *cluster;    /* redis://HOST:PORT[/DB], or NULL */
    const char *node_name;  /* this server's name in the cluster */
    bool cluster_optional;  /* run alone while Redis is unreachable at start */
    unsigned cluster_ttl;   /* seconds a crashed server's users stay listed */
    bool quiet, verbose;
} srv_config;

/* What srv_config_parse decided. */
typedef enum srv_parse_result {
    SRV_PARSE_RUN,   /* options are valid: run the server */
    SRV_PARSE_EXIT,  /* --help or --version printed: exit 0 */
    SRV_PARSE_ERROR, /* one line printed on err: exit 2 */
} srv_parse_result;

srv_parse_result srv_config_parse(int argc, char **argv, srv_config *cfg, FILE *out,
                                  FILE *err);

/* Parses "redis://HOST:PORT[/DB]" (PORT defaults to 6379, DB to 0); false if
 * malformed. */
bool srv_parse_redis_url(const char *url, char *host, size_t cap, int *port, int *db);

/* An argument as an error message shows it: bytes below 0x20 and from 0x7F up (DEL,
 * and whatever could be a C1 control such as CSI) as \xNN, so that an argument holding
 * a newline or an escape sequence cannot break the one-line error or drive the
 * terminal, and at most 64 bytes of it ("..." after).  Returns out. */
#define SRV_SHOWN_MAX (64 * 4 + 4)
const char *srv_shown(const char *s, char out[SRV_SHOWN_MAX]);

#endif
