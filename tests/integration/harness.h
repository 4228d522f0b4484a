/* Integration-test harness: start the real st_proactor and real clients (nc, raw TCP
 * sockets), read their output line by line with deadlines, and stop them. Every wait is
 * on an event (a line, an exit, EOF) with a deadline, never a fixed sleep. Test files
 * make the assertions; the harness only reports what happened. */
#ifndef ST_IT_HARNESS_H
#define ST_IT_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Deadline for one wait (a line, an exit). Generous: a loaded 2-core box running a
 * TSan build can be slow, and a passing test never waits this long. */
#define H_WAIT_MS 10000

/* Buffered line reader over one fd (pipe or socket). A line is bytes up to and
 * including LF. */
typedef struct h_reader {
    int fd;            /* -1: nothing to read */
    bool eof;          /* read() returned 0 or an error */
    int alarms;        /* lines seen containing a sanitizer report */
    size_t len;        /* bytes buffered in buf */
    char buf[16384];   /* longer lines come back cut at this size */
} h_reader;

/* A process we started, or a raw socket client (pid 0, in == out.fd == the socket). */
typedef struct h_proc {
    pid_t pid;         /* > 0 while not reaped */
    int status;        /* wait status, valid once reaped */
    int in;            /* write end of the child's stdin (or the socket); -1 if closed */
    h_reader out;      /* child's stdout (or the socket) */
    h_reader err;      /* child's stderr; fd -1 when not piped */
} h_proc;

typedef struct h_server {
    h_proc proc;
    int port;          /* from the banner */
} h_server;

/* Milliseconds on a monotonic clock. */
long long h_now_ms(void);

/* Path of the server binary: $ST_PROACTOR, or "./st_proactor". */
const char *h_server_path(void);

/* True when env ST_TEST_SLOW=1 (sanitizer builds): tests shrink their load. */
bool h_slow(void);

/* Starts argv[0] (searched in PATH) with argv, stdin/stdout piped, stderr piped when
 * pipe_err (otherwise inherited). Returns 0 or -errno. The child dies with the test. */
int h_spawn(h_proc *p, char *const argv[], bool pipe_err);

/* Waits up to timeout_ms for p to exit (no signal sent). Returns true and fills
 * p->status when it exited; false on timeout (the process is left running). */
bool h_proc_wait(h_proc *p, int timeout_ms);

/* Sends sig, waits up to timeout_ms. If it has not exited by then, SIGKILLs and reaps it
 * and returns false. Returns true when it exited in time (status in p->status). */
bool h_proc_stop(h_proc *p, int sig, int timeout_ms);

/* Closes p's pipes or socket; kills (SIGKILL) and reaps a process still running. */
void h_proc_close(h_proc *p);
/* h_proc_close on each of n clients. */
void h_close_all(h_proc *const clients[], int n);

/* SIGKILLs and reaps every process started and not yet reaped (test clean-up; also runs
 * at exit, so a failed assertion leaves no server behind). */
void h_cleanup(void);

/* Reads one line into out (NUL-terminated, LF kept). Returns its length; 0 at EOF with
 * nothing left (a partial last line is returned without LF); -1 on timeout; -2 when the
 * line does not fit in cap (it is consumed anyway). */
ssize_t h_read_line(h_reader *r, char *out, size_t cap, int timeout_ms);

/* Reads lines until one contains needle (and, if avoid is non-NULL, does not contain
 * avoid). Copies it into out when out is non-NULL. False on timeout or EOF. */
bool h_wait_line(h_reader *r, const char *needle, const char *avoid, char *out,
                 size_t cap, int timeout_ms);

/* Reads everything up to EOF into out (NUL-terminated, truncated to cap-1). Returns the
 * byte count, or -1 on timeout. */
ssize_t h_read_all(h_reader *r, char *out, size_t cap, int timeout_ms);

/* Non-blocking: takes a complete line already buffered or readable now. Returns its
 * length, or 0 when no complete line is available yet. */
size_t h_take_line(h_reader *r, char *out, size_t cap);

/* Reads what is available now without blocking (r->fd should be O_NONBLOCK or known
 * readable). Returns false at EOF. */
bool h_fill(h_reader *r);

/* Writes all of s to fd (pipe or socket, no SIGPIPE). Returns true on success. */
bool h_write(int fd, const char *s, size_t n);
bool h_send(h_proc *p, const char *s);

/* Starts the server with "--port 0", any --backend from env ST_BACKEND, then the extra
 * arguments (NULL-terminated), and reads the banner. Returns true with s->port set;
 * false (the server stopped, its stderr echoed) if no banner came. */
bool h_server_start(h_server *s, ...) __attribute__((sentinel));
/* Same, with argv taken as is (no "--port 0"). */
bool h_server_start_argv(h_server *s, const char *const args[]);
/* The same, with the server's descriptor limit (soft and hard) set to
 * nofile; args must include the port options. */
bool h_server_start_nofile(h_server *s, int nofile, const char *const args[]);

/* Tests run under the server's dispatch modes (--dispatch pool|thread|inline). fn is a
 * function void fn(const char *dispatch) that passes "--dispatch", dispatch to
 * h_server_start; the optional arguments are Criterion test options (.timeout = 120).
 * H_DISPATCH_TEST defines the test suite::fn_MODE, running fn("MODE"), for one mode;
 * H_EACH_DISPATCH defines one for each of the three modes. The test files include
 * <criterion/criterion.h> themselves. */
