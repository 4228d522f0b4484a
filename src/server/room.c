/*
 * Rooms: a table of rooms by name, each with its members, the last few
 * messages and one order for everything said in it.  A message is queued to
 * every member while the room's lock is held, so all members get the room's
 * messages in the same order; sending only appends a reference to each
 * member's queue (the one copy of the message is shared).
 */
#include "chat.h"
#include "cluster.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct chat_room {
    char name[CHAT_ROOM_MAX + 1];
    unsigned refs; /* members and members-to-be; under rooms_lock */
    chat_room *next; /* hash chain, under rooms_lock */

    pthread_mutex_t lock;
    chat_session **members;
    unsigned nmembers, cap;
    px_buf **hist; /* ring of the last hist_cap messages */
    unsigned hist_head, hist_len;
    size_t hist_bytes; /* in the ring: at most replay_max, the newest kept */
};

static pthread_mutex_t rooms_lock = PTHREAD_MUTEX_INITIALIZER;
static chat_room **table;
static unsigned table_size, nrooms;
static unsigned hist_cap;
static size_t replay_max; /* bytes of history replayed to a newcomer */
static unsigned announce_max; /* join/leave notices only in rooms this small */

static unsigned name_hash(const char *s)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

void chat_rooms_init(unsigned history, size_t replay_bytes, unsigned announce)
{
    hist_cap = history;
    announce_max = announce;
    replay_max = replay_bytes;
    table_size = 64;
    table = calloc(table_size, sizeof(*table));
}

void chat_rooms_fini(void)
{
    /* Every member has left by now: rooms go with their last member. */
    free(table);
    table = NULL;
    table_size = nrooms = 0;
}

unsigned chat_rooms_count(void)
{
    pthread_mutex_lock(&rooms_lock);
    unsigned n = nrooms;
    pthread_mutex_unlock(&rooms_lock);
    return n;
}

static void table_grow(void)
{
    unsigned size = table_size * 2;
    chat_room **t = calloc(size, sizeof(*t));
    if (!t)
        return; /* longer chains, still correct */
    for (unsigned i = 0; i < table_size; i++) {
        for (chat_room *r = table[i], *next; r; r = next) {
            next = r->next;
            unsigned h = name_hash(r->name) & (size - 1);
            r->next = t[h];
            t[h] = r;
        }
    }
    free(table);
    table = t;
    table_size = size;
}

/* Finds or creates the room and takes a reference; under rooms_lock. */
static chat_room *room_get(const char *name)
{
    if (!table)
        return NULL;
    unsigned h = name_hash(name) & (table_size - 1);
    for (chat_room *r = table[h]; r; r = r->next) {
        if (strcmp(r->name, name) == 0) {
            r->refs++;
            return r;
        }
    }
    chat_room *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    if (hist_cap && !(r->hist = calloc(hist_cap, sizeof(*r->hist)))) {
        free(r);
        return NULL;
    }
    snprintf(r->name, sizeof(r->name), "%s", name);
    pthread_mutex_init(&r->lock, NULL);
    r->refs = 1;
    r->next = table[h];
    table[h] = r;
    if (++nrooms > table_size * 2)
        table_grow();
    return r;
}

