/*
 * Sessions: one per client.  The stream handlers cut the bytes into lines
 * (proto.c), apply the flood limit, sanitise, and run commands or relay the
 * line to the client's room (room.c).  Also here: the registry of nicknames
 * and sessions, the client limit, idle timeouts and shutdown.
 */
#include "chat.h"

#include "cluster.h"
#include "log.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Read-only after chat_init. */
static const srv_config *cfg;
static px_timer *idle_timer;

/* The registry: every session, and nicknames (lower case) to sessions. */
typedef struct nick_entry {
    char key[CHAT_NICK_MAX + 1];
    chat_session *s;
    bool reserved; /* a rename waiting for the cluster: nobody can take it, nobody reaches it */
    struct nick_entry *next;
} nick_entry;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static chat_session *sessions;
static unsigned nsessions; /* clients holding a place (--max-clients) */
static unsigned nonline;   /* of which in their room and reachable by name */
static nick_entry **nicks;
static unsigned nick_buckets, nnicks;
static unsigned long guest_seq;
static bool shutting_down;
static px_loop *stop_when_empty;

/* ------------------------------------------------------------------------ */
/* Output                                                                    */

px_buf *chat_fmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    px_buf *b;
    void *data;
    if (px_buf_alloc(&b, (size_t)n + 2, &data) != 0)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(data, (size_t)n + 1, fmt, ap);
    va_end(ap);
    memcpy((char *)data + n, "\r\n", 2);
    return b;
}

void chat_set_reason(chat_session *s, const char *reason)
{
    const char *none = NULL;
    atomic_compare_exchange_strong(&s->reason, &none, reason);
}

int chat_send(chat_session *s, px_buf *b)
{
    int rc = px_stream_send(s->stream, b);
    if (rc == PX_ESENDQ) {
        chat_set_reason(s, "too slow");
        px_stream_abort(s->stream);
    }
    return rc;
}

static void send_bytes(chat_session *s, const char *p, size_t n)
{
    px_buf *b;
    if (px_buf_new(&b, p, n) == 0) {
        chat_send(s, b);
        px_buf_release(b);
    }
}

/* The longest prefix of p[0..len) of at most max bytes that does not end
 * inside a UTF-8 sequence. */
static int cut(const char *p, size_t len, size_t max)
{
    if (len <= max)
        return (int)len;
    size_t k = max;
    while (k > 0 && ((unsigned char)p[k] & 0xC0) == 0x80)
        k--; /* p[k] continues a character: cut before its first byte */
    return (int)k;
}