#define H_DISPATCH_TEST(suite, fn, mode, ...)                                              \
    Test(suite, fn##_##mode, ##__VA_ARGS__)                                                \
    {                                                                                      \
        fn(#mode);                                                                         \
    }
#define H_EACH_DISPATCH(suite, fn, ...)                                                    \
    H_DISPATCH_TEST(suite, fn, pool, ##__VA_ARGS__)                                        \
    H_DISPATCH_TEST(suite, fn, thread, ##__VA_ARGS__)                                      \
    H_DISPATCH_TEST(suite, fn, inline, ##__VA_ARGS__)

/* Runs the server with args exactly as given (no "--port 0", no --backend) and its stdin
 * closed, for a run that ends by itself (a usage error, --help): out and err receive its
 * stdout and stderr (NUL-terminated, cut to their caps). Returns its exit status;
 * asserts (Criterion) that it started, that both streams ended and it exited within
 * H_WAIT_MS, and that no signal ended it. */
int h_server_run_to_exit(const char *const args[], char *out, size_t out_cap, char *err,
                         size_t err_cap);

/* Waits for the server's stderr line "connected ... (n online)". */
bool h_server_wait_connected(h_server *s, int n);
/* Waits for the server's stderr line "disconnected ... (n online)". */
bool h_server_wait_disconnected(h_server *s, int n);

/* SIGTERMs the server, drains its stderr; asserts (Criterion) that it exited with
 * status 0 within H_WAIT_MS and printed no sanitizer report. */
void h_server_stop(h_server *s);

/* Closes the n clients (h_close_all), then stops the server (h_server_stop). */
void h_server_stop_all(h_server *s, h_proc *const clients[], int n);

/* Asserts (Criterion) that p's next line, within H_WAIT_MS, is exactly want. */
void h_expect_line(h_proc *p, const char *want);

/* Sends line from clients[sender] and asserts that every other client's next line is
 * exactly that line. Because each client's next line is checked, a line echoed back to
 * its sender shows up as a mismatch at the sender's next expected line. */
void h_relay(h_proc *const clients[], int n, int sender, const char *line);

/* Starts "nc HOST PORT" (netcat-openbsd). Its stdin is p->in, stdout p->out. */
bool h_nc_start(h_proc *p, const char *host, int port);

/* Connects a raw TCP client to host:port (blocking socket, TCP_NODELAY). */
bool h_tcp_connect(h_proc *p, const char *host, int port);

/* Connects n clients to s on 127.0.0.1, one after another, each waited for in the
 * server's log ("(k online)" for the k-th): clients[0..n_nc) are nc processes, the rest
 * raw TCP sockets. Asserts (Criterion) each step. */
void h_connect_all(h_server *s, h_proc *const clients[], int n, int n_nc);

/* Closes a raw client with SO_LINGER 0 so the server sees a reset. */
void h_tcp_reset(h_proc *p);

/* Binds a listening socket (port 0 = any) on the wildcard address of family (AF_INET6
 * is dual stack), returns the fd and the port via *port, or -1. */
int h_listen_any(int family, int port, int *port_out);

/* A port free right now on IPv4 and IPv6 (bound and closed), or -1. */
int h_free_port(void);

/* True when ::1 can be bound here. */
bool h_have_ipv6_loopback(void);

/* ---- Chat mode (additions for tests/integration/test_chat*.c) ---- */

/* Connects a raw TCP client, waits for the server's "(online online)" log line, then
 * reads the two welcome lines ("*** Welcome to st_proactor, NICK! ..." and "*** You are
 * in ..."). Copies NICK into nick. False (with a message on stderr) otherwise. */
bool h_chat_connect(h_server *s, h_proc *p, int online, char *nick, size_t cap);

/* Starts the server (as h_server_start: the extra arguments, NULL-terminated) and brings
 * n chat clients into its lobby with h_chat_connect_n, online counts from 1; nicks[i]
 * receives client i's nickname. Asserts (Criterion) each step. */
void h_chat_start(h_server *s, h_proc *const clients[], int n, char nicks[][32], ...)
    __attribute__((sentinel));

/* Connects n raw clients one after another (online counts start at first_online) and
 * consumes the "*** NICK has joined lobby." notice at every earlier one of them.
 * nicks[i] receives client i's nickname. Asserts (Criterion) on any mismatch. */
void h_chat_connect_n(h_server *s, h_proc *const clients[], int n, int first_online,
                      char nicks[][32]);

/* Sends text + "\n" from clients[sender] (whose nickname is nick) and asserts that
 * every other client's next line is exactly "<nick> text\r\n". */
void h_chat_relay(h_proc *const clients[], int n, int sender, const char *nick,
                  const char *text);

/* Asserts that p's stream ends (EOF, possibly after a reset) within timeout_ms with no
 * further complete line. */
void h_expect_eof(h_proc *p, int timeout_ms);

/* Starts argv in a new pseudo-terminal (forkpty): p->in == p->out.fd is the master.
 * Returns 0 or -errno. The child dies with the test. */
int h_pty_spawn(h_proc *p, char *const argv[]);

#endif
