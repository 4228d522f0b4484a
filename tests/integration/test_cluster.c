/*
 * Clustering through Redis (--cluster): a real redis-server on a free loopback port
 * (started and stopped by PID), two st_proactor nodes, raw TCP clients.  Cross-node
 * delivery, one order for a room on every node under concurrent publishers, Redis
 * restarting mid-conversation, Redis unreachable at start.
 */
#include "harness.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TestSuite(cluster, .timeout = 120, .fini = h_cleanup);

typedef struct redis {
    h_proc proc;
    int port;
    char url[64];
} redis;

/* Starts redis-server on port (0: a free one) and waits until it answers PING. */
static void redis_start(redis *r, int port)
{
    r->port = port ? port : h_free_port();
    cr_assert(r->port > 0);
    char ps[16];
    snprintf(ps, sizeof ps, "%d", r->port);
    snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d", r->port);
    char *argv[] = {"redis-server", "--port", ps, "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", NULL};
    cr_assert_eq(h_spawn(&r->proc, argv, true), 0, "cannot start redis-server");
    for (long long end = h_now_ms() + H_WAIT_MS; h_now_ms() < end; usleep(20000)) {
        h_proc c;
        if (!h_tcp_connect(&c, "127.0.0.1", r->port))
            continue;
        char line[64];
        bool ok = h_send(&c, "PING\r\n") && h_read_line(&c.out, line, sizeof line, 2000) > 0 &&
                  strncmp(line, "+PONG", 5) == 0;
        h_proc_close(&c);
        if (ok)
            return;
    }
    cr_assert_fail("redis-server did not answer on port %d", r->port);
}

static void redis_stop(redis *r)
{
    h_proc_stop(&r->proc, SIGTERM, H_WAIT_MS);
    h_proc_close(&r->proc);
}

static void node_start(h_server *s, const redis *r, const char *name, bool optional)
{
    if (optional)
        cr_assert(h_server_start(s, "--cluster", r->url, "--node-name", name,
                                 "--cluster-optional", NULL), "node %s did not start", name);
    else
        cr_assert(h_server_start(s, "--cluster", r->url, "--node-name", name, NULL),
                  "node %s did not start", name);
    cr_assert(h_wait_line(&s->proc.err, "cluster: connected to Redis", NULL, NULL, 0, H_WAIT_MS) ||
                  optional,
              "node %s never connected to Redis", name);
}

/* Connects a client (the n-th on its node), renames it, drains the rename answer. */
static void client(h_server *s, h_proc *p, int online, const char *nick)
{
    char guest[32], line[256];
    cr_assert(h_chat_connect(s, p, online, guest, sizeof guest));
    if (nick) {
        snprintf(line, sizeof line, "/nick %s\n", nick);
        cr_assert(h_send(p, line));
        cr_assert(h_wait_line(&p->out, "You are now known as", NULL, NULL, 0, H_WAIT_MS),
                  "no answer to /nick %s", nick);
    }
}

/* Reads lines until one starts with "<"; copies it. */
static bool next_message(h_proc *p, char *out, size_t cap)
{
    for (;;) {
        ssize_t n = h_read_line(&p->out, out, cap, H_WAIT_MS);
        if (n <= 0)
            return false;
        if (out[0] == '<' || strncmp(out, "[local] ", 8) == 0)
            return true;
    }
}

