/*
 * Option parsing (src/server/config.c) called more than once in one process, as the
 * fuzz target does: each parse starts from scratch.
 */
#include "server/config.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

TestSuite(config, .timeout = 30);

static srv_parse_result parse(char *const args[], char *err, size_t cap)
{
    char *argv[8];
    int argc = 0;
    argv[argc++] = "st_proactor";
    for (int i = 0; args[i]; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    srv_config cfg;
    memset(err, 0, cap);
    FILE *f = fmemopen(err, cap - 1, "w");
    cr_assert(f);
    srv_parse_result rc = srv_config_parse(argc, argv, &cfg, f, f);
    fclose(f);
    return rc;
}

/* A parse that stopped at an error inside a cluster of short options ("-!" of "-!-flood")
 * used to leave getopt pointing into it, so the next parse reported a different error. */
Test(config, a_parse_stopped_inside_a_cluster_does_not_leak_into_the_next)
{
    char first[256], second[256];
    cr_assert_eq(parse((char *[]){"-!-flood", NULL}, first, sizeof(first)), SRV_PARSE_ERROR);
    cr_assert_eq(parse((char *[]){"-!-flood", NULL}, second, sizeof(second)), SRV_PARSE_ERROR);
    cr_expect_str_eq(second, first);
    cr_expect(strstr(first, "'-!'") != NULL, "%s", first);
    cr_assert_eq(parse((char *[]){"-qx", NULL}, first, sizeof(first)), SRV_PARSE_ERROR);
    cr_assert_eq(parse((char *[]){"-p", "8080", NULL}, second, sizeof(second)), SRV_PARSE_RUN,
                 "a valid command line refused after an error: %s", second);
}

Test(config, shown_escapes_controls_and_shortens)
{
    char out[SRV_SHOWN_MAX];
    cr_expect_str_eq(srv_shown("a\nb\x7f\x9b", out), "a\\x0Ab\\x7F\\x9B");
    char long_arg[300];
    memset(long_arg, '\x01', sizeof(long_arg) - 1);
    long_arg[sizeof(long_arg) - 1] = '\0';
    srv_shown(long_arg, out);
    cr_expect_eq(strlen(out), 64 * 4 + 3, "%zu", strlen(out));
}

Test(config, cluster_ttl_bounds_and_needs_cluster)
{
    char err[256];
    cr_expect_eq(parse((char *[]){"--cluster", "redis://127.0.0.1", "--cluster-ttl", "3", NULL},
                       err, sizeof(err)),
                 SRV_PARSE_RUN, "%s", err);
    cr_expect_eq(parse((char *[]){"--cluster", "redis://127.0.0.1", "--cluster-ttl", "3600",
                                  NULL},
                       err, sizeof(err)),
                 SRV_PARSE_RUN, "%s", err);
    cr_expect_eq(parse((char *[]){"--cluster", "redis://127.0.0.1", "--cluster-ttl", "2", NULL},
                       err, sizeof(err)),
                 SRV_PARSE_ERROR);
    cr_expect(strstr(err, "--cluster-ttl") != NULL, "%s", err);
    cr_expect_eq(parse((char *[]){"--cluster", "redis://127.0.0.1", "--cluster-ttl", "3601",
                                  NULL},
                       err, sizeof(err)),
                 SRV_PARSE_ERROR);
    cr_expect_eq(parse((char *[]){"--cluster-ttl", "30", NULL}, err, sizeof(err)),
                 SRV_PARSE_ERROR);
    cr_expect(strstr(err, "need --cluster") != NULL, "%s", err);
}
