/*
 * A string-keyed hash table with the links inside the entries (chains of
 * chat_strmap_node), for the registry's names and the room table.  No locking, no
 * allocation of entries: callers own both.
 */
#ifndef CHAT_STRMAP_H
#define CHAT_STRMAP_H

#include <stdbool.h>

typedef struct chat_strmap_node {
    struct chat_strmap_node *next;
    const char *key; /* set by the owner before insertion; must not change while in */
} chat_strmap_node;

typedef struct chat_strmap {
    chat_strmap_node **buckets;
    unsigned nbuckets; /* a power of two */
    unsigned count;
} chat_strmap;

/* 0 or -ENOMEM. */
int chat_strmap_init(chat_strmap *m, unsigned nbuckets);
/* Frees the buckets (not the entries). */
void chat_strmap_fini(chat_strmap *m);
/* The link that points at the entry with key, or at the NULL that ends its chain:
 * insert or remove there.  m must have been initialised successfully. */
chat_strmap_node **chat_strmap_slot(const chat_strmap *m, const char *key);
/* Inserts n (whose key is not in m: see chat_strmap_slot) at the head of its chain;
 * the table grows as it fills (when it cannot, chains just get longer). */
void chat_strmap_insert(chat_strmap *m, chat_strmap_node *n);
void chat_strmap_remove(chat_strmap *m, chat_strmap_node **slot);

#define CHAT_STRMAP_EACH(m, n)                                                         \
    for (unsigned chat_strmap_i_ = 0; chat_strmap_i_ < (m)->nbuckets; chat_strmap_i_++) \
        for (chat_strmap_node *n = (m)->buckets[chat_strmap_i_]; n; n = n->next)

#endif