Test(cluster, one_room_across_nodes_in_one_order)
{
    redis r;
    redis_start(&r, 0);
    h_server a, b;
    node_start(&a, &r, "a", false);
    node_start(&b, &r, "b", false);
    h_proc ana, a2, bob, b2;
    client(&a, &ana, 1, "ana");
    client(&a, &a2, 2, "watcher_a");
    client(&b, &bob, 1, "bob");
    client(&b, &b2, 2, "watcher_b");

    /* Both publish at once; both watchers, one on each node, must see one sequence. */
    enum { N = 50 };
    for (int k = 0; k < N; k++) {
        char line[64];
        snprintf(line, sizeof line, "ana says %d\n", k);
        cr_assert(h_send(&ana, line));
        snprintf(line, sizeof line, "bob says %d\n", k);
        cr_assert(h_send(&bob, line));
    }
    char seen_a[2 * N][64], line[256];
    int next_ana = 0, next_bob = 0;
    for (int i = 0; i < 2 * N; i++) {
        cr_assert(next_message(&a2, seen_a[i], sizeof seen_a[i]), "watcher on a: %d of %d", i,
                  2 * N);
        int k;
        if (sscanf(seen_a[i], "<ana> ana says %d", &k) == 1)
            cr_expect_eq(k, next_ana++, "ana's lines out of order at a");
        else if (sscanf(seen_a[i], "<bob> bob says %d", &k) == 1)
            cr_expect_eq(k, next_bob++, "bob's lines out of order at a");
        else
            cr_assert_fail("unexpected line at a: %s", seen_a[i]);
    }
    for (int i = 0; i < 2 * N; i++) {
        cr_assert(next_message(&b2, line, sizeof line), "watcher on b: %d of %d", i, 2 * N);
        cr_expect_str_eq(line, seen_a[i], "the two nodes disagree on the order at line %d", i);
    }
    /* Each publisher gets the other's lines, never its own. */
    for (int i = 0; i < N; i++) {
        cr_assert(next_message(&ana, line, sizeof line));
        cr_expect(strncmp(line, "<bob> ", 6) == 0, "ana got %s", line);
        cr_assert(next_message(&bob, line, sizeof line));
        cr_expect(strncmp(line, "<ana> ", 6) == 0, "bob got %s", line);
    }
    h_close_all((h_proc *const[]){&ana, &a2, &bob, &b2}, 4);
    h_server_stop(&a);
    h_server_stop(&b);
    redis_stop(&r);
}

Test(cluster, redis_restart_mid_conversation)
{
    redis r;
    redis_start(&r, 0);
    h_server a;
    node_start(&a, &r, "a", false);
    h_proc p, q;
    char pn[32], qn[32], want[128], line[256];
    cr_assert(h_chat_connect(&a, &p, 1, pn, sizeof pn));
    cr_assert(h_chat_connect(&a, &q, 2, qn, sizeof qn));
    /* Notices go round Redis too, so a join can arrive after the next client joined:
     * look at messages only. */
    cr_assert(h_send(&p, "before\n"));
    cr_assert(next_message(&q, line, sizeof line));
    snprintf(want, sizeof want, "<%s> before\r\n", pn);
    cr_expect_str_eq(line, want);

    int port = r.port;
    redis_stop(&r);
    cr_assert(h_wait_line(&p.out, "The cluster is unreachable", NULL, NULL, 0, H_WAIT_MS));
    cr_assert(h_wait_line(&q.out, "The cluster is unreachable", NULL, NULL, 0, H_WAIT_MS));
    cr_assert(h_send(&p, "while down\n"));
    snprintf(want, sizeof want, "[local] <%s> while down\r\n", pn);
    h_expect_line(&q, want);

    redis_start(&r, port);
    cr_assert(h_wait_line(&p.out, "The cluster is back", NULL, NULL, 0, 2 * H_WAIT_MS));
    cr_assert(h_wait_line(&q.out, "The cluster is back", NULL, NULL, 0, H_WAIT_MS));
    cr_assert(h_send(&p, "after\n"));
    cr_assert(next_message(&q, line, sizeof line));
    snprintf(want, sizeof want, "<%s> after\r\n", pn);
    cr_expect_str_eq(line, want);
    h_close_all((h_proc *const[]){&p, &q}, 2);
    h_server_stop(&a);
    redis_stop(&r);
}

Test(cluster, redis_unreachable_at_start)
{
    redis none = {.port = h_free_port()};
    snprintf(none.url, sizeof none.url, "redis://127.0.0.1:%d", none.port);
    const char *args[] = {h_server_path(), "--port", "0", "--cluster", none.url, NULL};
    h_proc p;
    cr_assert_eq(h_spawn(&p, (char *const *)args, true), 0);
    cr_assert(h_proc_wait(&p, H_WAIT_MS), "the server did not exit");
    cr_expect(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 1, "status 0x%x", p.status);
    char err[1024];
    h_read_all(&p.err, err, sizeof err, H_WAIT_MS);
    cr_expect(strstr(err, "cannot reach the cluster's Redis") != NULL, "stderr: %s", err);
    h_proc_close(&p);

    /* --cluster-optional: it runs, says why, and serves its own clients. */
    h_server a;
    node_start(&a, &none, "a", true);
    h_proc c1, c2;
    char n1[32], n2[32], want[128];
    cr_assert(h_chat_connect(&a, &c1, 1, n1, sizeof n1));
    cr_assert(h_wait_line(&c1.out, "The cluster is unreachable", NULL, NULL, 0, H_WAIT_MS));
    cr_assert(h_chat_connect(&a, &c2, 2, n2, sizeof n2));
    cr_assert(h_wait_line(&c2.out, "The cluster is unreachable", NULL, NULL, 0, H_WAIT_MS));
    cr_assert(h_send(&c1, "alone\n"));
    snprintf(want, sizeof want, "[local] <%s> alone\r\n", n1);
    cr_assert(h_wait_line(&c2.out, want, NULL, NULL, 0, H_WAIT_MS), "no local delivery");
    h_close_all((h_proc *const[]){&c1, &c2}, 2);
    h_server_stop(&a);
}

