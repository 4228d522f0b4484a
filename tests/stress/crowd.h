/*
 * Stress-test clients: a crowd of non-blocking TCP clients of one st_proactor server,
 * driven by one epoll loop in the test process, with the server's log read in the same
 * loop (so the server never blocks on a full stderr pipe).  Lines are handed to the
 * test's callbacks whole.  Every wait is bounded.
 */
#ifndef ST_STRESS_CROWD_H
#define ST_STRESS_CROWD_H

#include "../integration/harness.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct crowd crowd;

typedef struct member {
    int fd;          /* -1 once closed */
    bool eof;        /* the server closed it (or reset it) */
    bool welcomed;   /* "*** You are in lobby" seen */
    char nick[32];
    char *rx;        /* a partial line */
    size_t rx_len, rx_cap;
    uint64_t lines;  /* complete lines received */
    uint64_t bytes;  /* bytes received */
    char last[64];   /* the start of the last complete line */
} member;

/* Called for every complete line a member receives (CRLF stripped) and for every line
 * of the server's log (who == -1). */
typedef void (*crowd_line_fn)(crowd *c, int who, const char *line, size_t len);

struct crowd {
    h_server *srv;
    int ep;
    member *m;
    int n, cap;
    crowd_line_fn on_line;
    void *ctx;               /* for the callback */
    char log[4096];          /* partial log line */
    size_t log_len;
    uint64_t log_lines;
};

/* "long" when ST_STRESS=long (make stress), else the short version (make test). */
bool stress_long(void);
/* short_n in make test, long_n in make stress. */
long stress_n(long short_n, long long_n);

/* Raises this process's descriptor limit to its hard limit; returns the soft limit. */
long stress_raise_nofile(void);

void crowd_init(crowd *c, h_server *srv, crowd_line_fn on_line, void *ctx);
/* Closes every member and the epoll fd. */
void crowd_free(crowd *c);

/* Connects one member to 127.0.0.1:port (rcvbuf > 0 shrinks its receive buffer first;
 * src_ip, when non-NULL, binds the source address).  Returns its index, or -1 with
 * errno set (connect failed). */
int crowd_connect(crowd *c, int rcvbuf, const char *src_ip);

/* Waits (pumping) until every member from `from` on has its welcome; false on timeout. */
bool crowd_wait_welcomed(crowd *c, int from, int timeout_ms);

/* Waits up to timeout_ms for events and handles them (reads, callbacks).  Returns the
 * number of events handled. */
int crowd_pump(crowd *c, int timeout_ms);

/* Pumps until done(c) is true; false when timeout_ms passes first. */
bool crowd_until(crowd *c, bool (*done)(crowd *c), int timeout_ms);

/* Writes all of s to member i, pumping while the socket is full (so the server never
 * waits on us while we wait on it).  False if the connection is gone. */
bool crowd_send(crowd *c, int i, const char *s, size_t n);

/* Stops reading member i (its socket stays open). */
void crowd_ignore(crowd *c, int i);

/* Closes member i (gracefully, or with a reset). */
void crowd_close(crowd *c, int i, bool reset);

/* The server's resident and peak resident memory, in KiB (from /proc). */
long server_rss_kib(const h_server *s);
long server_hwm_kib(const h_server *s);

/* True when the server runs under AddressSanitizer or ThreadSanitizer: its memory
 * figures then say nothing (freed memory sits in quarantine), and leaks are
 * LeakSanitizer's to find. */
bool server_sanitized(const h_server *s);

/* Prints one result line "stress NAME [short|long, BACKEND]: ..." on stderr, and
 * appends it to the file $ST_STRESS_REPORT when that is set. */
void stress_report(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
