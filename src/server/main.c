/*
 * st_proactor: start-up (options, descriptor limit, signals), the listening
 * socket and the banner, then the loop until SIGINT or SIGTERM, and a
 * shutdown that lets clients take what is queued for them.  The chat itself
 * is the core's (chat.h), between its doors (door.h) and its bus (bus.h).
 */
#include "config.h"
#include "log.h"
#include "bus_redis.h"
#include "chat.h"
#include "door_stream.h"

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

/* SIGINT and SIGTERM are blocked in every thread and taken here with
 * sigwait(), so stopping never depends on which thread a signal lands on
 * or on what a signal handler may call. */
static pthread_mutex_t loop_lock = PTHREAD_MUTEX_INITIALIZER; /* guards the_loop */
static bool signal_thread_quit; /* under loop_lock */

static void *signal_thread(void *arg)
{
    sigset_t *set = arg;
    for (;;) {
        int sig;
        if (sigwait(set, &sig) != 0)
            continue;
        pthread_mutex_lock(&loop_lock);
        bool quit = signal_thread_quit;
        if (the_loop)
            px_loop_stop(the_loop);
        pthread_mutex_unlock(&loop_lock);
        if (quit)
            return NULL;
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

int main(int argc, char **argv)
{
    srv_config cfg;
    switch (srv_config_parse(argc, argv, &cfg, stdout, stderr)) {
    case SRV_PARSE_RUN:
        break;
    case SRV_PARSE_EXIT:
        return 0;
    case SRV_PARSE_ERROR:
        return 2;
    }
    srv_log_set_level(cfg.quiet ? SRV_LOG_ERROR : cfg.verbose ? SRV_LOG_DEBUG : SRV_LOG_INFO);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    /* Before any thread exists, so that every thread inherits the mask. */
    static sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    int rc = px_loop_create(&the_loop, &(px_loop_opts){
                                           .backend = cfg.backend,
                                           .executor = cfg.dispatch,
                                           .threads = cfg.threads,
                                       });
    if (rc) {
        char why[200] = "";
        if (rc == -ENOTSUP && px_backend_probe(cfg.backend, why, sizeof(why)) != 0)
            fprintf(stderr, "st_proactor: backend %s is not available here: %s\n",
                    px_backend_name(cfg.backend), why);
        else if (rc == -ENOTSUP)
            fprintf(stderr, "st_proactor: backend %s is not available here\n",
                    px_backend_name(cfg.backend));
        else
            fprintf(stderr, "st_proactor: cannot start: %s\n", px_strerror(rc));
        return rc == -ENOTSUP ? 2 : 1;
    }
    srv_log(SRV_LOG_INFO, "backend %s; dispatch %s, %u worker threads",
            px_loop_backend_note(the_loop), px_executor_name(px_loop_executor(the_loop)),
            px_loop_threads(the_loop));

    px_listener *listener;
    const chat_bus *bus = &chat_bus_local;
    if (cfg.cluster) {
        char why[256];
        if (chat_bus_redis_probe(&cfg, why, sizeof(why)) != 0) {
            char shown[SRV_SHOWN_MAX];
            if (!cfg.cluster_optional) {
                fprintf(stderr, "st_proactor: cannot reach the cluster's Redis at %s: %s "
                                "(--cluster-optional starts anyway)\n",
                        srv_shown(cfg.cluster, shown), why);
                px_loop_destroy(the_loop);
                return 1;
            }
            srv_log(SRV_LOG_ERROR, "cluster: Redis at %s unreachable (%s): running alone "
                    "until it answers", srv_shown(cfg.cluster, shown), why);
        }
        if (!(bus = chat_bus_redis_start(&cfg, the_loop))) {
            fprintf(stderr, "st_proactor: cannot start: out of memory\n");
            px_loop_destroy(the_loop);
            return 1;
        }
    }
    if (chat_init(&cfg, the_loop, bus) != 0) {
        fprintf(stderr, "st_proactor: cannot start: out of memory\n");
        bus->stop();
        px_loop_destroy(the_loop);
        chat_fini();
        return 1;
    }
    static const char busy[] = "*** Server busy, try again later.\r\n";
    rc = px_listen(the_loop, &listener,
                   &(px_listen_opts){
                       .host = cfg.bind,
                       .port = (uint16_t)cfg.port,
                       .handlers = chat_stream_handlers,
                       .user = (void *)(cfg.raw ? &chat_door_raw : &chat_door_telnet),
                       .stream_opts = {.sendq_bytes = cfg.sendq},
                       .keepalive_s = cfg.keepalive,
                       .busy_msg = cfg.raw ? NULL : busy,
                       .busy_len = cfg.raw ? 0 : sizeof(busy) - 1,
                       .on_accept_error = on_accept_error,
                   });
    if (rc) {
        bool bad_bind = cfg.bind && (rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT);
        char shown[SRV_SHOWN_MAX];
        if (bad_bind)
            fprintf(stderr, "st_proactor: invalid --bind '%s' (not an address of this machine)\n",
                    srv_shown(cfg.bind, shown));
        else
            fprintf(stderr, "st_proactor: cannot listen on port %u: %s\n", cfg.port,
                    rc == -EADDRINUSE ? "address already in use" : px_strerror(rc));
        bus->stop();
        px_loop_destroy(the_loop);
        chat_fini();
        return bad_bind ? 2 : 1;
    }

    pthread_t sig_thread;
    rc = pthread_create(&sig_thread, NULL, signal_thread, &stop_signals);
    if (rc) {
        fprintf(stderr, "st_proactor: cannot start: %s\n", px_strerror(-rc));
        bus->stop();
        px_loop_destroy(the_loop);
        chat_fini();
        return 1;
    }

    printf("Listening on port: [%u] ...\n", (unsigned)px_listener_port(listener));
    fflush(stdout);

    px_loop_run(the_loop);
    px_listener_close(listener);
    srv_log(SRV_LOG_INFO, "shutting down (%u clients connected)", chat_online());
    if (chat_shutdown(the_loop) > 0) {
        /* Let queued lines reach their readers, for a bounded time: the loop
         * stops when the last client has gone, or when this timer fires. */
        px_timer *deadline;
        if (px_timer_start(the_loop, &deadline, cfg.shutdown_wait, 0, stop_loop, the_loop) == 0) {
            px_loop_run(the_loop);
            px_timer_cancel(deadline);
        }
    }
    bus->stop();
    destroy_loop();
    stop_signal_thread(sig_thread);
    chat_fini();
    return 0;
}
