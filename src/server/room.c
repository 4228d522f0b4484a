/*
 * Rooms: a table of rooms by name, each with its members, the last few events said
 * in it and one order for everything said in it.  An event is queued to every member
 * while the room's lock is held, so all members get the room's events in the same
 * order; it is formatted once per door kind, and sending only appends a reference to
 * each member's queue (the one copy is shared).
 */
#include "chat.h"
#include "strmap.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct chat_room {
    chat_strmap_node node; /* in the table, by name; under rooms_lock */
    char name[CHAT_ROOM_MAX + 1];
    unsigned refs; /* members and members-to-be; under rooms_lock */

    pthread_mutex_t lock;
    struct member {
        chat_session *s;     /* here too, not only in m: one pointer less per delivery */
        chat_membership *m;
    } *members;
    unsigned nmembers, cap;
    chat_event **hist; /* ring of the last hist_cap events */
    size_t *hist_size; /* what each holds, as counted against replay_max */
    unsigned hist_head, hist_len;
    size_t hist_bytes; /* in the ring: at most replay_max, the newest kept */
};

static pthread_mutex_t rooms_lock = PTHREAD_MUTEX_INITIALIZER;
static chat_strmap table;
static unsigned hist_cap;
static size_t replay_max;     /* bytes of history replayed to a newcomer */
static unsigned announce_max; /* join/leave notices only in rooms this small */
static const chat_bus *bus;

void chat_rooms_init(unsigned history, size_t replay_bytes, unsigned announce,
                     const chat_bus *via)
{
    bus = via;
    hist_cap = history;
    announce_max = announce;
    replay_max = replay_bytes;
    chat_strmap_init(&table, 64); /* without it, every room is refused */
}

void chat_rooms_fini(void)
{
    /* Every member has left by now: rooms go with their last member. */
    chat_strmap_fini(&table);
}

unsigned chat_rooms_count(void)
{
    pthread_mutex_lock(&rooms_lock);
    unsigned n = table.count;
    pthread_mutex_unlock(&rooms_lock);
    return n;
}

/* Finds or creates the room and takes a reference; under rooms_lock. */
static chat_room *room_get(const char *name)
{
    if (!table.nbuckets)
        return NULL;
    chat_room *r = (chat_room *)*chat_strmap_slot(&table, name);
    if (r) {
        r->refs++;
        return r;
    }
    r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    if (hist_cap && (!(r->hist = calloc(hist_cap, sizeof(*r->hist))) ||
                     !(r->hist_size = calloc(hist_cap, sizeof(*r->hist_size))))) {
        free(r->hist);
        free(r);
        return NULL;
    }
    snprintf(r->name, sizeof(r->name), "%s", name);
    r->node.key = r->name;
    pthread_mutex_init(&r->lock, NULL);
    r->refs = 1;
    chat_strmap_insert(&table, &r->node);
    return r;
}

chat_room *chat_room_find(const char *name)
{
    pthread_mutex_lock(&rooms_lock);
    chat_room *r = table.nbuckets ? (chat_room *)*chat_strmap_slot(&table, name) : NULL;
    if (r)
        r->refs++;
    pthread_mutex_unlock(&rooms_lock);
    return r;
}

/* The oldest event of the history goes; under r->lock. */
static void hist_drop_locked(chat_room *r)
{
    r->hist_bytes -= r->hist_size[r->hist_head];
    chat_event_free(r->hist[r->hist_head]);
    r->hist_head = (r->hist_head + 1) % hist_cap;
    r->hist_len--;
}

