/* String-keyed hash table (strmap.h). */
#include "strmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

int chat_strmap_init(chat_strmap *m, unsigned nbuckets)
{
    m->buckets = calloc(nbuckets, sizeof(*m->buckets));
    m->nbuckets = m->buckets ? nbuckets : 0;
    m->count = 0;
    return m->buckets ? 0 : -ENOMEM;
}

void chat_strmap_fini(chat_strmap *m)
{
    free(m->buckets);
    *m = (chat_strmap){0};
}

chat_strmap_node **chat_strmap_slot(const chat_strmap *m, const char *key)
{
    chat_strmap_node **pp = &m->buckets[hash(key) & (m->nbuckets - 1)];
    while (*pp && strcmp((*pp)->key, key) != 0)
        pp = &(*pp)->next;
    return pp;
}

static void grow(chat_strmap *m)
{
    unsigned size = m->nbuckets * 2;
    chat_strmap_node **t = calloc(size, sizeof(*t));
    if (!t)
        return; /* longer chains, still correct */
    for (unsigned i = 0; i < m->nbuckets; i++) {
        for (chat_strmap_node *n = m->buckets[i], *next; n; n = next) {
            next = n->next;
            unsigned h = hash(n->key) & (size - 1);
            n->next = t[h];
            t[h] = n;
        }
    }
    free(m->buckets);
    m->buckets = t;
    m->nbuckets = size;
}

void chat_strmap_insert(chat_strmap *m, chat_strmap_node *n)
{
    chat_strmap_node **head = &m->buckets[hash(n->key) & (m->nbuckets - 1)];
    n->next = *head;
    *head = n;
    if (++m->count > m->nbuckets * 2)
        grow(m);
}

void chat_strmap_remove(chat_strmap *m, chat_strmap_node **slot)
{
    *slot = (*slot)->next;
    m->count--;
}
