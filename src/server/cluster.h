/*
 * Several st_proactor servers sharing their rooms through Redis pub/sub
 * (--cluster redis://HOST:PORT[/DB]).  Every line said in a room is published
 * to the room's channel, st_proactor:DB:room:NAME, and delivered to the room's
 * local members only when it comes back from Redis, so every member on every
 * server sees a room's lines in the one order Redis gives them.  hiredis's
 * asynchronous API runs on the loop thread (redis_px.c); other threads hand
 * lines over through a bounded queue.
 */
#ifndef SRV_CLUSTER_H
#define SRV_CLUSTER_H

#include "chat.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Checks that Redis answers (blocking, 2 s at most); 0, or -1 with why[] filled. */
int cluster_probe(const srv_config *cfg, char *why, size_t len);

#define CLUSTER_DOWN_NOTICE                                                            \
    "*** The cluster is unreachable: messages reach only this server (marked [local]) " \
    "until it is back."

/* Starts the cluster on the loop (from the main thread before it runs); 0 or
 * -ENOMEM.  Connects in the background and keeps reconnecting. */
int cluster_start(const srv_config *cfg, px_loop *loop);
/* True when --cluster is in use; cluster_up: and Redis is connected now. */
bool cluster_enabled(void);
bool cluster_up(void);
/* Hands a formatted line (with its CRLF) said in room by session id sender (0:
 * it goes to the sender too) to Redis, through the loop thread, in order; from
 * (may be NULL) is told when the line could not be sent; history: the room keeps
 * it for newcomers (messages, not notices).  0, or
 * -EAGAIN when CLUSTER_QUEUE_MAX lines already wait for Redis's answer (the
 * caller refuses it), or -ENOMEM.  While Redis is unreachable the line reaches
 * this server's members only, marked "[local]".  Any thread. */
int cluster_publish(const char *room, uint64_t sender, px_stream *from, px_buf *line,
                    bool history);
/* Disconnects (loop thread, at shutdown). */
void cluster_stop(void);

#endif
