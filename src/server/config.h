/* Command-line options of st_proactor and their defaults. */
#ifndef SRV_CONFIG_H
#define SRV_CONFIG_H

#include "proactor.h"

#include <stdbool.h>
#include <stdio.h>

#define SRV_DEFAULT_PORT 9034

typedef struct srv_config {
    unsigned port;
    const char *bind;      /* NULL: every address, IPv6 and IPv4 */
    px_executor dispatch;
    px_backend backend;
    unsigned threads;      /* 0: one per CPU */
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

#endif
