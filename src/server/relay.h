/* The relay: every connected client, and each complete line one of them
 * sends delivered to all the others. */
#ifndef CHAT_RELAY_H
#define CHAT_RELAY_H

#include "proactor.h"

/* Handlers for px_listen; the relay's state is process-wide. */
extern const px_stream_handlers chat_relay_handlers;

/* Clients connected now (a snapshot). */
unsigned chat_relay_online(void);

/* Shutdown: closes every client gracefully (what is queued is still
 * written) and stops loop once the last one has gone.  Returns how many
 * clients were asked to close; 0 means there is nothing to wait for. */
unsigned chat_relay_close_all(px_loop *loop);

#endif
