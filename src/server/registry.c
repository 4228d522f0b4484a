/*
 * The registry: every session of this server, the names they are reached by, the
 * client count (--max-clients) and the server's closing.  A session's life is core.c's,
 * what its lines do commands.c's, rooms room.c's.
 */
#include "chat.h"
#include "strmap.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A name (its key: chat_name_key, so look-alikes collide) and who has it. */
typedef struct nick_entry {
    chat_strmap_node node;
    char key[CHAT_NAME_KEY_MAX + 1];
    chat_session *s;
    bool hidden; /* a rename under way: nobody can take it, nobody reaches it */
} nick_entry;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static chat_session *sessions;
static unsigned nsessions; /* clients holding a place (--max-clients) */
static unsigned nonline;   /* of which in their room and reachable by name */
static chat_strmap nicks;
static unsigned long guest_seq;
static unsigned max_clients; /* 0: no limit */
static bool closing;
static px_loop *stop_when_empty;

int chat_registry_init(unsigned max)
{
    max_clients = max;
    return chat_strmap_init(&nicks, 256);
}

void chat_registry_fini(void)
{
    /* Names go with their sessions; a session that never closed (the loop was
     * destroyed first) leaves its entry here. */
    for (unsigned i = 0; i < nicks.nbuckets; i++) {
        for (chat_strmap_node *n = nicks.buckets[i], *next; n; n = next) {
            next = n->next;
            free(n);
        }
    }
    chat_strmap_fini(&nicks);
}

/* Under registry_lock. */
static nick_entry *nick_find(const char *name, size_t len)
{
    char key[CHAT_NAME_KEY_MAX + 1];
    chat_name_key(name, len, key);
    return (nick_entry *)*chat_strmap_slot(&nicks, key);
}

static int nick_add(const char *name, size_t len, chat_session *s, bool hidden)
{
    nick_entry *e = malloc(sizeof(*e));
    if (!e)
        return -ENOMEM;
    chat_name_key(name, len, e->key);
    if (*chat_strmap_slot(&nicks, e->key)) {
        free(e);
        return -EEXIST;
    }
    e->node.key = e->key;
    e->s = s;
    e->hidden = hidden;
    chat_strmap_insert(&nicks, &e->node);
    return 0;
}

/* Removes name if s holds it. */
static void nick_del(const char *name, const chat_session *s)
{
    char key[CHAT_NAME_KEY_MAX + 1];
    chat_name_key(name, strlen(name), key);
    chat_strmap_node **slot = chat_strmap_slot(&nicks, key);
    nick_entry *e = (nick_entry *)*slot;
    if (e && e->s == s) {
        chat_strmap_remove(&nicks, slot);
        free(e);
    }
}

int chat_registry_add(chat_session *s, unsigned *count)
{
    pthread_mutex_lock(&registry_lock);
    int rc = 0;
    if (closing) {
        rc = -ESHUTDOWN;
    } else if (max_clients && nsessions >= max_clients) {
        rc = -EUSERS;
    } else {
        /* Users cannot pick guest names, so the counter gives unique ones.  The name
         * is published (chat_registry_publish) once the client has its welcome, so no
         * private message can come before it. */
        snprintf(s->nick, sizeof(s->nick), "guest%lu", ++guest_seq);
        s->id = guest_seq; /* also counts every session ever: unique */
        s->next = sessions;
        s->prev = NULL;
        if (sessions)
            sessions->prev = s;
        sessions = s;
        nsessions++;
    }
    *count = nsessions;
    pthread_mutex_unlock(&registry_lock);
    return rc;
}

