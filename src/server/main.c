/*
 * st_proactor: start-up (options, descriptor limit, signals), the listening
 * socket and the banner, then the loop until SIGINT or SIGTERM, and a
 * shutdown that lets clients take what is queued for them.  Start-up goes a
 * stage at a time, and one teardown undoes exactly the stages reached, on
 * every path.  The chat itself is the core's (chat.h), between its doors
 * (door.h) and its bus (bus.h).
 */
#include "config.h"
#include "log.h"
#include "bus_redis.h"
#include "chat.h"
#include "door_stream.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>


static px_loop *the_loop;

static void stop_loop(px_timer *t, void *loop)
{
    (void)t;
    px_loop_stop(loop);
}

/* The signals the server handles are blocked in every thread and taken here with
 * sigwait(), so that what they do never depends on which thread a signal lands on or
 * on what a signal handler may call.  SIGINT, SIGTERM and SIGQUIT stop the server
 * gracefully; SIGHUP (a closed terminal, or an operator's "reload") and SIGUSR2 are
 * logged and ignored, never fatal; SIGUSR1 logs a status line. */
static pthread_mutex_t loop_lock = PTHREAD_MUTEX_INITIALIZER; /* guards the_loop */
static bool signal_thread_quit; /* under loop_lock */

static const int handled_signals[] = {SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2};

/* True when sig stops the server; else it is logged here. */
static bool signal_stops(int sig)
{
    unsigned sessions, names, rooms;
    switch (sig) {
    case SIGHUP:
        srv_log(SRV_LOG_INFO, "SIGHUP: nothing to reload; ignored (SIGTERM stops the server)");
        return false;
    case SIGUSR1:
        chat_census(&sessions, &names, &rooms);
        srv_log(SRV_LOG_INFO, "status: %u online, %u connections, %u rooms", chat_online(),
                sessions, rooms);
        return false;
    case SIGUSR2:
        srv_log(SRV_LOG_INFO, "SIGUSR2: ignored");
        return false;
    default:
        return true;
    }
}

static void *signal_thread(void *arg)
{
    sigset_t *set = arg;
    for (;;) {
        int sig;
        if (sigwait(set, &sig) != 0)
            continue;
        pthread_mutex_lock(&loop_lock);
        bool quit = signal_thread_quit;
        pthread_mutex_unlock(&loop_lock);
        if (quit)
            return NULL;
        if (!signal_stops(sig))
            continue;
        pthread_mutex_lock(&loop_lock);
        if (the_loop)
            px_loop_stop(the_loop);
        pthread_mutex_unlock(&loop_lock);
    }
}

/* Ends the signal thread (it exits at the next signal it takes) and joins it. */
static void stop_signal_thread(pthread_t t)
{
    pthread_mutex_lock(&loop_lock);
    signal_thread_quit = true;
    pthread_mutex_unlock(&loop_lock);
    pthread_kill(t, SIGTERM);
    pthread_join(t, NULL);
}

/* Destroys the loop once the signal thread can no longer reach it. */
static void destroy_loop(void)
{
    pthread_mutex_lock(&loop_lock);
    px_loop *loop = the_loop;
    the_loop = NULL;
    pthread_mutex_unlock(&loop_lock);
    px_loop_destroy(loop);
}

/* Connections are limited by the machine, not by a default soft limit. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            srv_log(SRV_LOG_DEBUG, "could not raise the descriptor limit");
    }
}

static void on_accept_error(px_listener *l, int err, void *user)
{
    (void)l;
    (void)user;
    static _Atomic unsigned long count;
    /* Once, then every thousandth: a storm must not flood the log. */
    if (count++ % 1000 == 0)
        srv_log(SRV_LOG_ERROR, "accept failed: %s%s", px_strerror(err),
                err == -EMFILE || err == -ENFILE ? " (out of descriptors: new clients are refused)"
                                                 : "");
}

/* How far start-up got: each stage is everything before it and one step more, and
 * srv_teardown undoes exactly the steps a stage includes. */
typedef enum srv_stage {
    SRV_STAGE_NONE,      /* nothing to undo */
    SRV_STAGE_LOOP,      /* the loop exists */
    SRV_STAGE_BUS,       /* and the bus is started (the Redis bus with --cluster) */
    SRV_STAGE_CHAT,      /* and chat_init has succeeded */
    SRV_STAGE_LISTENING, /* and the listener is open */
    SRV_STAGE_RUNNING,   /* and the signal thread runs */
} srv_stage;

