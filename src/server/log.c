/*
 * Logging: each line is formatted first and written with one write(2), so
 * lines from different threads never interleave and no lock is needed.
 */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

static atomic_int max_level = SRV_LOG_INFO;

void srv_log_set_level(srv_log_level max) { atomic_store(&max_level, (int)max); }

void srv_log(srv_log_level level, const char *fmt, ...)
{
    if ((int)level > atomic_load(&max_level))
        return;
    char line[1024];
    int n = snprintf(line, sizeof(line), "st_proactor: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + ((size_t)m < sizeof(line) - (size_t)n - 1
                                  ? (size_t)m
                                  : sizeof(line) - (size_t)n - 2);
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