/* A line to this client only. */
static void reply(chat_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(chat_session *s, const char *fmt, ...)
{
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(line) - 2 ? (size_t)n : sizeof(line) - 3;
    memcpy(line + len, "\r\n", 2);
    send_bytes(s, line, len + 2);
}

/* ------------------------------------------------------------------------ */
/* Registry (under registry_lock)                                            */

static void lower(char *dst, const char *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (char)(src[i] >= 'A' && src[i] <= 'Z' ? src[i] + 32 : src[i]);
    dst[n] = '\0';
}

static unsigned nick_hash(const char *key)
{
    unsigned h = 2166136261u;
    for (; *key; key++)
        h = (h ^ (unsigned char)*key) * 16777619u;
    return h & (nick_buckets - 1);
}

static nick_entry **nick_find(const char *name, size_t len)
{
    char key[CHAT_NICK_MAX + 1];
    lower(key, name, len);
    nick_entry **pp = &nicks[nick_hash(key)];
    while (*pp && strcmp((*pp)->key, key) != 0)
        pp = &(*pp)->next;
    return pp;
}

static void nick_grow(void)
{
    unsigned size = nick_buckets * 2;
    nick_entry **t = calloc(size, sizeof(*t));
    if (!t)
        return;
    unsigned old = nick_buckets;
    nick_entry **from = nicks;
    nicks = t;
    nick_buckets = size;
    for (unsigned i = 0; i < old; i++) {
        for (nick_entry *e = from[i], *next; e; e = next) {
            next = e->next;
            unsigned h = nick_hash(e->key);
            e->next = t[h];
            t[h] = e;
        }
    }
    free(from);
}

static int nick_add(const char *name, size_t len, chat_session *s)
{
    nick_entry **pp = nick_find(name, len);
    if (*pp)
        return -EEXIST;
    nick_entry *e = malloc(sizeof(*e));
    if (!e)
        return -ENOMEM;
    lower(e->key, name, len);
    e->s = s;
    e->reserved = false;
    e->next = NULL;
    *pp = e;
    if (++nnicks > nick_buckets * 2)
        nick_grow();
    return 0;
}

/* Removes name if s holds it. */
static void nick_del(const char *name, const chat_session *s)
{
    nick_entry **pp = nick_find(name, strlen(name));
    nick_entry *e = *pp;
    if (e && e->s == s) {
        *pp = e->next;
        free(e);
        nnicks--;
    }
}

/* Adds s with a fresh guest name; -EUSERS when the server is full. */
static int registry_add(chat_session *s, unsigned *online)
{
    pthread_mutex_lock(&registry_lock);
    int rc = 0;
    if (shutting_down) {
        rc = -ESHUTDOWN;
    } else if (cfg->max_clients && nsessions >= cfg->max_clients) {
        rc = -EUSERS;
    } else {
        /* Users cannot pick guest names, so the counter gives unique ones.
         * The name is published (registry_publish) once the client has its
         * welcome, so no private message can come before it. */
        snprintf(s->nick, sizeof(s->nick), "guest%lu", ++guest_seq);
        s->id = guest_seq; /* also counts every session ever: unique */
    }
    if (rc == 0) {
        s->next = sessions;
        s->prev = NULL;
        if (sessions)
            sessions->prev = s;
        sessions = s;
        nsessions++;
    }
    *online = nsessions;
    pthread_mutex_unlock(&registry_lock);
    return rc;
}

/* The client is in its room: make its name reachable and count it online.
 * Returns the online count. */
static unsigned registry_publish(chat_session *s)
{
    pthread_mutex_lock(&registry_lock);
    int rc;
    /* A guest name is unique here unless the cluster gave it while this server had
     * given it itself, when Redis was unreachable: then another one. */
    while ((rc = nick_add(s->nick, strlen(s->nick), s)) == -EEXIST)
        snprintf(s->nick, sizeof(s->nick), "guest%lu", ++guest_seq);
    if (rc)
        chat_set_reason(s, "out of memory");
    snprintf(s->where, sizeof(s->where), "%s", s->room ? chat_room_name(s->room) : CHAT_LOBBY);
    s->published = true;
    unsigned online = ++nonline;
    pthread_mutex_unlock(&registry_lock);
    return online;
}

static unsigned registry_del(chat_session *s, px_loop **stop)
{
    pthread_mutex_lock(&registry_lock);
    if (s->published) /* before that, its name was not in the table (nor was it its own) */
        nick_del(s->nick, s);
    if (s->reserving)
        nick_del(s->pending_name, s);
    if (s->prev)
        s->prev->next = s->next;
    else
        sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    --nsessions;
    if (s->published)
        --nonline;
    unsigned online = nonline;
    *stop = online == 0 ? stop_when_empty : NULL;
    pthread_mutex_unlock(&registry_lock);
    return online;
}

void chat_presence_each(void (*fn)(const char *name, const char *room, void *ctx), void *ctx)
{
    pthread_mutex_lock(&registry_lock);
    for (chat_session *s = sessions; s; s = s->next) {
        if (s->published)
            fn(s->nick, s->where, ctx);
    }
    pthread_mutex_unlock(&registry_lock);
}

int chat_tell(const char *name, size_t len, px_buf *line)
{
    int rc = -ENOENT;
    if (len > CHAT_NICK_MAX)
        return rc;
    pthread_mutex_lock(&registry_lock); /* the session cannot be freed meanwhile */
    nick_entry *e = *nick_find(name, len);
    if (e && !e->reserved)
        rc = chat_send(e->s, line);
    pthread_mutex_unlock(&registry_lock);
    return rc;
}

void chat_census(unsigned *sessions, unsigned *names, unsigned *rooms)
{
    pthread_mutex_lock(&registry_lock);
    *sessions = nsessions;
    *names = nnicks;
    pthread_mutex_unlock(&registry_lock);
    *rooms = chat_rooms_count();
}

unsigned chat_online(void)
{
    pthread_mutex_lock(&registry_lock);
    unsigned n = nonline;
    pthread_mutex_unlock(&registry_lock);
    return n;
}

/* Retains the streams of every session (or of those idle since before
 * idle_before, when it is non-zero), at most max of them, into a new array,
 * and gives each the reason it is about to leave.  The reason is set here,
 * under the lock, because a session may close and be freed once the lock is
 * released. */
static px_stream **collect(uint64_t idle_before, const char *reason, unsigned max,
                           unsigned *count)
{
    pthread_mutex_lock(&registry_lock);
    unsigned cap = nsessions < max ? nsessions : max;
    px_stream **out = malloc((cap ? cap : 1) * sizeof(*out));
    unsigned n = 0;
    for (chat_session *s = sessions; out && s && n < cap; s = s->next) {
        if (idle_before) {
            if (s->idle_kicked || atomic_load(&s->last_active_ms) >= idle_before)
                continue;
            s->idle_kicked = true;
        }
        chat_set_reason(s, reason);
        out[n++] = px_stream_retain(s->stream);
    }
    pthread_mutex_unlock(&registry_lock);
    *count = n;
    return out;
}

/* ------------------------------------------------------------------------ */
/* Questions to the cluster                                                  */

/* How long a session waits for the cluster's answer at most; hiredis answers every
 * question, if only with "connection lost", so this is a safety net. */
#define CLUSTER_WAIT_MS 60000

/* The session's next lines stay unread, in order, until the answer is handled. */
static void wait_for_cluster(chat_session *s)
{
    s->waiting = true;
    s->wait_until_ms = px_now_ms() + CLUSTER_WAIT_MS;
    px_stream_pause(s->stream, CLUSTER_WAIT_MS);
}

/* Reading resumes, but not before the flood limit allows. */
static void wait_over(chat_session *s)
{
    s->waiting = false;
    px_stream_resume(s->stream);
    uint64_t now = px_now_ms();
    if (s->read_after_ms > now)
        px_stream_pause(s->stream, s->read_after_ms - now);
}

/* ------------------------------------------------------------------------ */
/* Commands                                                                  */

static void cmd_help(chat_session *s)
{
    static const char *const lines[] = {
        "*** Commands:",
        "***   /nick NAME       change your nickname (letters, digits, _ and -, up to 16)",
        "***   /who             who is in this room",
        "***   /me ACTION       say what you are doing",
        "***   /msg NICK TEXT   a private message",
        "***   /join ROOM       move to another room (created if needed)",
        "***   /rooms           list the rooms",
        "***   /quit [REASON]   leave",
        "***   /help            this list",
        "*** Anything else is said to your room; start a line with // to say /...",
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        reply(s, "%s", lines[i]);
}

/* The rename, once the name is the session's (reserved here, and in the cluster's
 * names when there is one). */
static void nick_done(chat_session *s, const char *name)
{
    char old[CHAT_NICK_MAX + 1];
    strcpy(old, s->nick);
    pthread_mutex_lock(&registry_lock);
    nick_entry *e = *nick_find(name, strlen(name));
    if (e && e->s == s)
        e->reserved = false; /* reachable under its new name from now on */
    if (!chat_name_eq(old, strlen(old), name, strlen(name)))
        nick_del(old, s);
    strcpy(s->nick, name);
    s->reserving = false;
    pthread_mutex_unlock(&registry_lock);
    px_buf *notice = chat_fmt("*** %s is now known as %s.", old, name);
    if (notice) {
        if (!cluster_enabled() ||
            cluster_publish(chat_room_name(s->room), s->id, s->stream, notice, false) != 0)
            chat_room_send(s->room, s, notice, false);
        px_buf_release(notice);
    }
    reply(s, "*** You are now known as %s.", name);
    srv_log(SRV_LOG_DEBUG, "%s: %s is now known as %s", s->addr, old, name);
}

/* Gives back the name reserved for a rename that did not happen. */
static void nick_unreserve(chat_session *s)
{
    pthread_mutex_lock(&registry_lock);
    if (s->reserving)
        nick_del(s->pending_name, s);
    s->reserving = false;
    pthread_mutex_unlock(&registry_lock);
}

static void nick_claimed(chat_session *s, const cluster_answer *a)
{
    wait_over(s);
    if (a->status == 0) {
        nick_unreserve(s);
        reply(s, "*** Error: the nickname %s is taken (on another server).", s->pending_name);
        return;
    }
    if (a->status < 0 && cluster_up()) {
        /* Redis is there but did not answer in time (or refused): the claim may still
         * happen; the cluster module puts this server's names right when it does. */
        nick_unreserve(s);
        reply(s, "*** Error: the cluster did not answer in time; you are still %s.", s->nick);
        return;
    }
    /* Done, or Redis unreachable: unique on this server, claimed at reconnection. */
    nick_done(s, s->pending_name);
}

static void cmd_nick(chat_session *s, const chat_cmd *c)
{
    if (!c->target_len || c->arg_len) {
        reply(s, "*** Error: usage: /nick NAME");
        return;
    }
    if (!chat_nick_valid(c->target, c->target_len)) {
        reply(s, "*** Error: '%.*s' is not a valid nickname: 1 to 16 letters, digits, _ or -, "
                 "starting with a letter, not starting with 'guest'.",
              cut(c->target, c->target_len, 32), c->target);
        return;
    }
    char name[CHAT_NICK_MAX + 1];
    memcpy(name, c->target, c->target_len);
    name[c->target_len] = '\0';
    if (strcmp(s->nick, name) == 0) {
        reply(s, "*** You are already %s.", name);
        return;
    }
    bool clustered = cluster_up();
    /* Reserved here first (the old name stays until the rename is done); while the
     * cluster is asked, the reservation is nobody's to reach. */
    int rc = 0;
    pthread_mutex_lock(&registry_lock);
    if (!chat_name_eq(s->nick, strlen(s->nick), name, c->target_len)) {
        rc = nick_add(name, c->target_len, s);
        if (rc == 0) {
            (*nick_find(name, c->target_len))->reserved = clustered;
            strcpy(s->pending_name, name);
            s->reserving = true;
        }
    }
    pthread_mutex_unlock(&registry_lock);
    if (rc == -EEXIST) {
        reply(s, "*** Error: the nickname %s is taken.", name);
        return;
    }
    if (rc) {
        reply(s, "*** Error: out of memory.");
        return;
    }
    if (clustered) {
        strcpy(s->pending_name, name);
        wait_for_cluster(s);
        if (cluster_claim(s->stream, name, chat_room_name(s->room), s->nick, nick_claimed) == 0)
            return;
        wait_over(s);
        nick_unreserve(s);
        reply(s, "*** Error: out of memory.");
        return;
    }
    nick_done(s, name);
}

/* "*** 3 users in lobby: a, b, c", continued on further "*** " lines when long;
 * names holds the first shown of n. */
static void who_reply(chat_session *s, const char (*names)[CHAT_NICK_MAX + 1], unsigned shown,
                      unsigned n, const char *where)
{
    char line[512];
    size_t len = (size_t)snprintf(line, sizeof(line), "%u user%s in %s%s: ", n,
                                  n == 1 ? "" : "s", chat_room_name(s->room), where);
    size_t start = len;
    for (unsigned i = 0; i < shown; i++) {
        if (len + strlen(names[i]) + 2 > 400) {
            reply(s, "*** %.*s", (int)len, line);
            len = start = 0;
        }
        len += (size_t)snprintf(line + len, sizeof(line) - len, "%s%s", len > start ? ", " : "",
                                names[i]);
    }
    if (n > shown)
        len += (size_t)snprintf(line + len, sizeof(line) - len, " and %u more", n - shown);
    reply(s, "*** %.*s", (int)len, line);
}

enum { WHO_SHOWN = 200 };

/* This server's members of the session's room. */
static void who_local(chat_session *s, const char *where)
{
    const char *names[WHO_SHOWN];
    pthread_mutex_lock(&registry_lock);
    unsigned n = chat_room_nicks(s->room, names, WHO_SHOWN);
    unsigned shown = n < WHO_SHOWN ? n : WHO_SHOWN;
    /* Copy the names out while their owners cannot rename. */
    char (*copy)[CHAT_NICK_MAX + 1] = malloc((shown ? shown : 1) * sizeof(*copy));
    for (unsigned i = 0; copy && i < shown; i++)
        strcpy(copy[i], names[i]);
    pthread_mutex_unlock(&registry_lock);
    if (!copy) {
        reply(s, "*** Error: out of memory.");
        return;
    }
    who_reply(s, (const char (*)[CHAT_NICK_MAX + 1])copy, shown, n, where);
    free(copy);
}

static int by_name(const void *a, const void *b)
{
    return strcasecmp(*(char *const *)a, *(char *const *)b);
}

/* The cluster's answer: "NAME\tROOM" of every member of the room, on every server. */
static void who_listed(chat_session *s, const cluster_answer *a)
{
    wait_over(s);
    if (a->status != 1) {
        who_local(s, " (this server only: the cluster is not answering)");
        return;
    }
    unsigned n = a->nitems > UINT_MAX ? UINT_MAX : (unsigned)a->nitems;
    unsigned shown = n < WHO_SHOWN ? n : WHO_SHOWN;
    char (*names)[CHAT_NICK_MAX + 1] = malloc((shown ? shown : 1) * sizeof(*names));
    char **sorted = malloc((n ? n : 1) * sizeof(*sorted));
    if (!names || !sorted) {
        free(names);
        free(sorted);
        reply(s, "*** Error: out of memory.");
        return;
    }
    for (unsigned i = 0; i < n; i++)
        sorted[i] = a->items[i];
    qsort(sorted, n, sizeof(*sorted), by_name);
    for (unsigned i = 0; i < shown; i++) {
        size_t len = strcspn(sorted[i], "\t");
        snprintf(names[i], sizeof(names[i]), "%.*s", (int)len, sorted[i]);
    }
    who_reply(s, (const char (*)[CHAT_NICK_MAX + 1])names, shown, n, "");
    free(sorted);
    free(names);
}

static void cmd_who(chat_session *s)
{
    if (cluster_up()) {
        wait_for_cluster(s);
        if (cluster_list(s->stream, chat_room_name(s->room), who_listed) == 0)
            return;
        wait_over(s);
    }
    who_local(s, cluster_enabled() ? " (this server only: the cluster is not answering)" : "");
}

/* The cluster's answer to a private message for another server's user. */
static void msg_sent(chat_session *s, const cluster_answer *a)
{
    wait_over(s);
    if (a->status == 1) {
        px_buf *echo = chat_fmt("[PM to %s] %s", a->text, s->pending_text);
        if (echo) {
            chat_send(s, echo);
            px_buf_release(echo);
        }
    } else if (a->status == 0) {
        reply(s, "*** Error: no user named %s.", s->pending_name);
    } else {
        reply(s, "*** Error: the cluster did not answer; your message to %s may not have "
                 "been delivered.", s->pending_name);
    }
    free(s->pending_text);
    s->pending_text = NULL;
}

static void cmd_msg(chat_session *s, const chat_cmd *c)
{
    if (!c->target_len || !c->arg_len) {
        reply(s, "*** Error: usage: /msg NICK TEXT");
        return;
    }
    px_buf *pm = chat_fmt("[PM from %s] %.*s", s->nick, (int)c->arg_len, c->arg);
    if (!pm) {
        reply(s, "*** Error: out of memory; your message was not sent.");
        return;
    }
    char name[CHAT_NICK_MAX + 1] = "";
    int rc = -ENOENT;
    if (c->target_len <= CHAT_NICK_MAX) {
        /* Sent under the lock: the target cannot be freed meanwhile, and a
         * send only appends to its queue. */
        pthread_mutex_lock(&registry_lock);
        nick_entry *e = *nick_find(c->target, c->target_len);
        if (e && !e->reserved) {
            strcpy(name, e->s->nick);
            rc = chat_send(e->s, pm);
        }
        pthread_mutex_unlock(&registry_lock);
    }
    if (rc == -ENOENT && c->target_len <= CHAT_NICK_MAX && cluster_up()) {
        /* Not here: perhaps on another server. */
        char *text = malloc(c->arg_len + 1);
        if (text) {
            memcpy(text, c->arg, c->arg_len);
            text[c->arg_len] = '\0';
            free(s->pending_text);
            s->pending_text = text;
            memcpy(s->pending_name, c->target, c->target_len);
            s->pending_name[c->target_len] = '\0';
            wait_for_cluster(s);
            if (cluster_msg(s->stream, s->pending_name, pm, msg_sent) == 0) {
                px_buf_release(pm);
                return;
            }
            wait_over(s);
        }
        px_buf_release(pm);
        reply(s, "*** Error: out of memory; your message was not sent.");
        return;
    }
    px_buf_release(pm);
    if (rc == -ENOENT) {
        reply(s, "*** Error: no user named %.*s.",
              cut(c->target, c->target_len, 32), c->target);
        return;
    }
    if (rc == 0) {
        px_buf *echo = chat_fmt("[PM to %s] %.*s", name, (int)c->arg_len, c->arg);
        if (echo) {
            chat_send(s, echo);
            px_buf_release(echo);
        }
    }
    else
        reply(s, "*** Error: %s could not take your message.", name);
}

static void join(chat_session *s, const char *name);
static void joined(chat_session *s, const cluster_answer *a);

static void cmd_join(chat_session *s, const chat_cmd *c)
{
    char name[CHAT_ROOM_MAX + 1];
    if (!c->target_len || c->arg_len) {
        reply(s, "*** Error: usage: /join ROOM");
        return;
    }
    if (!chat_room_norm(c->target, c->target_len, name)) {
        reply(s, "*** Error: '%.*s' is not a valid room name: 1 to 24 letters, digits, _ or -.",
              cut(c->target, c->target_len, 32), c->target);
        return;
    }
    if (strcmp(name, chat_room_name(s->room)) == 0) {
        reply(s, "*** You are already in %s.", name);
        return;
    }
    if (cluster_up()) {
        /* Every server's lists say where it is before it is there. */
        strcpy(s->pending_room, name);
        wait_for_cluster(s);
        if (cluster_move(s->stream, s->nick, name, joined) == 0)
            return;
        wait_over(s);
    }
    join(s, name);
}

static void join(chat_session *s, const char *name)
{
    /* Leave, then enter: a session is a member of one room at a time, which
     * is what lets it keep a single position (room_idx). */
    px_buf *notice = chat_fmt("*** %s has left for %s.", s->nick, name);
    chat_room_leave(s->room, s, notice);
    px_buf_release(notice);
    s->room = chat_room_enter(name, s, true);
    if (!s->room) {
        reply(s, "*** Error: out of memory; back to %s.", CHAT_LOBBY);
        s->room = chat_room_enter(CHAT_LOBBY, s, true);
    }
    if (!s->room) {
        chat_set_reason(s, "out of memory");
        px_stream_abort(s->stream);
        return;
    }
    pthread_mutex_lock(&registry_lock);
    strcpy(s->where, chat_room_name(s->room));
    pthread_mutex_unlock(&registry_lock);
}

/* The cluster's lists have the session in its new room (or Redis is unreachable:
 * written anew at reconnection). */
static void joined(chat_session *s, const cluster_answer *a)
{
    (void)a;
    wait_over(s);
    join(s, s->pending_room);
}

typedef struct room_count {
    const char *name; /* inside an answer's item, after the tab */
    unsigned n;
} room_count;

static int by_room(const void *a, const void *b)
{
    return strcmp(((const room_count *)a)->name, ((const room_count *)b)->name);
}

/* The cluster's answer: "NAME\tROOM" of every user on every server. */
static void rooms_listed(chat_session *s, const cluster_answer *a)
{
    wait_over(s);
    if (a->status != 1) {
        char list[480];
        unsigned n = chat_rooms_list(list, sizeof(list));
        reply(s, "*** %u room%s (this server only: the cluster is not answering): %s", n,
              n == 1 ? "" : "s", list);
        return;
    }
    room_count *rooms = malloc((a->nitems ? a->nitems : 1) * sizeof(*rooms));
    if (!rooms) {
        reply(s, "*** Error: out of memory.");
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < a->nitems; i++) {
        const char *tab = strchr(a->items[i], '\t');
        if (tab)
            rooms[n++] = (room_count){.name = tab + 1, .n = 1};
    }
    qsort(rooms, n, sizeof(*rooms), by_room);
    size_t distinct = 0;
    for (size_t i = 0; i < n; i++) {
        if (distinct && strcmp(rooms[distinct - 1].name, rooms[i].name) == 0)
            rooms[distinct - 1].n++;
        else
            rooms[distinct++] = rooms[i];
    }
    char list[480];
    size_t len = 0;
    list[0] = '\0';
    for (size_t i = 0; i < distinct && chat_rooms_append(list, sizeof(list), &len,
                                                         rooms[i].name, rooms[i].n); i++)
        ;
    reply(s, "*** %zu room%s: %s", distinct, distinct == 1 ? "" : "s", list);
    free(rooms);
}

static void cmd_rooms(chat_session *s)
{
    if (cluster_up()) {
        wait_for_cluster(s);
        if (cluster_list(s->stream, NULL, rooms_listed) == 0)
            return;
        wait_over(s);
    }
    char list[480];
    unsigned n = chat_rooms_list(list, sizeof(list));
    reply(s, "*** %u room%s%s: %s", n, n == 1 ? "" : "s",
          cluster_enabled() ? " (this server only: the cluster is not answering)" : "", list);
}

static void cmd_quit(chat_session *s, const chat_cmd *c)
{
    if (c->arg_len)
        snprintf(s->quit_msg, sizeof(s->quit_msg), "quit: %.*s",
                 cut(c->arg, c->arg_len, 100), c->arg);
    else
        strcpy(s->quit_msg, "quit");
    chat_set_reason(s, s->quit_msg);
    reply(s, "*** Bye.");
    px_stream_close(s->stream);
}

static void say(chat_session *s, const char *text, size_t len, bool action)
{
    px_buf *msg = action ? chat_fmt("* %s %.*s", s->nick, (int)len, text)
                         : chat_fmt("<%s> %.*s", s->nick, (int)len, text);
    if (!msg) {
        reply(s, "*** Error: out of memory; your message was not sent.");
        return;
    }
    if (!cluster_enabled()) {
        chat_room_send(s->room, action ? NULL : s, msg, true);
    } else {
        /* Delivered here, too, only when it comes back from Redis: one order for all. */
        int rc = cluster_publish(chat_room_name(s->room), action ? 0 : s->id, s->stream, msg,
                                 true);
        if (rc == -EAGAIN)
            reply(s, "*** Error: the cluster is too slow right now; your message was not sent.");
        else if (rc)
            reply(s, "*** Error: out of memory; your message was not sent.");
    }
    px_buf_release(msg);
    if (srv_log_enabled(SRV_LOG_DEBUG))
        srv_log(SRV_LOG_DEBUG, "%s <%s> %.*s", chat_room_name(s->room), s->nick, (int)len, text);
}

static void chat_line(chat_session *s, const char *line, size_t len)
{
    char *clean = malloc(CHAT_SANITIZE_MAX(len) + 1);
    if (!clean) {
        reply(s, "*** Error: out of memory; your message was not sent.");
        return;
    }
    chat_cmd c;
    if (!chat_line_parse(line, len, clean, &c)) {
        free(clean);
        return; /* nothing left to say */
    }
    switch (c.kind) {
    case CHAT_CMD_MESSAGE: say(s, c.arg, c.arg_len, false); break;
    case CHAT_CMD_ME:
        if (c.arg_len)
            say(s, c.arg, c.arg_len, true);
        else
            reply(s, "*** Error: usage: /me ACTION");
        break;
    case CHAT_CMD_NICK: cmd_nick(s, &c); break;
    case CHAT_CMD_WHO: cmd_who(s); break;
    case CHAT_CMD_MSG: cmd_msg(s, &c); break;
    case CHAT_CMD_JOIN: cmd_join(s, &c); break;
    case CHAT_CMD_ROOMS: cmd_rooms(s); break;
    case CHAT_CMD_QUIT: cmd_quit(s, &c); break;
    case CHAT_CMD_HELP: cmd_help(s); break;
    case CHAT_CMD_UNKNOWN:
        reply(s, "*** Unknown command '/%.*s'. Type /help for commands.",
              cut(c.name, c.name_len, 32), c.name);
        break;
    }
    free(clean);
}

/* ------------------------------------------------------------------------ */
/* Handlers                                                                  */

/* The client is welcome: into the lobby, with its name. */
static void admit(chat_session *s)
{
    px_stream *st = s->stream;
    pthread_mutex_lock(&registry_lock);
    unsigned online = nsessions; /* counting those still being welcomed, as at the door */
    pthread_mutex_unlock(&registry_lock);
    if (!cfg->raw)
        reply(s, "*** Welcome to st_proactor, %s! %u user%s online. Type /help for commands.",
              s->nick, online, online == 1 ? "" : "s");
    s->room = chat_room_enter(CHAT_LOBBY, s, !cfg->raw);
    online = registry_publish(s);
    /* After publishing: from now on chat_notice_all reaches it too (at worst twice). */
    if (cluster_enabled() && !cluster_up())
        reply(s, "%s", CLUSTER_DOWN_NOTICE);
    px_stream_set_user(st, s);
    if (!s->room || atomic_load(&s->reason)) {
        chat_set_reason(s, "out of memory");
        px_stream_abort(st);
    }
    srv_log(SRV_LOG_INFO, "connected %s as %s (%u online)", s->addr, s->nick, online);
}

/* The cluster's answer to "a guest name, please". */
static void guest_named(chat_session *s, const cluster_answer *a)
{
    wait_over(s);
    if (a->status == 1) {
        pthread_mutex_lock(&registry_lock);
        bool here = *nick_find(a->text, strlen(a->text)) != NULL;
        if (!here)
            snprintf(s->nick, sizeof(s->nick), "%s", a->text);
        pthread_mutex_unlock(&registry_lock);
        if (here) /* given here while Redis was unreachable: keep this server's name */
            cluster_left(a->text);
    }
    admit(s);
}

static void on_open(px_stream *st, void *user)
{
    (void)user;
    chat_session *s = calloc(1, sizeof(*s));
    if (!s || chat_framer_init(&s->framer, cfg->max_line, !cfg->raw) != 0) {
        free(s);
        srv_log(SRV_LOG_ERROR, "out of memory: refusing a client");
        px_stream_abort(st);
        return;
    }
    s->stream = st;
    if (px_stream_peer(st, s->addr, sizeof(s->addr)) < 0)
        strcpy(s->addr, "?");
    s->tokens = cfg->flood_burst;
    s->tokens_ms = px_now_ms();
    atomic_store(&s->last_active_ms, s->tokens_ms);
    unsigned online;
    int rc = registry_add(s, &online);
    if (rc) {
        if (rc == -EUSERS) {
            if (!cfg->raw)
                reply(s, "*** Server full (%u clients), try again later.", cfg->max_clients);
            srv_log(SRV_LOG_INFO, "refused %s: server full (%u clients)", s->addr, online);
        } else if (!cfg->raw) {
            reply(s, "*** Server shutting down.");
        }
        chat_framer_free(&s->framer);
        px_stream_close(st);
        free(s);
        return;
    }
    if (cluster_up()) {
        /* A guest name unique in the whole cluster; the welcome waits for it. */
        px_stream_set_user(st, s);
        wait_for_cluster(s);
        if (cluster_claim(st, NULL, CHAT_LOBBY, NULL, guest_named) == 0)
            return;
        wait_over(s);
    }
    admit(s);
}

/* Takes one line's worth of flood tokens; returns how long the client must
 * wait before its next line (0: within the limit). */
static uint64_t flood_charge(chat_session *s)
{
    if (!cfg->flood_rate)
        return 0;
    uint64_t now = px_now_ms();
    s->tokens += (double)(now - s->tokens_ms) * cfg->flood_rate / 1000.0;
    if (s->tokens > cfg->flood_burst)
        s->tokens = cfg->flood_burst;
    s->tokens_ms = now;
    s->tokens -= 1.0;
    if (s->tokens >= 0)
        return 0;
    return (uint64_t)(-s->tokens * 1000.0 / cfg->flood_rate) + 1;
}

/* --raw relays the complete lines of one read as one buffer: one queue entry and one
 * reference per recipient for the whole read instead of one per line (the lines stay
 * whole and in order, and the room's one order is kept, since the batch is queued to every
 * member under the room's lock like a single line). */
typedef struct raw_batch {
    char *p;
    size_t len, cap;
} raw_batch;

static void free_batch(const void *data, void *ctx)
{
    (void)ctx;
    free((void *)data);
}

static void raw_flush(chat_session *s, raw_batch *b)
{
    px_buf *buf;
    if (b->len && b->cap - b->len > b->len / 8) { /* queues hold it: no slack */
        char *p = realloc(b->p, b->len);
        if (p)
            b->p = p;
    }
    if (b->len && s->room && px_buf_wrap(&buf, b->p, b->len, free_batch, NULL) == 0) {
        chat_room_send(s->room, s, buf, false);
        px_buf_release(buf); /* frees b->p with the last reference */
    } else {
        free(b->p);
    }
    *b = (raw_batch){0};
}

static void raw_add(chat_session *s, raw_batch *b, const char *line, size_t n)
{
    /* A batch larger than a reader's queue would be refused whole and drop that
     * reader as too slow even with its queue empty: send what is batched before it
     * passes half the bound (with the pool, the loop writes the first part while the
     * rest is being framed). */
    if (b->len && b->len + n > cfg->sendq / 2)
        raw_flush(s, b);
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap - b->len < n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { /* out of memory: what is batched goes now, this line on its own */
            px_buf *one;
            raw_flush(s, b);
            if (s->room && px_buf_new(&one, line, n) == 0) {
                chat_room_send(s->room, s, one, false);
                px_buf_release(one);
            }
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, line, n);
    b->len += n;
}

static void on_data(px_stream *st, const char *bytes, size_t len, void *user)
{
    chat_session *s = user;
    if (s && s->waiting) { /* still waiting for the cluster: later */
        if (px_now_ms() >= s->wait_until_ms) { /* its answer was lost (out of memory) */
            chat_set_reason(s, "no answer from the cluster");
            px_stream_abort(st);
            return;
        }
        if (px_stream_keep(st, len) != 0) {
            chat_set_reason(s, "out of memory");
            px_stream_abort(st);
        }
        px_stream_pause(st, s->wait_until_ms - px_now_ms());
        return;
    }
    if (!s || !s->room)
        return;
    atomic_store(&s->last_active_ms, px_now_ms());
    chat_frame_out out = {0};
    raw_batch batch = {0};
    /* Stop at once when the session is leaving (/quit, dropped as too slow,
     * out of memory): nothing it sent after that may reach anyone. */
    while (len && s->room && !s->waiting && !atomic_load(&s->reason)) {
        size_t used = chat_frame_feed(&s->framer, bytes, len, &out);
        bytes += used;
        len -= used;
        if (out.reply_len) {
            send_bytes(s, out.reply, out.reply_len);
            out.reply_len = 0;
        }
        switch (out.kind) {
        case CHAT_FRAME_NONE:
            break;
        case CHAT_FRAME_TOO_LONG:
            if (cfg->raw)
                reply(s, "Error: line too long (max %zu bytes)", cfg->max_line);
            else
                reply(s, "*** Error: line too long (max %zu bytes); it was not sent.",
                      cfg->max_line);
            break;
        case CHAT_FRAME_LINE: {
            uint64_t wait = flood_charge(s);
            if (wait)
                s->read_after_ms = px_now_ms() + wait;
            if (wait && len) {
                /* Over the rate: this line goes out, the rest of the chunk
                 * comes back after the pause, and meanwhile the socket is
                 * not read, so TCP slows the sender.  Nothing is dropped. */
                if (px_stream_keep(st, len) == 0)
                    len = 0;
                px_stream_pause(st, wait); /* also when keep failed: the limit holds */
            } else if (wait) {
                px_stream_pause(st, wait);
            }
            if (cfg->raw) {
                if (out.len)
                    raw_add(s, &batch, out.line, out.len);
            } else {
                chat_line(s, out.line, out.len);
                /* A question to the cluster: the rest waits for its answer. */
                if (s->waiting && len && px_stream_keep(st, len) != 0) {
                    chat_set_reason(s, "out of memory");
                    px_stream_abort(st);
                }
            }
            break;
        }
        }
    }
    raw_flush(s, &batch); /* lines accepted before any reason to stop still go out */
    chat_framer_trim(&s->framer); /* an idle client keeps no line buffer */
}

static const char *close_reason(chat_session *s, int cause)
{
    const char *r = atomic_load(&s->reason);
    if (r)
        return r;
    switch (cause) {
    case 0: return "connection closed";
    case -ECONNRESET: return "connection reset";
    case -ETIMEDOUT: return "timed out";
    case -ECANCELED: return "server shutting down";
    default: return px_strerror(cause);
    }
}

static bool shutdown_now(void)
{
    pthread_mutex_lock(&registry_lock);
    bool now = shutting_down;
    pthread_mutex_unlock(&registry_lock);
    return now;
}

static void on_close(px_stream *st, int cause, void *user)
{
    chat_session *s = user;
    if (!s)
        return;
    const char *why = close_reason(s, cause);
    if (s->room) {
        px_buf *notice = NULL;
        if (!cfg->raw && !shutdown_now())
            notice = chat_fmt("*** %s has left (%s).", s->nick, why);
        chat_room_leave(s->room, s, notice);
        px_buf_release(notice);
    }
    /* At shutdown the cluster module announces and removes every user at once. */
    if (s->published && cluster_enabled() && !shutdown_now())
        cluster_left(s->nick);
    free(s->pending_text);
    px_loop *stop = NULL;
    unsigned online = registry_del(s, &stop);
    srv_log(SRV_LOG_INFO, "disconnected %s (%s) (%u online): %s", s->addr, s->nick, online, why);
    px_stream_set_user(st, NULL);
    chat_framer_free(&s->framer);
    free(s);
    if (stop)
        px_loop_stop(stop);
}

const px_stream_handlers chat_session_handlers = {
    .on_open = on_open,
    .on_data = on_data,
    .on_close = on_close,
};

/* ------------------------------------------------------------------------ */
/* Server-wide                                                               */

/* Closes every session (or those idle since before idle_before), gracefully,
 * after a last line (chat mode only).  Returns how many there were. */
static unsigned dismiss(uint64_t idle_before, const char *reason, const char *last_line,
                        unsigned max)
{
    unsigned n;
    px_stream **who = collect(idle_before, reason, max, &n);
    px_buf *bye = n && !cfg->raw ? chat_fmt("%s", last_line) : NULL;
    /* Everyone at once: room by room under each room's lock, so that a line being
     * relayed right now reaches all of its room or nobody; then anyone not in a room. */
    if (!idle_before)
        chat_rooms_close_all(bye);
    for (unsigned i = 0; who && i < n; i++) {
        if (bye)
            px_stream_send(who[i], bye);
        px_stream_close(who[i]);
        px_stream_release(who[i]);
    }
    px_buf_release(bye);
    free(who);
    return n;
}

void chat_notice_all(const char *text)
{
    if (cfg->raw)
        return;
    px_buf *b = chat_fmt("%s", text);
    if (!b)
        return;
    pthread_mutex_lock(&registry_lock);
    for (chat_session *s = sessions; s; s = s->next)
        if (s->published)
            chat_send(s, b);
    pthread_mutex_unlock(&registry_lock);
    px_buf_release(b);
}

/* Closing a TCP connection costs the loop thread tens of microseconds of kernel time:
 * 10,000 idle clients timed out at once would hold up everyone else's lines for a
 * second.  So a sweep closes at most IDLE_BATCH of them and leaves the rest to the
 * loop's next pass, after it has served what arrived meanwhile. */
#define IDLE_BATCH 256

static void idle_sweep(void *loop)
{
    if (!idle_timer)
        return; /* shutting down: everyone is being dismissed anyway */
    uint64_t now = px_now_ms(), limit = (uint64_t)cfg->idle_timeout * 1000;
    if (now > limit &&
        dismiss(now - limit, "idle timeout", "*** Idle timeout.", IDLE_BATCH) == IDLE_BATCH)
        px_loop_post(loop, idle_sweep, loop); /* more, after the loop's next pass */
}

static void idle_check(px_timer *t, void *loop)
{
    (void)t;
    idle_sweep(loop);
}

int chat_init(const srv_config *config, px_loop *loop)
{
    cfg = config;
    nick_buckets = 256;
    nicks = calloc(nick_buckets, sizeof(*nicks));
    if (!nicks)
        return -ENOMEM;
    chat_rooms_init(cfg->raw ? 0 : cfg->history, cfg->sendq / 2, cfg->announce_max);
    if (cfg->idle_timeout) {
        uint64_t period = cfg->idle_timeout >= 4 ? 1000 : 250;
        if (px_timer_start(loop, &idle_timer, period, period, idle_check, loop) != 0)
            srv_log(SRV_LOG_ERROR, "out of memory: idle timeouts are off");
    }
    return 0;
}

unsigned chat_shutdown(px_loop *loop)
{
    if (idle_timer)
        px_timer_cancel(idle_timer);
    idle_timer = NULL;
    pthread_mutex_lock(&registry_lock);
    shutting_down = true;
    stop_when_empty = loop;
    pthread_mutex_unlock(&registry_lock);
    return dismiss(0, "server shutting down", "*** Server shutting down.", UINT_MAX);
}

void chat_fini(void)
{
    idle_timer = NULL; /* cancelled by chat_shutdown, or dropped with the loop */
    chat_rooms_fini();
    for (unsigned i = 0; nicks && i < nick_buckets; i++) {
        for (nick_entry *e = nicks[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(nicks);
    nicks = NULL;
}