void chat_room_put(chat_room *r)
{
    pthread_mutex_lock(&rooms_lock);
    bool last = --r->refs == 0;
    if (last)
        chat_strmap_remove(&table, chat_strmap_slot(&table, r->name));
    pthread_mutex_unlock(&rooms_lock);
    if (!last)
        return;
    while (r->hist_len)
        hist_drop_locked(r);
    free(r->hist);
    free(r->hist_size);
    free(r->members);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

const char *chat_room_name(const chat_room *r) { return r->name; }

/* What ev holds, counted against replay_max: its longest formatted form.  One that
 * nobody received yet (its sender is alone in the room) is formatted for the door of
 * a member; r has one, since only a member says anything in it.  Under r->lock. */
static size_t event_size_locked(chat_room *r, chat_event *ev)
{
    size_t n = 0;
    for (unsigned k = 0; k < CHAT_DOOR_KINDS; k++)
        if (ev->as[k] && px_buf_len(ev->as[k]) > n)
            n = px_buf_len(ev->as[k]);
    px_buf *b;
    if (!n && r->nmembers && (b = chat_event_bytes(ev, r->members[0].s->door)))
        n = px_buf_len(b);
    return n ? n : ev->len;
}

/* Keeps a copy of ev in r's history; under r->lock. */
static void hist_add_locked(chat_room *r, chat_event *ev)
{
    if (!hist_cap)
        return;
    size_t size = event_size_locked(r, ev);
    chat_event *copy = chat_event_copy(ev);
    if (!copy)
        return; /* out of memory: newcomers miss this one */
    if (r->hist_len == hist_cap) /* the oldest makes room */
        hist_drop_locked(r);
    unsigned at = (r->hist_head + r->hist_len++) % hist_cap;
    r->hist[at] = copy;
    r->hist_size[at] = size;
    r->hist_bytes += size;
    /* Bytes bound it too: no more is kept than a replay could use, so long lines in
     * many rooms cannot pile up memory. */
    while (r->hist_bytes > replay_max && r->hist_len > 0)
        hist_drop_locked(r);
}

void chat_room_send(chat_room *r, uint64_t except, chat_event *ev, unsigned flags)
{
    if (!(flags & CHAT_PUB_LOCKED))
        pthread_mutex_lock(&r->lock);
    for (unsigned i = 0; i < r->nmembers; i++) {
        chat_session *s = r->members[i].s;
        if (s->id != except)
            chat_send_event(s, ev);
    }
    if (flags & CHAT_PUB_HISTORY)
        hist_add_locked(r, ev);
    if (!(flags & CHAT_PUB_LOCKED))
        pthread_mutex_unlock(&r->lock);
}

void chat_room_deliver(const char *name, uint64_t except, chat_event *ev, bool history)
{
    chat_room *r = chat_room_find(name);
    if (!r)
        return; /* nobody here is in that room */
    chat_room_send(r, except, ev, history ? CHAT_PUB_HISTORY : 0);
    chat_room_put(r);
}

void chat_notify(chat_room *r, chat_session *about, chat_event *ev, unsigned flags)
{
    /* A notice the bus cannot take now reaches this server's members at least. */
    uint64_t except = about ? about->id : 0;
    if (bus->publish(r, about, except, ev, flags) != 0)
        chat_room_send(r, except, ev, flags);
}

/* Under r->lock: "You are in", then the history, oldest first.  The history never
 * holds more than replay_max bytes, so a replay never fills the newcomer's queue. */
static void welcome_locked(chat_room *r, chat_session *s)
{
    unsigned n = r->nmembers + 1;
    chat_reply(s, "You are in %s (%u user%s).", r->name, n, n == 1 ? "" : "s");
    for (unsigned i = 0; i < r->hist_len; i++)
        chat_send_event(s, r->hist[(r->hist_head + i) % hist_cap]);
}

/* Room for one more member; under r->lock.  False when out of memory. */
static bool grow_locked(chat_room *r)
{
    if (r->nmembers < r->cap)
        return true;
    unsigned cap = r->cap ? r->cap * 2 : 8;
    struct member *more = realloc(r->members, cap * sizeof(*more));
    if (!more)
        return false;
    r->members = more;
    r->cap = cap;
    return true;
}

/* In a big room every join told to every member would cost n^2 sends (and memory
 * queued to members who do not read): notices only in rooms of at most announce_max,
 * counting the one who comes or goes.  Under r->lock, so that a notice falls exactly
 * where the change does in the room's order. */
static void announce_locked(chat_room *r, chat_session *about, chat_event *notice)
{
    if (notice && r->nmembers + 1 <= announce_max)
        chat_notify(r, about, notice, CHAT_PUB_LOCKED);
}

chat_room *chat_room_enter(const char *name, chat_session *s)
{
    pthread_mutex_lock(&rooms_lock);
    chat_room *r = room_get(name);
    pthread_mutex_unlock(&rooms_lock);
    chat_membership *m = r ? calloc(1, sizeof(*m)) : NULL;
    if (m) {
        pthread_mutex_lock(&r->lock);
        if (!grow_locked(r)) {
            pthread_mutex_unlock(&r->lock);
            free(m);
            m = NULL;
        }
    }
    if (!m) {
        if (r)
            chat_room_put(r);
        return NULL;
    }
    welcome_locked(r, s);
    chat_event notice = {.kind = CHAT_EV_JOIN, .from = s->nick, .room = r->name};
    announce_locked(r, s, &notice);
    *m = (chat_membership){.room = r, .idx = r->nmembers, .next = s->rooms};
    r->members[r->nmembers++] = (struct member){.s = s, .m = m};
    pthread_mutex_unlock(&r->lock);
    chat_event_clear(&notice);
    s->rooms = m;
    s->room = r;
    return r;
}

void chat_room_leave(chat_room *r, chat_session *s, chat_event *notice)
{
    chat_membership **pm = &s->rooms;
    while (*pm && (*pm)->room != r)
        pm = &(*pm)->next;
    chat_membership *m = *pm;
    if (!m)
        return;
    *pm = m->next;
    if (s->room == r)
        s->room = NULL;
    pthread_mutex_lock(&r->lock);
    if (m->idx < r->nmembers && r->members[m->idx].m == m) {
        struct member last = r->members[--r->nmembers];
        r->members[m->idx] = last;
        last.m->idx = m->idx;
    }
    announce_locked(r, NULL, notice);
    if (r->nmembers == 0 && r->cap > 8) {
        free(r->members);
        r->members = NULL;
        r->cap = 0;
    }
    pthread_mutex_unlock(&r->lock);
    free(m);
    chat_room_put(r);
}

unsigned chat_room_nicks(chat_room *r, const char **out, unsigned max)
{
    pthread_mutex_lock(&r->lock);
    unsigned n = r->nmembers;
    for (unsigned i = 0; i < n && i < max; i++)
        out[i] = r->members[i].s->nick;
    pthread_mutex_unlock(&r->lock);
    return n;
}

chat_bus_room *chat_local_rooms(size_t *n)
{
    pthread_mutex_lock(&rooms_lock);
    size_t count = table.count;
    chat_bus_room *out = malloc((count ? count : 1) * (sizeof(*out) + CHAT_ROOM_MAX + 1));
    char *names = (char *)(out + count);
    size_t i = 0;
    if (out) {
        CHAT_STRMAP_EACH(&table, node) {
            chat_room *r = (chat_room *)node;
            char *name = names + i * (CHAT_ROOM_MAX + 1);
            strcpy(name, r->name);
            out[i++] = (chat_bus_room){.name = name, .members = r->refs};
        }
    }
    pthread_mutex_unlock(&rooms_lock);
    *n = i;
    return out;
}

void chat_rooms_close_all(chat_event *bye)
{
    pthread_mutex_lock(&rooms_lock);
    CHAT_STRMAP_EACH(&table, node) {
        chat_room *r = (chat_room *)node;
        pthread_mutex_lock(&r->lock);
        for (unsigned k = 0; k < r->nmembers; k++) {
            chat_session *s = r->members[k].s;
            s->door->close(s, bye ? chat_event_bytes(bye, s->door) : NULL, true);
        }
        pthread_mutex_unlock(&r->lock);
    }
    pthread_mutex_unlock(&rooms_lock);
}