/* Redis stops answering (SIGSTOP): once 10,000 lines wait for its answer, senders are
 * told their lines were not sent, nobody else waits, and all flows again after SIGCONT. */
Test(cluster, slow_redis_is_bounded)
{
    redis r;
    redis_start(&r, 0);
    h_server a;
    cr_assert(h_server_start(&a, "--cluster", r.url, "--flood", "0", NULL));
    cr_assert(h_wait_line(&a.proc.err, "cluster: connected to Redis", NULL, NULL, 0, H_WAIT_MS));
    h_proc p, q;
    char pn[32], qn[32], line[256];
    cr_assert(h_chat_connect(&a, &p, 1, pn, sizeof pn));
    cr_assert(h_chat_connect(&a, &q, 2, qn, sizeof qn));
    cr_assert_eq(kill(r.proc.pid, SIGSTOP), 0);
    enum { LINES = 12000 };
    char *burst = malloc(LINES * 16);
    cr_assert_not_null(burst);
    size_t len = 0;
    for (int i = 0; i < LINES; i++)
        len += (size_t)sprintf(burst + len, "line %d\n", i);
    cr_assert(h_write(p.in, burst, len));
    free(burst);
    cr_assert(h_wait_line(&p.out, "the cluster is too slow right now", NULL, NULL, 0, H_WAIT_MS),
              "no sender was told");
    /* The other client is not held up: the server answers it at once. */
    cr_assert(h_send(&q, "/rooms\n"));
    cr_assert(h_wait_line(&q.out, "room", NULL, NULL, 0, H_WAIT_MS), "the server stalled");
    cr_assert_eq(kill(r.proc.pid, SIGCONT), 0);
    snprintf(line, sizeof line, "<%s> line 0\r\n", pn);
    cr_assert(h_wait_line(&q.out, line, NULL, NULL, 0, H_WAIT_MS), "nothing came after SIGCONT");
    h_close_all((h_proc *const[]){&p, &q}, 2);
    h_server_stop(&a);
    redis_stop(&r);
}

/* Joins, renames and departures on one node are told to the room on the other. */
Test(cluster, notices_cross_nodes)
{
    redis r;
    redis_start(&r, 0);
    h_server a, b;
    node_start(&a, &r, "a", false);
    node_start(&b, &r, "b", false);
    h_proc p, q;
    char pn[32], qn[32], want[128];
    cr_assert(h_chat_connect(&a, &p, 1, pn, sizeof pn));
    cr_assert(h_chat_connect(&b, &q, 1, qn, sizeof qn));
    snprintf(want, sizeof want, "*** %s has joined lobby.", qn);
    cr_assert(h_wait_line(&p.out, want, NULL, NULL, 0, H_WAIT_MS), "no join notice across");
    cr_assert(h_send(&q, "/nick quentin\n"));
    snprintf(want, sizeof want, "*** %s is now known as quentin.", qn);
    cr_assert(h_wait_line(&p.out, want, NULL, NULL, 0, H_WAIT_MS), "no rename notice across");
    cr_assert(h_send(&q, "/quit bye\n"));
    cr_assert(h_wait_line(&p.out, "*** quentin has left (quit: bye).", NULL, NULL, 0, H_WAIT_MS),
              "no leave notice across");
    h_close_all((h_proc *const[]){&p, &q}, 2);
    h_server_stop(&a);
    h_server_stop(&b);
    redis_stop(&r);
}
