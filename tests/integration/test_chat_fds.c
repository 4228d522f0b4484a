/*
 * Out of descriptors: with its descriptor limit pinned low, the server
 * tells new clients it is busy and closes them, keeps serving the clients it
 * has, and accepts again once descriptors are free.
 */
#include "harness.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FD_LIMIT 40
#define MAX_CLIENTS 80

TestSuite(chat_fds, .fini = h_cleanup, .timeout = 60);

Test(chat_fds, busy_when_out_of_descriptors)
{
    h_server s;
    const char *args[] = {"--port", "0", NULL};
    cr_assert(h_server_start_nofile(&s, FD_LIMIT, args), "no banner");
    h_proc *c = calloc(MAX_CLIENTS, sizeof(*c));
    cr_assert_not_null(c);
    static const char busy[] = "*** Server busy, try again later.\r\n";
    char line[1024];
    int n = 0, refused = -1;
    for (; n < MAX_CLIENTS && refused < 0; n++) {
        cr_assert(h_tcp_connect(&c[n], "127.0.0.1", s.port), "connect %d", n);
        ssize_t len = h_read_line(&c[n].out, line, sizeof line, H_WAIT_MS);
        cr_assert(len > 0, "client %d: neither welcomed nor refused", n);
        if (strcmp(line, busy) == 0) {
            refused = n;
            break;
        }
        cr_assert(strncmp(line, "*** Welcome to st_proactor, ", 28) == 0,
                  "client %d: unexpected first line \"%s\"", n, line);
        cr_assert(h_read_line(&c[n].out, line, sizeof line, H_WAIT_MS) > 0);
        /* Everyone already here hears about the newcomer: drain that. */
        for (int k = 0; k < n; k++)
            cr_assert(h_read_line(&c[k].out, line, sizeof line, H_WAIT_MS) > 0);
    }
    cr_assert(refused > 1, "no client was refused within %d connections", MAX_CLIENTS);
    h_expect_eof(&c[refused], H_WAIT_MS);

    /* The clients already connected are unaffected. */
    cr_assert(h_send(&c[0], "still here\n"));
    for (int k = 1; k < refused; k++) {
        cr_assert(h_read_line(&c[k].out, line, sizeof line, H_WAIT_MS) > 0);
        cr_assert(strstr(line, "> still here\r\n") != NULL, "client %d got \"%s\"", k, line);
    }

    /* Free descriptors: the next client is welcomed again. */
    for (int k = refused - 3; k < refused; k++)
        h_proc_close(&c[k]);
    cr_assert(h_server_wait_disconnected(&s, refused - 3));
    h_proc again;
    cr_assert(h_tcp_connect(&again, "127.0.0.1", s.port));
    cr_assert(h_read_line(&again.out, line, sizeof line, H_WAIT_MS) > 0);
    cr_assert(strncmp(line, "*** Welcome to st_proactor, ", 28) == 0,
              "after freeing descriptors: \"%s\"", line);
    h_proc_close(&again);
    for (int k = 0; k < refused - 3; k++)
        h_proc_close(&c[k]);
    h_proc_close(&c[refused]);
    free(c);
    h_server_stop(&s);
}
