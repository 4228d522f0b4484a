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
    /* DEBUG SLEEP makes it slow on demand (loopback only). */
    char *argv[] = {"redis-server", "--port", ps, "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--enable-debug-command", "yes", NULL};
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

/* Starts a node (called name in the messages) with "--cluster" r's URL and the extra
 * arguments (NULL-terminated), and waits until it has connected to Redis, which an
 * optional node need not. */
static void node_start_with(h_server *s, const redis *r, const char *name, bool optional,
                            const char *const extra[])
{
    const char *args[16] = {"--port", "0", "--cluster", r->url};
    int n = 4;
    for (int i = 0; extra[i] && n < 15; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    cr_assert(h_server_start_argv(s, args), "node %s did not start", name);
    cr_assert(h_wait_line(&s->proc.err, "cluster: connected to Redis", NULL, NULL, 0, H_WAIT_MS) ||
                  optional,
              "node %s never connected to Redis", name);
}

/* A node named name (--node-name), with --cluster-optional when optional. */
static void node_start(h_server *s, const redis *r, const char *name, bool optional)
{
    node_start_with(s, r, name, optional,
                    (const char *const[]){"--node-name", name,
                                          optional ? "--cluster-optional" : NULL, NULL});
}

/* A Redis on a free port and two nodes on it, "a" and "b". */
static void cluster_start(redis *r, h_server *a, h_server *b)
{
    redis_start(r, 0);
    node_start(a, r, "a", false);
    node_start(b, r, "b", false);
}

/* Stops the two nodes (h_server_stop's checks), then Redis. */
static void cluster_stop(redis *r, h_server *a, h_server *b)
{
    h_server_stop(a);
    h_server_stop(b);
    redis_stop(r);
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
    h_server a, b;
    cluster_start(&r, &a, &b);
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
    cluster_stop(&r, &a, &b);
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
    node_start_with(&a, &r, "a", false, (const char *const[]){"--flood", "0", NULL});
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
    h_server a, b;
    cluster_start(&r, &a, &b);
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
    cluster_stop(&r, &a, &b);
}

/* Starts a node that drops a crashed peer's users after ttl seconds. */
static void node_start_ttl(h_server *s, const redis *r, const char *name, const char *ttl)
{
    node_start_with(s, r, name, false,
                    (const char *const[]){"--node-name", name, "--cluster-ttl", ttl, NULL});
}

/* Sends a command and returns (in out) the first answer line starting with prefix. */
static void ask(h_proc *p, const char *cmd, const char *prefix, char *out, size_t cap)
{
    cr_assert(h_send(p, cmd));
    cr_assert(h_wait_line(&p->out, prefix, NULL, out, cap, H_WAIT_MS), "no answer to %s", cmd);
}

/* Sends /nick name and returns its answer (skipping notices such as "name has left"). */
static void nick_answer(h_proc *p, const char *name, char *out, size_t cap)
{
    char cmd[64];
    snprintf(cmd, sizeof cmd, "/nick %s\n", name);
    cr_assert(h_send(p, cmd));
    for (;;) {
        cr_assert(h_read_line(&p->out, out, cap, H_WAIT_MS) > 0, "no answer to %s", cmd);
        if (strncmp(out, "*** Error", 9) == 0 || strncmp(out, "*** You are", 11) == 0)
            return;
    }
}

/* Asks p for /nick name until the answer is not "taken", for up to H_WAIT_MS. Returns
 * whether the name was free in time; line holds the last answer. */
static bool wait_nick_free(h_proc *p, const char *name, char *line, size_t cap)
{
    bool taken = true;
    for (long long end = h_now_ms() + H_WAIT_MS; taken && h_now_ms() < end;) {
        nick_answer(p, name, line, cap);
        taken = strstr(line, "taken") != NULL;
        if (taken)
            usleep(100000);
    }
    return !taken;
}

/* Guest names and chosen names are unique in the whole cluster, whatever the case. */
Test(cluster, names_unique_across_nodes)
{
    redis r;
    h_server a, b;
    cluster_start(&r, &a, &b);
    enum { EACH = 4 };
    h_proc c[2 * EACH];
    char names[2 * EACH][32], line[256];
    for (int i = 0; i < 2 * EACH; i++) /* alternating nodes, so both give guest names */
        cr_assert(h_chat_connect(i % 2 ? &b : &a, &c[i], i / 2 + 1, names[i], sizeof names[i]));
    for (int i = 0; i < 2 * EACH; i++)
        for (int j = 0; j < i; j++)
            cr_expect_str_neq(names[i], names[j], "two clients got the guest name %s", names[i]);

    ask(&c[0], "/nick Ana\n", "*** You are now known as", line, sizeof line);
    ask(&c[1], "/nick ana\n", "*** Error: the nickname ana is taken", line, sizeof line);
    ask(&c[3], "/nick ANA\n", "*** Error: the nickname ANA is taken", line, sizeof line);
    /* Freed by a rename, it can be taken on the other node. */
    ask(&c[0], "/nick ana2\n", "*** You are now known as ana2", line, sizeof line);
    ask(&c[1], "/nick ana\n", "*** You are now known as ana.", line, sizeof line);
    /* Freed by leaving, too. */
    ask(&c[2], "/nick zed\n", "*** You are now known as zed.", line, sizeof line);
    cr_assert(h_send(&c[2], "/quit\n"));
    cr_assert(h_wait_line(&c[2].out, "*** Bye.", NULL, NULL, 0, H_WAIT_MS));
    cr_expect(wait_nick_free(&c[3], "zed", line, sizeof line), "zed was never freed: %s", line);
    for (int i = 0; i < 2 * EACH; i++)
        h_proc_close(&c[i]);
    cluster_stop(&r, &a, &b);
}

/* /who and /rooms list every node's users; /msg reaches a user on another node. */
Test(cluster, who_rooms_and_msg_across_nodes)
{
    redis r;
    h_server a, b;
    cluster_start(&r, &a, &b);
    h_proc ana, bob, cy;
    char line[512];
    client(&a, &ana, 1, "ana");
    client(&b, &bob, 1, "bob");
    client(&b, &cy, 2, "cy");
    ask(&cy, "/join kitchen\n", "*** You are in kitchen", line, sizeof line);
    ask(&ana, "/who\n", "*** 2 users in lobby", line, sizeof line);
    cr_expect_str_eq(line, "*** 2 users in lobby: ana, bob\r\n");
    ask(&bob, "/who\n", "*** 2 users in lobby", line, sizeof line);
    cr_expect_str_eq(line, "*** 2 users in lobby: ana, bob\r\n");
    ask(&ana, "/rooms\n", "*** 2 rooms", line, sizeof line);
    cr_expect_str_eq(line, "*** 2 rooms: kitchen (1), lobby (2)\r\n");

    ask(&ana, "/msg CY psst\n", "[PM to", line, sizeof line);
    cr_expect_str_eq(line, "[PM to cy] psst\r\n");
    cr_assert(h_wait_line(&cy.out, "[PM from ana] psst", NULL, NULL, 0, H_WAIT_MS),
              "the private message did not cross");
    ask(&cy, "/msg ana back at you\n", "[PM to", line, sizeof line);
    cr_assert(h_wait_line(&ana.out, "[PM from cy] back at you", NULL, NULL, 0, H_WAIT_MS));
    ask(&ana, "/msg nobody hello\n", "*** Error", line, sizeof line);
    cr_expect_str_eq(line, "*** Error: no user named nobody.\r\n");
    /* Lines after a question keep their place: said after the /who, seen after it. */
    cr_assert(h_send(&bob, "/who\nafter who\n"));
    cr_assert(h_wait_line(&bob.out, "*** 2 users in lobby", NULL, NULL, 0, H_WAIT_MS));
    cr_assert(h_wait_line(&ana.out, "<bob> after who", NULL, NULL, 0, H_WAIT_MS));
    h_close_all((h_proc *const[]){&ana, &bob, &cy}, 3);
    cluster_stop(&r, &a, &b);
}

/* Whether /who on p lists name. */
static bool listed(h_proc *p, const char *name)
{
    char line[512], want[40];
    ask(p, "/who\n", " in lobby", line, sizeof line);
    snprintf(want, sizeof want, " %s", name);
    return strstr(line, want) != NULL;
}

/* listed(), also noting whether a line holding notice came before the answer. */
static bool listed_seeing(h_proc *p, const char *name, const char *notice, bool *seen)
{
    char line[512], want[40];
    cr_assert(h_send(p, "/who\n"));
    for (;;) {
        cr_assert(h_read_line(&p->out, line, sizeof line, H_WAIT_MS) > 0, "no answer to /who");
        if (strstr(line, notice))
            *seen = true;
        if (strstr(line, " in lobby"))
            break;
    }
    snprintf(want, sizeof want, " %s", name);
    return strstr(line, want) != NULL;
}

/* A node killed with SIGKILL: its users leave the cluster's lists and names after the
 * TTL, and another node tells their rooms; a node stopped with SIGTERM takes its users
 * out at once, and tells their rooms itself. */
Test(cluster, crashed_node_users_vanish_after_ttl)
{
    redis r;
    redis_start(&r, 0);
    h_server a, b, c;
    node_start_ttl(&a, &r, "a", "3");
    node_start_ttl(&b, &r, "b", "3");
    node_start_ttl(&c, &r, "c", "3");
    h_proc ana, carol, dan;
    char line[512];
    client(&a, &ana, 1, "ana");
    client(&b, &carol, 1, "carol");
    client(&c, &dan, 1, "dan");
    cr_assert(listed(&ana, "carol"));
    cr_assert(listed(&ana, "dan"));

    cr_assert_eq(kill(b.proc.pid, SIGKILL), 0);
    long long killed = h_now_ms();
    bool there = true, told = false;
    static const char lost[] = "*** carol has left (server lost).";
    while (there && h_now_ms() - killed < 10000) {
        there = listed_seeing(&ana, "carol", lost, &told);
        if (there)
            usleep(200000);
    }
    long long gone_ms = h_now_ms() - killed;
    cr_expect(!there, "carol was still listed 10 s after her node crashed");
    cr_expect(gone_ms >= 1000, "carol vanished after %lld ms, before the TTL of 3 s", gone_ms);
    /* A surviving node's heartbeat tells her room (within a beat of the TTL). */
    cr_assert(told || h_wait_line(&ana.out, lost, NULL, NULL, 0, H_WAIT_MS),
              "no leave notice for the crashed node's user");
    ask(&ana, "/msg carol hello\n", "*** Error", line, sizeof line);
    cr_expect_str_eq(line, "*** Error: no user named carol.\r\n");
    /* The name expires with the list (within the few milliseconds between them). */
    wait_nick_free(&ana, "carol", line, sizeof line);
    cr_expect_str_eq(line, "*** You are now known as carol.\r\n");

    h_server_stop(&c); /* SIGTERM: dan leaves the lists at once, and says so */
    cr_assert(h_wait_line(&ana.out, "*** dan has left (server shutting down).", NULL, NULL, 0,
                          H_WAIT_MS), "no leave notice for the stopped node's user");
    cr_expect(!listed(&ana, "dan"), "dan still listed after his node stopped");
    h_close_all((h_proc *const[]){&ana, &carol, &dan}, 3);
    h_proc_close(&b.proc);
    h_server_stop(&a);
    redis_stop(&r);
}

/* Redis restarts empty: each server writes its users' names and rooms again, so a name
 * stays taken and /who still lists everyone; while Redis is away, /who says it answers for
 * this server only. */
Test(cluster, names_written_again_after_redis_restart)
{
    redis r;
    h_server a, b;
    cluster_start(&r, &a, &b);
    h_proc ana, bob;
    char line[512];
    client(&a, &ana, 1, "ana");
    client(&b, &bob, 1, "bob");
    int port = r.port;
    redis_stop(&r);
    cr_assert(h_wait_line(&ana.out, "The cluster is unreachable", NULL, NULL, 0, H_WAIT_MS));
    ask(&ana, "/who\n", " in lobby", line, sizeof line);
    cr_expect_str_eq(line, "*** 1 user in lobby (this server only: the cluster is not "
                           "answering): ana\r\n");
    redis_start(&r, port); /* empty: no persistence */
    cr_assert(h_wait_line(&ana.out, "The cluster is back", NULL, NULL, 0, 2 * H_WAIT_MS));
    cr_assert(h_wait_line(&bob.out, "The cluster is back", NULL, NULL, 0, 2 * H_WAIT_MS));
    ask(&bob, "/nick ana\n", "*** Error", line, sizeof line);
    cr_expect_str_eq(line, "*** Error: the nickname ana is taken (on another server).\r\n");
    ask(&ana, "/who\n", " in lobby", line, sizeof line);
    cr_expect_str_eq(line, "*** 2 users in lobby: ana, bob\r\n");
    h_close_all((h_proc *const[]){&ana, &bob}, 2);
    cluster_stop(&r, &a, &b);
}

/* Makes Redis sleep for ms milliseconds (it answers nobody meanwhile); returns the
 * connection, to close once Redis is awake again. */
static void redis_sleep(const redis *r, h_proc *c, int ms)
{
    char cmd[64];
    cr_assert(h_tcp_connect(c, "127.0.0.1", r->port));
    snprintf(cmd, sizeof cmd, "DEBUG SLEEP %d.%03d\r\n", ms / 1000, ms % 1000);
    cr_assert(h_send(c, cmd));
    usleep(100000); /* Redis has taken it */
}

/* A client whose connection breaks while its rename waits for Redis (the server finds
 * out by writing to it): nobody reaches anyone under the name it asked for, and the name
 * is free again once Redis has answered. */
Test(cluster, connection_lost_during_a_rename)
{
    redis r;
    redis_start(&r, 0);
    h_server a;
    node_start(&a, &r, "a", false);
    h_proc ana, bob, slow;
    char line[512];
    client(&a, &ana, 1, "ana");
    client(&a, &bob, 2, "bob");
    redis_sleep(&r, &slow, 1500);
    cr_assert(h_send(&ana, "/nick zoe\n"));
    usleep(100000);
    h_tcp_reset(&ana); /* gone while the claim waits */
    /* A private message makes the server write to ana at once (a line to the room would
     * wait for Redis too) and find the reset. */
    cr_assert(h_send(&bob, "/msg ana still there?\n"));
    cr_assert(h_wait_line(&bob.out, " has left", NULL, line, sizeof line, H_WAIT_MS));
    cr_expect_str_eq(line, "*** ana has left (connection reset).\r\n");
    ask(&bob, "/msg zoe are you there?\n", "zoe", line, sizeof line);
    cr_expect_str_eq(line, "*** Error: no user named zoe.\r\n");
    h_proc_close(&slow);
    cr_expect(wait_nick_free(&bob, "zoe", line, sizeof line), "zoe stayed taken after ana left: %s",
              line);
    h_proc_close(&bob);
    h_server_stop(&a);
    redis_stop(&r);
}

/* Redis slower than the 2 s a question may wait: /nick says so and keeps the old name;
 * when the late claim lands, the server gives the new name back and writes its names
 * anew, so the other server sees the right name and may take the other one. */
Test(cluster, rename_when_redis_is_too_slow)
{
    redis r;
    redis_start(&r, 0);
    h_server a, b;
    node_start_ttl(&a, &r, "a", "3");
    node_start_ttl(&b, &r, "b", "3");
    h_proc ana, bob, slow;
    char line[512];
    client(&a, &ana, 1, "ana");
    client(&b, &bob, 1, "bob");
    redis_sleep(&r, &slow, 3000);
    ask(&ana, "/nick carl\n", "*** Error", line, sizeof line);
    cr_expect_str_eq(line, "*** Error: the cluster did not answer in time; you are still "
                           "ana.\r\n");
    h_proc_close(&slow);
    /* After the late claim and the next beat (a second with a TTL of 3 s). */
    bool ok = false;
    for (long long end = h_now_ms() + H_WAIT_MS; !ok && h_now_ms() < end;) {
        ask(&bob, "/who\n", " in lobby", line, sizeof line);
        ok = strcmp(line, "*** 2 users in lobby: ana, bob\r\n") == 0;
        if (!ok)
            usleep(200000);
    }
    cr_expect(ok, "the other server's list: %s", line);
    ask(&bob, "/nick carl\n", "*** You", line, sizeof line);
    cr_expect_str_eq(line, "*** You are now known as carl.\r\n");
    ask(&bob, "/nick ana\n", "*** Error", line, sizeof line);
    cr_expect_str_eq(line, "*** Error: the nickname ana is taken (on another server).\r\n");
    h_close_all((h_proc *const[]){&ana, &bob}, 2);
    cluster_stop(&r, &a, &b);
}

/* Commands that ask Redis keep to the flood limit like any other line. */
Test(cluster, questions_keep_to_the_flood_limit)
{
    redis r;
    redis_start(&r, 0);
    h_server a;
    node_start_with(&a, &r, "a", false, (const char *const[]){"--flood", "2:2", NULL});
    h_proc p;
    char name[32], line[512];
    cr_assert(h_chat_connect(&a, &p, 1, name, sizeof name));
    char burst[30 * 6];
    size_t len = 0;
    for (int i = 0; i < 30; i++)
        len += (size_t)snprintf(burst + len, sizeof burst - len, "/who\n");
    cr_assert(h_write(p.in, burst, len));
    long long start = h_now_ms();
    int answers = 0;
    while (h_now_ms() - start < 2000) {
        ssize_t n = h_read_line(&p.out, line, sizeof line, 100);
        if (n > 0 && strstr(line, " in lobby: "))
            answers++;
    }
    /* 2 at once and 2 a second: about 6 in 2 s, never all 30. */
    cr_expect(answers >= 2 && answers <= 8, "%d answers to /who in 2 s with --flood 2:2",
              answers);
    h_proc_close(&p);
    h_server_stop(&a);
    redis_stop(&r);
}
