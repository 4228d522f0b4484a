/* Relaying with real clients: every line reaches every other client unchanged and never
 * its sender, over IPv4 and IPv6, across partial writes, early closes and resets. */
#include "harness.h"

#include <criterion/criterion.h>

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

TestSuite(relay, .timeout = 60, .fini = h_cleanup);

/* Three nc clients; each speaks in turn and the others get the line. Each client's next
 * line is checked, so a line echoed to its sender appears where the sender expects the
 * next speaker's line: absence is asserted by order, not by waiting. */
static void three_nc(const char *dispatch)
{
    h_server s;
    cr_assert(h_server_start(&s, "--raw", "--dispatch", dispatch, NULL), "no banner");
    h_proc a, b, c;
    h_proc *all[] = {&a, &b, &c};
    h_connect_all(&s, all, 3, 3);
    h_relay(all, 3, 0, "hello from a\n");
    h_relay(all, 3, 1, "hello from b\n");
    h_relay(all, 3, 2, "hello from c, with  spaces\tand a tab\n");
    h_relay(all, 3, 0, "marker from a\n");
    h_relay(all, 3, 1, "\n"); /* an empty line is a line too */
    h_relay(all, 3, 2, "last\n");
    for (int i = 0; i < 3; i++)
        h_proc_close(all[i]);
    h_server_stop(&s);
}
H_EACH_DISPATCH(relay, three_nc)

Test(relay, ipv6_and_ipv4_clients)
{
    if (!h_have_ipv6_loopback())
        cr_skip_test("::1 is not available here");
    h_server s;
    cr_assert(h_server_start(&s, "--raw", NULL), "no banner");
    h_proc v6, v4;
    h_proc *all[] = {&v6, &v4};
    cr_assert(h_nc_start(&v6, "::1", s.port));
    cr_assert(h_server_wait_connected(&s, 1), "the ::1 client was not logged");
    cr_assert(h_nc_start(&v4, "127.0.0.1", s.port));
    cr_assert(h_server_wait_connected(&s, 2), "the 127.0.0.1 client was not logged");
    h_relay(all, 2, 0, "from six\n");
    h_relay(all, 2, 1, "from four\n");
    h_relay(all, 2, 0, "six again\n");
    h_proc_close(&v6);
    h_proc_close(&v4);
    h_server_stop(&s);
}

/* "hel" and "lo\n" arrive at the server in separate segments, with a whole line from
 * another client relayed in between: the others get "hello\n", and only after. */
Test(relay, partial_line)
{
    h_server s;
    cr_assert(h_server_start(&s, "--raw", NULL), "no banner");
    h_proc a, b, c;
    h_proc *all[] = {&a, &b, &c};
    h_connect_all(&s, all, 3, 0);
    cr_assert(h_send(&a, "hel"));
    h_relay(all, 3, 1, "between\n"); /* a round trip; c's next line is not "hel" */
    cr_assert(h_send(&a, "lo\n"));
    h_expect_line(&b, "hello\n");
    h_expect_line(&c, "hello\n");
    cr_assert(h_send(&a, "x"));
    cr_assert(h_send(&a, "y"));
    cr_assert(h_send(&a, "z\n"));
    h_expect_line(&b, "xyz\n");
    h_expect_line(&c, "xyz\n");
    for (int i = 0; i < 3; i++)
        h_proc_close(all[i]);
    h_server_stop(&s);
}

/* Lines written just before close() are still delivered. */
Test(relay, write_then_close)
{
    h_server s;
    cr_assert(h_server_start(&s, "--raw", NULL), "no banner");
    h_proc a, b, c;
    h_proc *all[] = {&a, &b, &c};
    h_connect_all(&s, all, 3, 0);
    cr_assert(h_send(&a, "last words\nand more\n"));
    h_proc_close(&a);
    h_expect_line(&b, "last words\n");
    h_expect_line(&b, "and more\n");
    h_expect_line(&c, "last words\n");
    h_expect_line(&c, "and more\n");
    cr_assert(h_server_wait_disconnected(&s, 2), "no \"disconnected ... (2 online)\"");
    h_proc *left[] = {&b, &c};
    h_relay(left, 2, 0, "still here\n");
    h_relay(left, 2, 1, "me too\n");
    h_proc_close(&b);
    h_proc_close(&c);
    h_server_stop(&s);
}

/* Clients that vanish: an nc killed by SIGKILL (the kernel closes its socket) and a raw
 * socket closed with SO_LINGER 0 (a reset). Each is logged as disconnected, and the
 * others go on talking. */
Test(relay, killed_and_reset_clients)
{
    h_server s;
    cr_assert(h_server_start(&s, "--raw", NULL), "no banner");
    h_proc a, b, k, r;
    h_proc *four[] = {&a, &b, &k, &r};
    h_connect_all(&s, four, 4, 3);
    h_relay(four, 4, 0, "all four here\n");

    cr_assert(h_proc_stop(&k, SIGKILL, H_WAIT_MS), "nc did not die");
    h_proc_close(&k);
    cr_assert(h_server_wait_disconnected(&s, 3), "killed nc: no \"disconnected (3 online)\"");
    h_proc *three[] = {&a, &b, &r};
    h_relay(three, 3, 0, "after the kill\n");
    h_relay(three, 3, 2, "reset coming\n");

    /* SO_LINGER 0 makes close() send a RST, not a FIN; a line may still be on its way
     * to r, as when a real client drops. */
    cr_assert(h_send(&a, "unread by r\n"));
    h_expect_line(&b, "unread by r\n");
    h_tcp_reset(&r);
    cr_assert(h_server_wait_disconnected(&s, 2), "reset: no \"disconnected (2 online)\"");
    h_proc *two[] = {&a, &b};
    h_relay(two, 2, 0, "after the reset\n");
    h_relay(two, 2, 1, "still talking\n");
    h_proc_close(&a);
    h_proc_close(&b);
    h_server_stop(&s);
}

