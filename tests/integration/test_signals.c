/* Shutdown: SIGTERM and SIGINT with clients connected end the server with status 0, and
 * its clients see the connection close. */
#include "harness.h"

#include <criterion/criterion.h>

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(signals, .timeout = 60, .fini = h_cleanup);

static void stop_with(int sig)
{
    h_server s;
    cr_assert(h_server_start(&s, "--raw", NULL), "no banner");
    h_proc a, b, r;
    h_proc *all[] = {&a, &b, &r};
    h_connect_all(&s, all, 3, 2);
    h_relay(all, 3, 0, "before the signal\n");
    /* netcat-openbsd exits (closing its stdout) only once both its stdin and the
     * connection have ended; end stdin now so that its exit shows the connection end. */
    close(a.in);
    close(b.in);
    a.in = b.in = -1;

    bool in_time = h_proc_stop(&s.proc, sig, H_WAIT_MS);
    cr_assert(in_time, "%s: server still running after %d ms (killed)", strsignal(sig),
              H_WAIT_MS);
    int st = s.proc.status;
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: wait status 0x%x, want exit 0",
              strsignal(sig), (unsigned)st);

    /* Whatever the server said last, each client's stream then ends. */
    for (int i = 0; i < 3; i++) {
        char rest[4096];
        cr_assert(h_read_all(&all[i]->out, rest, sizeof rest, H_WAIT_MS) >= 0,
                  "%s: client %d saw no EOF", strsignal(sig), i);
    }
    cr_assert(h_proc_wait(&a, H_WAIT_MS), "nc did not exit after the server closed");
    cr_assert(h_proc_wait(&b, H_WAIT_MS), "nc did not exit after the server closed");
    cr_assert(WIFEXITED(a.status) && WIFEXITED(b.status), "nc died of a signal");
    for (int i = 0; i < 3; i++)
        h_proc_close(all[i]);
    h_server_stop(&s); /* already reaped: checks its stderr for sanitizer reports */
}

Test(signals, sigterm_with_clients)
{
    stop_with(SIGTERM);
}

Test(signals, sigint_with_clients)
{
    stop_with(SIGINT);
}

/* Issue 17: SIGHUP (the terminal that ran the server closed), SIGUSR1 and SIGUSR2 never
 * kill the server: they are logged (SIGUSR1 with a status line) and chat goes on; SIGQUIT
 * stops it as SIGTERM does, telling every client first. */
Test(signals, hup_and_usr_are_not_fatal_and_quit_is_graceful)
{
    h_server s;
    h_proc a, b;
    h_proc *all[] = {&a, &b};
    char nk[2][32];
    h_chat_start(&s, all, 2, nk, NULL);
    static const struct {
        int sig;
        const char *logged;
    } kept[] = {
        {SIGHUP, "SIGHUP: nothing to reload; ignored"},
        {SIGUSR1, "status: 2 online, 2 connections, 1 rooms"},
        {SIGUSR2, "SIGUSR2: ignored"},
    };
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
        cr_assert_eq(kill(s.proc.pid, kept[i].sig), 0);
        cr_assert(h_wait_line(&s.proc.err, kept[i].logged, NULL, NULL, 0, H_WAIT_MS),
                  "%s: no log line '%s'", strsignal(kept[i].sig), kept[i].logged);
        h_chat_relay(all, 2, (int)i % 2, nk[i % 2], "still here");
    }
    cr_assert(h_proc_stop(&s.proc, SIGQUIT, H_WAIT_MS), "server still running after SIGQUIT");
    int st = s.proc.status;
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGQUIT: wait status 0x%x, want exit 0",
              (unsigned)st);
    for (int i = 0; i < 2; i++) {
        h_expect_line(all[i], "*** Server shutting down.\r\n");
        h_proc_close(all[i]);
    }
    h_server_stop(&s); /* already reaped: checks its stderr for sanitizer reports */
}
