/*
 * The relay: the list of connected clients and line-by-line broadcast.  A
 * client's bytes are cut into whole lines (a line split over several reads is
 * kept until its newline arrives); the complete lines of one read go out as
 * one shared buffer to every other client, so a line is never interleaved
 * with another sender's.  A client whose send queue is full is dropped.
 */
#include "relay.h"

#include "log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* A partial line longer than this is relayed as it is rather than kept:
 * memory per client stays bounded whatever a client sends. */
#define CHAT_PARTIAL_MAX (64u << 10)

typedef struct chat_client {
    px_stream *stream;
    char addr[64];
    char *partial; /* bytes after the last newline, not yet relayed */
    size_t partial_len;
    unsigned index; /* position in clients[] */
} chat_client;

static pthread_mutex_t clients_lock = PTHREAD_MUTEX_INITIALIZER;
static chat_client **clients;
static unsigned nclients, cap_clients;
static px_loop *closing_loop; /* set at shutdown: stop it when empty */

unsigned chat_relay_online(void)
{
    pthread_mutex_lock(&clients_lock);
    unsigned n = nclients;
    pthread_mutex_unlock(&clients_lock);
    return n;
}

/* Sends msg to every client but from.  Pointers are copied and retained
 * under the lock, and the sends happen after it is released, so no lock is
 * held while the library wakes its loop. */
static void broadcast(chat_client *from, px_buf *msg)
{
    pthread_mutex_lock(&clients_lock);
    unsigned n = 0;
    px_stream **to = malloc((nclients ? nclients : 1) * sizeof(*to));
    if (to) {
        for (unsigned i = 0; i < nclients; i++)
            if (clients[i] != from)
                to[n++] = px_stream_retain(clients[i]->stream);
    }
    pthread_mutex_unlock(&clients_lock);
    if (!to) {
        srv_log(SRV_LOG_ERROR, "out of memory: a message from %s was not relayed", from->addr);
        return;
    }
    for (unsigned i = 0; i < n; i++) {
        int rc = px_stream_send(to[i], msg);
        if (rc == PX_ESENDQ) {
            chat_client *c = px_stream_user(to[i]);
            srv_log(SRV_LOG_INFO, "dropping %s: too slow (send queue full)", c ? c->addr : "?");
            px_stream_abort(to[i]);
        }
        px_stream_release(to[i]);
    }
    free(to);
}

static void relay_bytes(chat_client *c, const char *a, size_t alen, const char *b, size_t blen)
{
    px_buf *msg;
    void *data;
    if (px_buf_alloc(&msg, alen + blen, &data) != 0) {
        srv_log(SRV_LOG_ERROR, "out of memory: a message from %s was not relayed", c->addr);
        return;
    }
    if (alen)
        memcpy(data, a, alen);
    if (blen)
        memcpy((char *)data + alen, b, blen);
    broadcast(c, msg);
    px_buf_release(msg);
}

static void on_open(px_stream *s, void *user)
{
    (void)user;
    chat_client *c = calloc(1, sizeof(*c));
    if (!c) {
        px_stream_abort(s);
        return;
    }
    c->stream = s;
    if (px_stream_peer(s, c->addr, sizeof(c->addr)) < 0)
        strcpy(c->addr, "?");
    pthread_mutex_lock(&clients_lock);
    if (nclients == cap_clients) {
        unsigned cap = cap_clients ? cap_clients * 2 : 64;
        chat_client **grown = realloc(clients, cap * sizeof(*grown));
        if (!grown) {
            pthread_mutex_unlock(&clients_lock);
            free(c);
            px_stream_abort(s);
            return;
        }
        clients = grown;
        cap_clients = cap;
    }
    c->index = nclients;
    clients[nclients++] = c;
    unsigned online = nclients;
    pthread_mutex_unlock(&clients_lock);
    px_stream_set_user(s, c);
    srv_log(SRV_LOG_INFO, "connected %s (%u online)", c->addr, online);
}

static void on_data(px_stream *s, const char *bytes, size_t len, void *user)
{
    (void)s;
    chat_client *c = user;
    if (!c)
        return;
    const char *nl = memrchr(bytes, '\n', len);
    if (!nl) {
        if (c->partial_len + len > CHAT_PARTIAL_MAX) {
            relay_bytes(c, c->partial, c->partial_len, bytes, len);
            c->partial_len = 0;
            return;
        }
        char *grown = realloc(c->partial, c->partial_len + len);
        if (!grown) {
            srv_log(SRV_LOG_ERROR, "out of memory: dropping %s", c->addr);
            px_stream_abort(s);
            return;
        }
        c->partial = grown;
        memcpy(c->partial + c->partial_len, bytes, len);
        c->partial_len += len;
        return;
    }
    size_t whole = (size_t)(nl - bytes) + 1;
    relay_bytes(c, c->partial, c->partial_len, bytes, whole);
    c->partial_len = 0;
    if (whole < len)
        on_data(s, bytes + whole, len - whole, user); /* keeps the tail */
    else if (c->partial) {
        free(c->partial);
        c->partial = NULL;
    }
}

static void on_close(px_stream *s, int cause, void *user)
{
    (void)s;
    chat_client *c = user;
    if (!c)
        return;
    pthread_mutex_lock(&clients_lock);
    chat_client *last = clients[--nclients];
    clients[c->index] = last;
    last->index = c->index;
    unsigned online = nclients;
    px_loop *stop = online == 0 ? closing_loop : NULL;
    pthread_mutex_unlock(&clients_lock);
    if (c->partial_len) /* the client left mid-line: what it typed still counts */
        relay_bytes(c, c->partial, c->partial_len, "\n", 1);
    if (cause == 0 || cause == -ECANCELED)
        srv_log(SRV_LOG_INFO, "disconnected %s (%u online)", c->addr, online);
    else
        srv_log(SRV_LOG_INFO, "disconnected %s (%u online): %s", c->addr, online,
                px_strerror(cause));
    free(c->partial);
    free(c);
    if (stop)
        px_loop_stop(stop);
}

unsigned chat_relay_close_all(px_loop *loop)
{
    pthread_mutex_lock(&clients_lock);
    closing_loop = loop;
    unsigned n = nclients;
    for (unsigned i = 0; i < n; i++)
        px_stream_close(clients[i]->stream);
    pthread_mutex_unlock(&clients_lock);
    return n;
}

const px_stream_handlers chat_relay_handlers = {
    .on_open = on_open,
    .on_data = on_data,
    .on_close = on_close,
};
