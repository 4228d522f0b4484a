/* The chat options on the command line: --version, --help mentions every option, and
 * each bad value ends the server with status 2 and exactly one stderr line naming the
 * option. */
#include "harness.h"

#include <criterion/criterion.h>

#include <signal.h>
#include <string.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(chat_options, .timeout = 60, .fini = h_cleanup);

Test(chat_options, version)
{
    char out[4096], err[4096];
    const char *args[] = {"--version", NULL};
    cr_assert_eq(h_server_run_to_exit(args, out, sizeof out, err, sizeof err), 0);
    cr_assert(strstr(out, "st_proactor"), "--version printed \"%s\"", out);
    const char *args2[] = {"-V", NULL};
    cr_assert_eq(h_server_run_to_exit(args2, out, sizeof out, err, sizeof err), 0);
}

Test(chat_options, help_mentions_every_option)
{
    char out[16384], err[4096];
    const char *args[] = {"--help", NULL};
    cr_assert_eq(h_server_run_to_exit(args, out, sizeof out, err, sizeof err), 0);
    const char *opts[] = {"--port",        "--bind",    "--raw",       "--dispatch",
                          "--threads",     "--backend", "--max-clients", "--max-line",
                          "--sendq",       "--flood",   "--idle-timeout", "--history",
                          "--announce-max", "--keepalive", "--shutdown-wait",
                          "--quiet",       "--verbose", "--help",      "--version"};
    for (size_t i = 0; i < sizeof opts / sizeof *opts; i++)
        cr_assert(strstr(out, opts[i]), "--help does not mention %s", opts[i]);
}

static void bad_value(const char *opt, const char *val)
{
    char out[4096], err[4096];
    const char *args[] = {"--port", "0", opt, val, NULL};
    int rc = h_server_run_to_exit(args, out, sizeof out, err, sizeof err);
    cr_assert_eq(rc, 2, "%s '%s': exit %d, want 2 (stderr: %s)", opt, val, rc, err);
    size_t len = strlen(err);
    cr_assert(len > 0 && err[len - 1] == '\n' && memchr(err, '\n', len) == err + len - 1,
              "%s '%s': want exactly one stderr line, got \"%s\"", opt, val, err);
    cr_assert(strstr(err, opt), "%s '%s': stderr does not name the option: \"%s\"", opt, val,
              err);
    cr_assert(!strstr(out, "Listening"), "%s '%s': the server started", opt, val);
}

Test(chat_options, bad_values)
{
    const char *cases[][2] = {
        {"--max-line", "0"},        {"--max-line", "abc"},      {"--max-line", "-5"},
        {"--max-line", "99999999999"},
        {"--sendq", "-1"},          {"--sendq", "1X"},          {"--sendq", "10"},
        {"--sendq", ""},
        {"--flood", "x"},           {"--flood", "5:"},          {"--flood", "-1"},
        {"--flood", "5:x"},
        {"--idle-timeout", "-3"},   {"--idle-timeout", "soon"}, {"--idle-timeout", "1.5"},
        {"--history", "x"},         {"--history", "-1"},        {"--history", "99999999"},
        {"--max-clients", "-1"},    {"--max-clients", "many"},
        {"--threads", "0"},         {"--threads", "x"},         {"--threads", "-2"},
        {"--announce-max", "x"},    {"--announce-max", "-1"},
        {"--keepalive", "x"},       {"--keepalive", "86401"},   {"--shutdown-wait", "1s"},
        {"--shutdown-wait", "600001"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        bad_value(cases[i][0], cases[i][1]);
}

/* Good values start the server. */
Test(chat_options, good_values)
{
    h_server s;
    cr_assert(h_server_start(&s, "--max-line", "65536", "--sendq", "512K", "--flood", "10",
                             "--idle-timeout", "0", "--history", "0", "--max-clients", "5",
                             "--threads", "3", NULL),
              "no banner");
    h_server_stop(&s);
}

/* --announce-max 2: joins and leaves are told in a room of two, not in a room of three. */
Test(chat_options, announce_max)
{
    h_server s;
    cr_assert(h_server_start(&s, "--announce-max", "2", NULL));
    h_proc a, b, c;
    char na[32], nb[32], nc[32], line[512];
    cr_assert(h_chat_connect(&s, &a, 1, na, sizeof na));
    cr_assert(h_chat_connect(&s, &b, 2, nb, sizeof nb));
    snprintf(line, sizeof line, "*** %s has joined lobby.\r\n", nb);
    h_expect_line(&a, line);
    cr_assert(h_chat_connect(&s, &c, 3, nc, sizeof nc)); /* the third: no notice */
    h_chat_relay((h_proc *const[]){&a, &b, &c}, 3, 2, nc, "quietly here");
    h_proc_close(&c); /* leaving a room of three: no notice either */
    cr_assert(h_server_wait_disconnected(&s, 2));
    h_chat_relay((h_proc *const[]){&a, &b}, 2, 0, na, "still two");
    h_proc_close(&b); /* a room of two: told */
    snprintf(line, sizeof line, "*** %s has left (", nb);
    cr_assert(h_wait_line(&a.out, line, NULL, NULL, 0, H_WAIT_MS), "no leave notice");
    h_proc_close(&a);
    h_server_stop(&s);
}