unsigned chat_registry_publish(chat_session *s)
{
    pthread_mutex_lock(&registry_lock);
    int rc;
    /* A guest name is unique here unless the bus gave it while this server had given
     * it itself, when the other servers were unreachable: then another one. */
    while ((rc = nick_add(s->nick, strlen(s->nick), s, false)) == -EEXIST)
        snprintf(s->nick, sizeof(s->nick), "guest%lu", ++guest_seq);
    if (rc)
        chat_set_reason(s, "out of memory");
    snprintf(s->where, sizeof(s->where), "%s", s->room ? chat_room_name(s->room) : CHAT_LOBBY);
    s->published = true;
    unsigned online = ++nonline;
    pthread_mutex_unlock(&registry_lock);
    return online;
}

unsigned chat_registry_del(chat_session *s, px_loop **stop)
{
    pthread_mutex_lock(&registry_lock);
    if (s->published) /* before that, its name was not in the table (nor was it its own) */
        nick_del(s->nick, s);
    if (s->reserved[0])
        nick_del(s->reserved, s);
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

int chat_registry_reserve(chat_session *s, const char *name)
{
    size_t len = strlen(name);
    int rc = 0;
    pthread_mutex_lock(&registry_lock);
    /* The old name stays until the rename is done; a new spelling of the same name
     * needs no second entry. */
    if (!chat_name_alike(s->nick, strlen(s->nick), name, len))
        rc = nick_add(name, len, s, true);
    if (rc == 0)
        snprintf(s->reserved, sizeof(s->reserved), "%s", name);
    pthread_mutex_unlock(&registry_lock);
    return rc;
}

void chat_registry_rename(chat_session *s, char old[CHAT_NICK_MAX + 1])
{
    strcpy(old, s->nick);
    pthread_mutex_lock(&registry_lock);
    nick_entry *e = nick_find(s->reserved, strlen(s->reserved));
    if (e && e->s == s)
        e->hidden = false; /* reachable under its new name from now on */
    if (!chat_name_alike(old, strlen(old), s->reserved, strlen(s->reserved)))
        nick_del(old, s);
    strcpy(s->nick, s->reserved);
    s->reserved[0] = '\0';
    pthread_mutex_unlock(&registry_lock);
}

void chat_registry_unreserve(chat_session *s)
{
    pthread_mutex_lock(&registry_lock);
    if (s->reserved[0] && !chat_name_alike(s->nick, strlen(s->nick), s->reserved,
                                        strlen(s->reserved)))
        nick_del(s->reserved, s);
    s->reserved[0] = '\0';
    pthread_mutex_unlock(&registry_lock);
}

bool chat_registry_take_guest(chat_session *s, const char *name)
{
    pthread_mutex_lock(&registry_lock);
    bool free_here = !nick_find(name, strlen(name));
    if (free_here)
        snprintf(s->nick, sizeof(s->nick), "%s", name);
    pthread_mutex_unlock(&registry_lock);
    return free_here;
}

void chat_registry_where(chat_session *s)
{
    pthread_mutex_lock(&registry_lock);
    snprintf(s->where, sizeof(s->where), "%s", s->room ? chat_room_name(s->room) : CHAT_LOBBY);
    pthread_mutex_unlock(&registry_lock);
}

unsigned chat_registry_count(void)
{
    pthread_mutex_lock(&registry_lock);
    unsigned n = nsessions;
    pthread_mutex_unlock(&registry_lock);
    return n;
}

unsigned chat_online(void)
{
    pthread_mutex_lock(&registry_lock);
    unsigned n = nonline;
    pthread_mutex_unlock(&registry_lock);
    return n;
}

void chat_census(unsigned *nsess, unsigned *names, unsigned *rooms)
{
    pthread_mutex_lock(&registry_lock);
    *nsess = nsessions;
    *names = nicks.count;
    pthread_mutex_unlock(&registry_lock);
    *rooms = chat_rooms_count();
}

bool chat_registry_closing(void)
{
    pthread_mutex_lock(&registry_lock);
    bool now = closing;
    pthread_mutex_unlock(&registry_lock);
    return now;
}

void chat_registry_close(px_loop *stop)
{
    pthread_mutex_lock(&registry_lock);
    closing = true;
    stop_when_empty = stop;
    pthread_mutex_unlock(&registry_lock);
}

chat_session **chat_registry_collect(uint64_t idle_before, const char *reason, unsigned max,
                                     unsigned *count)
{
    pthread_mutex_lock(&registry_lock);
    unsigned cap = nsessions < max ? nsessions : max;
    chat_session **out = malloc((cap ? cap : 1) * sizeof(*out));
    unsigned n = 0;
    for (chat_session *s = sessions; out && s && n < cap; s = s->next) {
        if (idle_before) {
            if (s->idle_kicked || atomic_load(&s->last_active_ms) >= idle_before)
                continue;
            s->idle_kicked = true;
        }
        /* Set here, under the lock: once it is released the session may close. */
        chat_set_reason(s, reason);
        out[n++] = chat_session_retain(s);
    }
    pthread_mutex_unlock(&registry_lock);
    *count = n;
    return out;
}

/* ------------------------------------------------------------------------ */
/* For buses                                                                 */

void chat_presence_each(void (*fn)(const char *name, const char *room, void *ctx), void *ctx)
{
    pthread_mutex_lock(&registry_lock);
    for (chat_session *s = sessions; s; s = s->next) {
        if (s->published)
            fn(s->nick, s->where, ctx);
    }
    pthread_mutex_unlock(&registry_lock);
}

chat_bus_status chat_tell(const char *name, size_t len, chat_event *ev,
                          char shown[CHAT_NICK_MAX + 1])
{
    if (len > CHAT_NICK_MAX)
        return CHAT_BUS_REFUSED;
    chat_bus_status st = CHAT_BUS_REFUSED;
    /* Sent under the lock: the session cannot be freed meanwhile, and a send only
     * appends to its queue. */
    pthread_mutex_lock(&registry_lock);
    nick_entry *e = nick_find(name, len);
    if (e && !e->hidden) {
        if (shown)
            strcpy(shown, e->s->nick);
        st = chat_send_event(e->s, ev) == 0 ? CHAT_BUS_DONE : CHAT_BUS_FULL;
    }
    pthread_mutex_unlock(&registry_lock);
    return st;
}

void chat_notice_all(const char *text)
{
    chat_event ev = {.kind = CHAT_EV_NOTICE, .text = text, .len = strlen(text)};
    pthread_mutex_lock(&registry_lock);
    for (chat_session *s = sessions; s; s = s->next)
        if (s->published)
            chat_send_event(s, &ev);
    pthread_mutex_unlock(&registry_lock);
    chat_event_clear(&ev);
}

chat_bus_user *chat_local_users(const char *room, size_t *n, char **owner)
{
    chat_bus_user *users = NULL;
    *owner = NULL;
    *n = 0;
    pthread_mutex_lock(&registry_lock); /* nicknames cannot change meanwhile */
    chat_room *r = chat_room_find(room);
    unsigned total = r ? chat_room_nicks(r, NULL, 0) : 0, got;
    const char **names = NULL;
    /* Members may come and go between the count and the copy: until it fits. */
    for (;;) {
        const char **more = realloc(names, (total ? total : 1) * sizeof(*names));
        if (!more)
            break;
        names = more;
        got = r ? chat_room_nicks(r, names, total) : 0;
        if (got <= total) {
            users = malloc((got ? got : 1) * sizeof(*users));
            *owner = malloc((size_t)(got ? got : 1) * (CHAT_NICK_MAX + 1));
            for (unsigned i = 0; users && *owner && i < got; i++) {
                char *p = *owner + (size_t)i * (CHAT_NICK_MAX + 1);
                strcpy(p, names[i]);
                users[i] = (chat_bus_user){.name = p, .room = room};
            }
            *n = got;
            break;
        }
        total = got;
    }
    pthread_mutex_unlock(&registry_lock);
    if (r)
        chat_room_put(r);
    free(names);
    if (!users || !*owner) {
        free(users);
        free(*owner);
        *owner = NULL;
        return NULL;
    }
    return users;
}