typedef struct srv_server {
    srv_config cfg;
    sigset_t signals; /* handled_signals: blocked everywhere, taken by the signal thread */
    srv_stage stage;
    const chat_bus *bus;
    px_listener *listener; /* NULL once closed */
    pthread_t signal_thread;
} srv_server;

/* 0, or the exit code once the reason is printed. */
static int start_loop(const srv_config *cfg)
{
    int rc = px_loop_create(&the_loop, &(px_loop_opts){
                                           .backend = cfg->backend,
                                           .executor = cfg->dispatch,
                                           .threads = cfg->threads,
                                       });
    if (rc) {
        char why[200] = "";
        if (rc == -ENOTSUP && px_backend_probe(cfg->backend, why, sizeof(why)) != 0)
            fprintf(stderr, "st_proactor: backend %s is not available here: %s\n",
                    px_backend_name(cfg->backend), why);
        else if (rc == -ENOTSUP)
            fprintf(stderr, "st_proactor: backend %s is not available here\n",
                    px_backend_name(cfg->backend));
        else
            fprintf(stderr, "st_proactor: cannot start: %s\n", px_strerror(rc));
        return rc == -ENOTSUP ? 2 : 1;
    }
    srv_log(SRV_LOG_INFO, "backend %s; dispatch %s, %u worker threads",
            px_loop_backend_note(the_loop), px_executor_name(px_loop_executor(the_loop)),
            px_loop_threads(the_loop));
    return 0;
}

/* With --cluster: Redis must answer now, unless --cluster-optional.  0, or the exit
 * code once the reason is printed. */
static int start_cluster(srv_server *s)
{
    const srv_config *cfg = &s->cfg;
    char why[256];
    if (chat_bus_redis_probe(cfg, why, sizeof(why)) != 0) {
        char shown[SRV_SHOWN_MAX];
        if (!cfg->cluster_optional) {
            fprintf(stderr, "st_proactor: cannot reach the cluster's Redis at %s: %s "
                            "(--cluster-optional starts anyway)\n",
                    srv_shown(cfg->cluster, shown), why);
            return 1;
        }
        srv_log(SRV_LOG_ERROR, "cluster: Redis at %s unreachable (%s): running alone "
                "until it answers", srv_shown(cfg->cluster, shown), why);
    }
    if (!(s->bus = chat_bus_redis_start(cfg, the_loop))) {
        fprintf(stderr, "st_proactor: cannot start: out of memory\n");
        return 1;
    }
    return 0;
}

/* Whether ADDR (--bind) keeps the server on this machine. */
static bool loopback_only(const char *addr)
{
    unsigned char a[16];
    if (!addr)
        return false;
    if (strcmp(addr, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, addr, a) == 1)
        return a[0] == 127;
    if (inet_pton(AF_INET6, addr, a) != 1)
        return false;
    static const unsigned char mapped[12] = {[10] = 0xff, [11] = 0xff};
    bool v4 = memcmp(a, mapped, 12) == 0;
    return v4 ? a[12] == 127 : memcmp(a, &in6addr_loopback, 16) == 0;
}

/* --raw relays whatever its clients send, terminal escapes and telnet commands
 * included, between people without names: fine on a trusted network, not in public. */
static void warn_raw(const srv_config *cfg)
{
    char shown[SRV_SHOWN_MAX];
    if (cfg->raw && !loopback_only(cfg->bind))
        srv_log(SRV_LOG_WARN, "--raw relays every byte unchanged (terminal escapes, telnet "
                "commands) between clients without names, for trusted networks only, and "
                "listens on %s; --bind 127.0.0.1 keeps it on this machine",
                cfg->bind ? srv_shown(cfg->bind, shown) : "every address");
}

/* 0, or the exit code once the reason is printed. */
static int start_listening(srv_server *s)
{
    static const char busy[] = "*** Server busy, try again later.\r\n";
    const srv_config *cfg = &s->cfg;
    int rc = px_listen(the_loop, &s->listener,
                       &(px_listen_opts){
                           .host = cfg->bind,
                           .port = (uint16_t)cfg->port,
                           .handlers = (cfg->raw ? &chat_door_raw : &chat_door_telnet)->handlers,
                           .stream_opts = {.sendq_bytes = cfg->sendq},
                           .keepalive_s = cfg->keepalive,
                           .busy_msg = cfg->raw ? NULL : busy,
                           .busy_len = cfg->raw ? 0 : sizeof(busy) - 1,
                           .on_accept_error = on_accept_error,
                       });
    if (rc) {
        /* bind(2) says EINVAL for an address no socket here can take, such as a
         * link-local one without its interface (fe80::1). */
        bool bad_bind = cfg->bind && (rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT ||
                                      rc == -EINVAL);
        char shown[SRV_SHOWN_MAX];
        if (bad_bind)
            fprintf(stderr, "st_proactor: invalid --bind '%s' (not an address of this machine)\n",
                    srv_shown(cfg->bind, shown));
        else
            fprintf(stderr, "st_proactor: cannot listen on port %u: %s\n", cfg->port,
                    rc == -EADDRINUSE ? "address already in use" : px_strerror(rc));
        return bad_bind ? 2 : 1;
    }
    warn_raw(cfg);
    return 0;
}

