/* Logging to stderr: timestamp, level, one line per event. */
#ifndef SRV_LOG_H
#define SRV_LOG_H

#include <stdbool.h>

/* -q keeps errors and warnings, -v adds debug lines. */
typedef enum srv_log_level { SRV_LOG_ERROR, SRV_LOG_WARN, SRV_LOG_INFO, SRV_LOG_DEBUG } srv_log_level;

void srv_log_set_level(srv_log_level max);
bool srv_log_enabled(srv_log_level level);
void srv_log(srv_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