static void room_put(chat_room *r)
{
    pthread_mutex_lock(&rooms_lock);
    bool last = --r->refs == 0;
    if (last) {
        chat_room **pp = &table[name_hash(r->name) & (table_size - 1)];
        while (*pp != r)
            pp = &(*pp)->next;
        *pp = r->next;
        nrooms--;
    }
    pthread_mutex_unlock(&rooms_lock);
    if (!last)
        return;
    for (unsigned i = 0; i < r->hist_len; i++)
        px_buf_release(r->hist[(r->hist_head + i) % hist_cap]);
    free(r->hist);
    free(r->members);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

const char *chat_room_name(const chat_room *r) { return r->name; }

/* Under r->lock. */
static void send_all_locked(chat_room *r, chat_session *from, px_buf *msg)
{
    for (unsigned i = 0; i < r->nmembers; i++)
        if (r->members[i] != from)
            chat_send(r->members[i], msg);
}

/* A join or leave notice, about s (NULL: it is leaving), under r->lock: to the
 * members here, or in a cluster to the room on every server, in the room's one
 * order (s, who is about to join, does not get its own). */
static void announce_locked(chat_room *r, chat_session *s, px_buf *notice)
{
    if (!cluster_enabled())
        send_all_locked(r, NULL, notice);
    else if (cluster_publish(r->name, s ? s->id : 0, s ? s->stream : NULL, notice, false) != 0)
        send_all_locked(r, NULL, notice); /* the queue is full: this server at least */
}

chat_room *chat_room_enter(const char *name, chat_session *s, bool announce)
{
    pthread_mutex_lock(&rooms_lock);
    chat_room *r = room_get(name);
    pthread_mutex_unlock(&rooms_lock);
    if (!r)
        return NULL;
    pthread_mutex_lock(&r->lock);
    if (r->nmembers == r->cap) {
        unsigned cap = r->cap ? r->cap * 2 : 8;
        chat_session **m = realloc(r->members, cap * sizeof(*m));
        if (!m) {
            pthread_mutex_unlock(&r->lock);
            room_put(r);
            return NULL;
        }
        r->members = m;
        r->cap = cap;
    }
    if (announce) {
        unsigned n = r->nmembers + 1;
        px_buf *intro = chat_fmt("*** You are in %s (%u user%s).", r->name, n, n == 1 ? "" : "s");
        if (intro) {
            chat_send(s, intro);
            px_buf_release(intro);
        }
        /* The history, oldest first: it never holds more than replay_max bytes
         * (chat_room_send), so a replay never fills the newcomer's queue. */
        for (unsigned i = 0; i < r->hist_len; i++)
            chat_send(s, r->hist[(r->hist_head + i) % hist_cap]);
        /* In a big room every join told to every member would cost n^2 sends (and
         * memory queued to members who do not read): big rooms stay quiet. */
        px_buf *notice = r->nmembers + 1 <= announce_max
                             ? chat_fmt("*** %s has joined %s.", s->nick, r->name)
                             : NULL;
        if (notice) {
            announce_locked(r, s, notice);
            px_buf_release(notice);
        }
    }
    s->room_idx = r->nmembers;
    r->members[r->nmembers++] = s;
    pthread_mutex_unlock(&r->lock);
    return r;
}

void chat_room_leave(chat_room *r, chat_session *s, px_buf *notice)
{
    pthread_mutex_lock(&r->lock);
    unsigned i = s->room_idx;
    if (i < r->nmembers && r->members[i] == s) {
        chat_session *last = r->members[--r->nmembers];
        r->members[i] = last;
        last->room_idx = i;
    }
    if (notice && r->nmembers + 1 <= announce_max) /* as for joins */
        announce_locked(r, NULL, notice);
    if (r->nmembers == 0 && r->cap > 8) {
        free(r->members);
        r->members = NULL;
        r->cap = 0;
    }
    pthread_mutex_unlock(&r->lock);
    room_put(r);
}

/* Keeps msg in r's history; under r->lock. */
static void hist_add_locked(chat_room *r, px_buf *msg)
{
    if (hist_cap) {
        if (r->hist_len == hist_cap) { /* the oldest makes room */
            r->hist_bytes -= px_buf_len(r->hist[r->hist_head]);
            px_buf_release(r->hist[r->hist_head]);
            r->hist_head = (r->hist_head + 1) % hist_cap;
            r->hist_len--;
        }
        r->hist[(r->hist_head + r->hist_len++) % hist_cap] = px_buf_retain(msg);
        r->hist_bytes += px_buf_len(msg);
        /* Bytes bound it too: no more is kept than a replay could use, so long
         * lines in many rooms cannot pile up memory. */
        while (r->hist_bytes > replay_max && r->hist_len > 0) {
            r->hist_bytes -= px_buf_len(r->hist[r->hist_head]);
            px_buf_release(r->hist[r->hist_head]);
            r->hist_head = (r->hist_head + 1) % hist_cap;
            r->hist_len--;
        }
    }
}

void chat_room_send(chat_room *r, chat_session *from, px_buf *msg, bool history)
{
    pthread_mutex_lock(&r->lock);
    send_all_locked(r, from, msg);
    if (history)
        hist_add_locked(r, msg);
    pthread_mutex_unlock(&r->lock);
}

void chat_room_deliver(const char *name, uint64_t except, px_buf *msg, bool history)
{
    pthread_mutex_lock(&rooms_lock);
    chat_room *r = NULL;
    if (table) {
        for (r = table[name_hash(name) & (table_size - 1)]; r; r = r->next)
            if (strcmp(r->name, name) == 0)
                break;
        if (r)
            r->refs++;
    }
    pthread_mutex_unlock(&rooms_lock);
    if (!r)
        return; /* nobody here is in that room */
    pthread_mutex_lock(&r->lock);
    for (unsigned i = 0; i < r->nmembers; i++)
        if (!except || r->members[i]->id != except)
            chat_send(r->members[i], msg);
    if (history)
        hist_add_locked(r, msg);
    pthread_mutex_unlock(&r->lock);
    room_put(r);
}

unsigned chat_room_nicks(chat_room *r, const char **out, unsigned max)
{
    pthread_mutex_lock(&r->lock);
    unsigned n = r->nmembers;
    for (unsigned i = 0; i < n && i < max; i++)
        out[i] = r->members[i]->nick;
    pthread_mutex_unlock(&r->lock);
    return n;
}

bool chat_rooms_append(char *buf, size_t cap, size_t *len, const char *name, unsigned members)
{
    int w = snprintf(buf + *len, cap - *len, "%s%s (%u)", *len ? ", " : "", name, members);
    if (w < 0 || (size_t)w >= cap - *len) {
        if (cap > 4)
            strcpy(buf + (*len < cap - 4 ? *len : cap - 4), "...");
        return false;
    }
    *len += (size_t)w;
    return true;
}

unsigned chat_rooms_list(char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    pthread_mutex_lock(&rooms_lock);
    unsigned n = nrooms;
    for (unsigned i = 0; i < table_size; i++) {
        for (chat_room *r = table[i]; r; r = r->next) {
            if (!chat_rooms_append(buf, cap, &len, r->name, r->refs))
                goto out;
        }
    }
out:
    pthread_mutex_unlock(&rooms_lock);
    return n;
}

void chat_rooms_close_all(px_buf *bye)
{
    pthread_mutex_lock(&rooms_lock);
    for (unsigned i = 0; table && i < table_size; i++) {
        for (chat_room *r = table[i]; r; r = r->next) {
            pthread_mutex_lock(&r->lock);
            for (unsigned k = 0; k < r->nmembers; k++) {
                if (bye)
                    px_stream_send(r->members[k]->stream, bye);
                px_stream_close(r->members[k]->stream);
            }
            pthread_mutex_unlock(&r->lock);
        }
    }
    pthread_mutex_unlock(&rooms_lock);
}
