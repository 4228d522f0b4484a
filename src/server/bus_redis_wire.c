/*
 * Events as they travel between servers (bus_redis.h): encoded here, decoded here,
 * and the one template the Lua scripts fill in for users of a server that is gone.
 * How an event looks to a client is each door's business, on the receiving server.
 */
#include "bus_redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char kinds[] = {
    [CHAT_EV_MESSAGE] = 'M', [CHAT_EV_ACTION] = 'A', [CHAT_EV_PRIVATE] = 'P',
    [CHAT_EV_PM_SENT] = 'S', [CHAT_EV_JOIN] = 'J',   [CHAT_EV_LEAVE] = 'L',
    [CHAT_EV_MOVE] = 'V',    [CHAT_EV_RENAME] = 'R', [CHAT_EV_NOTICE] = 'N',
    [CHAT_EV_REPLY] = 'Y',   [CHAT_EV_ERROR] = 'E',
};

/* Every payload starts with the format's version: a server meets lines of another
 * version only in a mixed cluster (an upgrade sharing one Redis database), and drops
 * them rather than show them wrong. */
#define VERSION "v1\t"
#define VERSION_LEN (sizeof(VERSION) - 1)

char *redis_wire_encode(const chat_event *ev, uint64_t sender, bool history, const char *tag,
                        size_t *len)
{
    char head[256];
    int hl = snprintf(head, sizeof(head), VERSION "%c\t%s\t%s\t%llu\t%d\t%s\n", kinds[ev->kind],
                      ev->from ? ev->from : "", ev->to ? ev->to : "",
                      (unsigned long long)sender, history ? 1 : 0, tag);
    if (hl < 0 || (size_t)hl >= sizeof(head))
        return NULL;
    char *p = malloc((size_t)hl + ev->len);
    if (!p)
        return NULL;
    memcpy(p, head, (size_t)hl);
    if (ev->len)
        memcpy(p + hl, ev->text, ev->len);
    *len = (size_t)hl + ev->len;
    return p;
}

/* The next tab-separated field of [*p, end) into a string of at most max bytes at
 * *own (advanced); NULL when there is none or it is too long. */
static const char *field(const char **p, const char *end, size_t max, char **own)
{
    const char *tab = memchr(*p, '\t', (size_t)(end - *p));
    const char *stop = tab ? tab : end;
    size_t n = (size_t)(stop - *p);
    if (n > max)
        return NULL;
    char *out = *own;
    memcpy(out, *p, n);
    out[n] = '\0';
    *own += n + 1;
    *p = tab ? tab + 1 : end;
    return out;
}

bool redis_wire_decode(const char *p, size_t n, const char *tag, redis_wire_msg *m)
{
    if (n < VERSION_LEN || memcmp(p, VERSION, VERSION_LEN) != 0)
        return false;
    p += VERSION_LEN;
    n -= VERSION_LEN;
    const char *nl = memchr(p, '\n', n);
    if (!nl || nl - p < 2 || p[1] != '\t')
        return false;
    *m = (redis_wire_msg){0};
    const char *k = memchr(kinds, p[0], sizeof(kinds));
    if (!k)
        return false;
    m->ev.kind = (chat_event_kind)(k - kinds);
    const char *at = p + 2;
    char *own = m->own;
    const char *from = field(&at, nl, CHAT_NICK_MAX, &own);
    const char *to = from ? field(&at, nl, CHAT_ROOM_MAX, &own) : NULL;
    char num[24], flag[4], *scratch = num;
    if (!to || !field(&at, nl, sizeof(num) - 1, &scratch))
        return false;
    scratch = flag;
    if (!field(&at, nl, sizeof(flag) - 1, &scratch))
        return false;
    size_t tl = strlen(tag);
    m->ours = (size_t)(nl - at) == tl && memcmp(at, tag, tl) == 0;
    m->sender = strtoull(num, NULL, 10);
    m->history = strcmp(flag, "1") == 0;
    m->ev.from = *from ? from : NULL;
    m->ev.to = *to ? to : NULL;
    m->ev.text = nl + 1;
    m->ev.len = n - (size_t)(nl + 1 - p);
    return true;
}

void redis_wire_leave_template(const char *tag, char tpl[REDIS_TEMPLATE_MAX])
{
    /* \1 and \2 mark the user and the reason; a '%' of the tag is doubled for Lua. */
    chat_event ev = {.kind = CHAT_EV_LEAVE, .from = "\1", .text = "\2", .len = 1};
    size_t n, k = 0;
    char *enc = redis_wire_encode(&ev, 0, false, tag, &n);
    for (size_t i = 0; enc && i < n && k + 3 < REDIS_TEMPLATE_MAX; i++) {
        if (enc[i] == '\1' || enc[i] == '\2') {
            tpl[k++] = '%';
            tpl[k++] = 's';
        } else {
            if (enc[i] == '%')
                tpl[k++] = '%';
            tpl[k++] = enc[i];
        }
    }
    tpl[k] = '\0';
    free(enc);
}