/* Sets the server up a step at a time, raising s->stage after each step that
 * succeeds.  0, or the exit code of the step that failed, its reason printed. */
static int srv_start(srv_server *s)
{
    int code = start_loop(&s->cfg);
    if (code)
        return code;
    s->stage = SRV_STAGE_LOOP;
    s->bus = &chat_bus_local;
    if (s->cfg.cluster && (code = start_cluster(s)) != 0)
        return code;
    s->stage = SRV_STAGE_BUS;
    if (chat_init(&s->cfg, the_loop, s->bus) != 0) {
        fprintf(stderr, "st_proactor: cannot start: out of memory\n");
        return 1;
    }
    s->stage = SRV_STAGE_CHAT;
    if ((code = start_listening(s)) != 0)
        return code;
    s->stage = SRV_STAGE_LISTENING;
    int rc = pthread_create(&s->signal_thread, NULL, signal_thread, &s->signals);
    if (rc) {
        fprintf(stderr, "st_proactor: cannot start: %s\n", px_strerror(-rc));
        return 1;
    }
    s->stage = SRV_STAGE_RUNNING;
    return 0;
}

/* The banner, the loop until SIGINT or SIGTERM, then a bounded drain. */
static void srv_run(srv_server *s)
{
    printf("Listening on port: [%u] ...\n", (unsigned)px_listener_port(s->listener));
    fflush(stdout);

    px_loop_run(the_loop);
    px_listener_close(s->listener);
    s->listener = NULL;
    srv_log(SRV_LOG_INFO, "shutting down (%u clients connected)", chat_online());
    if (chat_shutdown(the_loop) > 0) {
        /* Let queued lines reach their readers, for a bounded time: the loop
         * stops when the last client has gone, or when this timer fires. */
        px_timer *deadline;
        unsigned wait_ms = s->cfg.shutdown_wait;
        if (px_timer_start(the_loop, &deadline, wait_ms, 0, stop_loop, the_loop) == 0) {
            px_loop_run(the_loop);
            px_timer_cancel(deadline);
        }
    }
}

/* Undoes what start-up did, last step first, but for one swap: chat_fini comes
 * after the loop is destroyed, since destroying it closes the last sessions, whose
 * handlers still use what chat_fini frees.  Returns code. */
static int srv_teardown(srv_server *s, int code)
{
    if (s->stage >= SRV_STAGE_RUNNING)
        stop_signal_thread(s->signal_thread);
    if (s->stage >= SRV_STAGE_LISTENING && s->listener)
        px_listener_close(s->listener);
    if (s->stage >= SRV_STAGE_BUS)
        s->bus->stop();
    if (s->stage >= SRV_STAGE_LOOP)
        destroy_loop();
    if (s->stage >= SRV_STAGE_CHAT)
        chat_fini();
    return code;
}

int main(int argc, char **argv)
{
    static srv_server s; /* static: the signal thread reads s.signals */
    switch (srv_config_parse(argc, argv, &s.cfg, stdout, stderr)) {
    case SRV_PARSE_RUN:
        break;
    case SRV_PARSE_EXIT:
        return 0;
    case SRV_PARSE_ERROR:
        return 2;
    }
    srv_log_set_level(s.cfg.quiet ? SRV_LOG_WARN : s.cfg.verbose ? SRV_LOG_DEBUG : SRV_LOG_INFO);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    /* Before any thread exists, so that every thread inherits the mask. */
    sigemptyset(&s.signals);
    for (size_t i = 0; i < sizeof(handled_signals) / sizeof(handled_signals[0]); i++)
        sigaddset(&s.signals, handled_signals[i]);
    pthread_sigmask(SIG_BLOCK, &s.signals, NULL);

    int code = srv_start(&s);
    if (code == 0)
        srv_run(&s);
    return srv_teardown(&s, code);
}
