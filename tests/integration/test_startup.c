/* Start-up contract of st_proactor: the banner and the port it names, command-line
 * errors (exit 2, one line), --help, and a port already in use. */
#include "harness.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(startup, .timeout = 60, .fini = h_cleanup);

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

Test(startup, banner_port_0)
{
    h_server s;
    cr_assert(h_server_start(&s, NULL), "no banner");
    /* h_server_start accepts only "Listening on port: [P] ...\n" exactly. */
    cr_assert(s.port > 0 && s.port <= 65535, "banner port %d", s.port);
    h_proc c;
    cr_assert(h_tcp_connect(&c, "127.0.0.1", s.port), "banner port %d not listening", s.port);
    cr_assert(h_server_wait_connected(&s, 1));
    h_proc_close(&c);
    h_server_stop(&s);
}

Test(startup, positional_port)
{
    int port = h_free_port();
    cr_assert(port > 0, "no free port");
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    h_server s;
    cr_assert(h_server_start_argv(&s, (const char *const[]){ps, NULL}), "no banner");
    cr_assert_eq(s.port, port, "banner shows port %d, asked for %d", s.port, port);
    h_server_stop(&s);
}

Test(startup, long_and_short_port_options)
{
    const char *opts[] = {"-p", "--port"};
    for (int i = 0; i < 2; i++) {
        int port = h_free_port();
        cr_assert(port > 0, "no free port");
        char ps[16];
        snprintf(ps, sizeof ps, "%d", port);
        h_server s;
        cr_assert(h_server_start_argv(&s, (const char *const[]){opts[i], ps, NULL}),
                  "no banner with %s %s", opts[i], ps);
        cr_assert_eq(s.port, port, "%s %s: banner shows %d", opts[i], ps, s.port);
        h_server_stop(&s);
    }
}

Test(startup, default_port_9034)
{
    int fd = h_listen_any(AF_INET6, 9034, NULL);
    if (fd < 0)
        fd = h_listen_any(AF_INET, 9034, NULL);
    if (fd < 0)
        cr_skip_test("port 9034 is in use on this machine; default port not tested");
    close(fd);

    h_server s;
    if (!h_server_start_argv(&s, (const char *const[]){NULL})) {
        /* Another run may have taken 9034 since we looked. */
        fd = h_listen_any(AF_INET, 9034, NULL);
        if (fd < 0)
            cr_skip_test("port 9034 was taken while the test ran");
        close(fd);
        cr_assert_fail("no banner on the default port");
    }
    cr_assert_eq(s.port, 9034, "default port: banner shows %d", s.port);
    h_server_stop(&s);
}

/* A bad port value: exit 2, exactly one line on stderr, nothing on stdout. */
static void bad_port(const char *const args[], const char *what)
{
    char out[4096], err[4096];
    int rc = h_server_run_to_exit(args, out, sizeof out, err, sizeof err);
    cr_expect_eq(rc, 2, "%s: exit status %d, want 2", what, rc);
    cr_expect_str_empty(out, "%s: stdout \"%s\", want nothing", what, out);
    cr_expect_eq(count_lines(err), 1, "%s: stderr has %d lines, want 1: \"%s\"", what,
                 count_lines(err), err);
}

Test(startup, bad_port_values)
{
    bad_port((const char *const[]){"abc", NULL}, "positional abc");
    bad_port((const char *const[]){"70000", NULL}, "positional 70000");
    bad_port((const char *const[]){"65536", NULL}, "positional 65536");
    bad_port((const char *const[]){"", NULL}, "positional ''");
    bad_port((const char *const[]){"12abc", NULL}, "positional 12abc");
    bad_port((const char *const[]){"--port", "", NULL}, "--port ''");
    bad_port((const char *const[]){"--port", "-5", NULL}, "--port -5");
    bad_port((const char *const[]){"--port", "abc", NULL}, "--port abc");
    bad_port((const char *const[]){"-p", "70000", NULL}, "-p 70000");
}

/* Other bad command lines: exit 2, nothing on stdout (a usage text on stderr is fine). */
static void bad_usage(const char *const args[], const char *what)
{
    char out[4096], err[8192];
    int rc = h_server_run_to_exit(args, out, sizeof out, err, sizeof err);
    cr_expect_eq(rc, 2, "%s: exit status %d, want 2", what, rc);
    cr_expect_str_empty(out, "%s: stdout \"%s\", want nothing", what, out);
    cr_expect_str_not_empty(err, "%s: nothing on stderr", what);
}

Test(startup, bad_options)
{
    /* "-5" as the only argument parses as an (unknown) option, not a port. */
    bad_usage((const char *const[]){"-5", NULL}, "-5");
    bad_usage((const char *const[]){"--dispatch", "bogus", NULL}, "--dispatch bogus");
    bad_usage((const char *const[]){"--nope", NULL}, "--nope");
}

/* An argument holding a newline or an escape sequence is shown escaped, so the error
 * stays one line and cannot drive the terminal (found by tests/fuzz/fuzz_options.c). */
Test(startup, hostile_argument_is_escaped)
{
    char out[256], err[1024];
    int rc = h_server_run_to_exit((const char *const[]){"--flood", "1\n\x1b[2J", NULL}, out,
                                  sizeof(out), err, sizeof(err));
    cr_expect_eq(rc, 2, "exit status %d, want 2", rc);
    cr_expect_eq(count_lines(err), 1, "want one line on stderr, got: %s", err);
    cr_expect(strstr(err, "'1\\x0A\\x1B[2J'") != NULL, "argument not escaped: %s", err);
    cr_expect(strchr(err, '\x1b') == NULL, "a raw escape byte on stderr: %s", err);
    char *long_arg = malloc(5000);
    cr_assert(long_arg);
    memset(long_arg, '7', 4999);
    long_arg[4999] = '\0';
    rc = h_server_run_to_exit((const char *const[]){long_arg, NULL}, out, sizeof(out), err,
                              sizeof(err));
    free(long_arg);
    cr_expect_eq(rc, 2, "exit status %d, want 2", rc);
    cr_expect(strlen(err) < 400 && strstr(err, "...'") != NULL,
              "a 5000-byte argument not shortened: %zu bytes", strlen(err));
}

