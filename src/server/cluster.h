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
/* True when --cluster is in use; cluster_up: and Redis is connected now (so it
 * implies cluster_enabled). */
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
/* Disconnects (loop thread, at shutdown) and takes this server's users out of the
 * cluster's names and lists. */
void cluster_stop(void);

/*
 * Presence.  Every name in use is a Redis key, st_proactor:DB:nick:NAME (lower case),
 * owned by one server, and each server lists its users and their rooms in a hash,
 * st_proactor:DB:node:TAG.  Both expire after --cluster-ttl seconds unless the
 * server's heartbeat (every third of that) refreshes them: a crashed server's users
 * vanish from the cluster after the TTL.  After every (re)connection a server
 * writes its whole list again.
 *
 * Questions (claim, list, msg) are answered through px_stream_call, so the answer
 * runs in the asking session's own order, with the session (px_stream_user) as s.
 * They return 0 when done will run exactly once, or a negative errno when it will
 * not (no memory); a Redis that is unreachable, or slower than 2 s to answer, is an
 * answer with status -1.
 */
typedef struct cluster_answer {
    int status;   /* 1: done; 0: refused (the name is taken, nobody has that name);
                     -1: Redis unreachable or failed */
    char *text;   /* claim: the name given; msg: the recipient's name as shown */
    char **items; /* list: "NAME\tROOM" of each user */
    size_t nitems;
} cluster_answer;
typedef void cluster_done_fn(chat_session *s, const cluster_answer *a);

/* Claims name (NULL: the next free guest name) for the session on st, in room,
 * giving up old (may be NULL) once it has it. */
int cluster_claim(px_stream *st, const char *name, const char *room, const char *old,
                  cluster_done_fn *done);
/* Every user of the cluster in room (NULL: in every room). */
int cluster_list(px_stream *st, const char *room, cluster_done_fn *done);
/* Sends line (a whole "[PM from ...]" line) to the user called name, wherever. */
int cluster_msg(px_stream *st, const char *name, px_buf *line, cluster_done_fn *done);
/* The session on st (called name) moves to room: answered once every server's
 * lists say so. */
int cluster_move(px_stream *st, const char *name, const char *room, cluster_done_fn *done);
/* A local user's name is free again.  Any thread. */
void cluster_left(const char *name);

#endif