Test(startup, help)
{
    const char *opts[] = {"--help", "-h"};
    for (int i = 0; i < 2; i++) {
        char out[8192], err[4096];
        int rc = h_server_run_to_exit((const char *const[]){opts[i], NULL}, out, sizeof out,
                                      err, sizeof err);
        cr_expect_eq(rc, 0, "%s: exit status %d, want 0", opts[i], rc);
        cr_expect(strstr(out, "--dispatch") != NULL,
                  "%s: usage on stdout does not mention --dispatch: \"%s\"", opts[i], out);
    }
}

/* The port is held by a listening socket of ours (dual stack, then IPv4 only). */
Test(startup, port_in_use)
{
    int families[] = {AF_INET6, AF_INET};
    for (int i = 0; i < 2; i++) {
        int port;
        int fd = h_listen_any(families[i], 0, &port);
        if (fd < 0)
            continue; /* no IPv6 here: the IPv4 case still runs */
        char ps[16], out[4096], err[4096];
        snprintf(ps, sizeof ps, "%d", port);
        int rc = h_server_run_to_exit((const char *const[]){ps, NULL}, out, sizeof out, err,
                                      sizeof err);
        close(fd);
        const char *fam = families[i] == AF_INET6 ? "[::]" : "0.0.0.0";
        cr_expect_eq(rc, 1, "%s:%d held: exit status %d, want 1", fam, port, rc);
        cr_expect(strstr(err, ps) || strstr(err, "in use"),
                  "%s:%d held: stderr names neither the port nor \"in use\": \"%s\"", fam,
                  port, err);
        cr_expect(strstr(out, "Listening") == NULL, "%s:%d held: banner printed anyway",
                  fam, port);
    }
}

/* The server says which backend it runs on, and why. */
Test(startup, backend_is_logged)
{
    h_server s;
    cr_assert(h_server_start(&s, "--backend", "epoll", NULL), "no banner");
    cr_assert(h_wait_line(&s.proc.err, "backend epoll (as asked)", NULL, NULL, 0, H_WAIT_MS),
              "no 'backend epoll (as asked)' line on stderr");
    h_server_stop(&s);

    cr_assert(h_server_start(&s, "--backend", "auto", NULL), "no banner");
    char line[512];
    cr_assert(h_wait_line(&s.proc.err, "backend ", NULL, line, sizeof line, H_WAIT_MS),
              "no backend line on stderr");
    cr_assert(strstr(line, "backend io_uring") || strstr(line, "backend epoll (io_uring unavailable: "),
              "unexpected backend line: %s", line);
    h_server_stop(&s);
}

/* Issue 17, item 8: --bind :: is every address, IPv4 included, as no --bind is; an
 * IPv4-mapped address is that IPv4 address; an address no socket here can take (a
 * link-local one without its interface) is a usage error naming the option. */
static void expect_listening(const char *bind, bool v4, bool v6)
{
    h_server s;
    cr_assert(h_server_start(&s, "--bind", bind, NULL), "--bind %s: no banner", bind);
    h_proc c;
    cr_assert_eq(h_tcp_connect(&c, "127.0.0.1", s.port), v4, "--bind %s: 127.0.0.1 %s", bind,
                 v4 ? "refused" : "accepted");
    if (v4)
        h_proc_close(&c);
    if (h_have_ipv6_loopback()) {
        cr_assert_eq(h_tcp_connect(&c, "::1", s.port), v6, "--bind %s: ::1 %s", bind,
                     v6 ? "refused" : "accepted");
        if (v6)
            h_proc_close(&c);
    }
    h_server_stop(&s);
}

Test(startup, bind_addresses)
{
    expect_listening("::", true, true);
    expect_listening("0.0.0.0", true, false);
    expect_listening("::ffff:127.0.0.1", true, false);
    char out[256], err[1024];
    int rc = h_server_run_to_exit((const char *const[]){"--port", "0", "--bind", "fe80::1",
                                                       NULL},
                                  out, sizeof out, err, sizeof err);
    cr_expect_eq(rc, 2, "--bind fe80::1: exit status %d, want 2", rc);
    cr_expect(strstr(err, "invalid --bind 'fe80::1'") != NULL, "--bind fe80::1: %s", err);
}

/* Issue 17, item 7: --raw relays control bytes between nameless clients; started
 * beyond loopback it says so in the log, on loopback it does not. */
static bool raw_warns(const char *bind)
{
    h_server s;
    bool started = bind ? h_server_start(&s, "--raw", "--bind", bind, NULL)
                        : h_server_start(&s, "--raw", NULL);
    cr_assert(started, "no banner");
    h_proc c;
    cr_assert(h_tcp_connect(&c, "127.0.0.1", s.port));
    bool warned = false;
    char line[2048];
    /* Everything logged before the first connection. */
    while (h_read_line(&s.proc.err, line, sizeof line, H_WAIT_MS) > 0 &&
           !strstr(line, "connected "))
        warned |= strstr(line, " warn ") && strstr(line, "for trusted networks only");
    h_proc_close(&c);
    h_server_stop(&s);
    return warned;
}

Test(startup, raw_warns_beyond_loopback)
{
    cr_expect(raw_warns(NULL), "--raw on every address: no warning");
    cr_expect(!raw_warns("127.0.0.1"), "--raw on 127.0.0.1: a warning");
}
