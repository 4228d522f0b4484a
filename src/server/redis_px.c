/* hiredis on libproactor (redis_px.h). */
#include "redis_px.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct redis_px {
    redisAsyncContext *ac;
    px_watch *w;
    unsigned events;
    bool busy; /* inside on_ready: hiredis may free the context (cleanup) meanwhile */
    bool dead; /* cleanup ran */
} redis_px;

static void on_ready(px_watch *w, unsigned ready, void *user)
{
    (void)w;
    redis_px *r = user;
    r->busy = true;
    if (ready & PX_WATCH_READ)
        redisAsyncHandleRead(r->ac);
    if (!r->dead && (ready & PX_WATCH_WRITE))
        redisAsyncHandleWrite(r->ac);
    r->busy = false;
    if (r->dead)
        free(r);
}

static void want(redis_px *r, unsigned set, unsigned clear)
{
    r->events = (r->events | set) & ~clear;
    /* Only running out of kernel memory makes this fail for hiredis's socket; the
     * hooks cannot report it (hiredis calls them from inside itself), and the
     * cluster's keepalive and reconnection deal with a connection that goes quiet. */
    (void)px_watch_set(r->w, r->events);
}

static void add_read(void *p) { want(p, PX_WATCH_READ, 0); }
static void del_read(void *p) { want(p, 0, PX_WATCH_READ); }
static void add_write(void *p) { want(p, PX_WATCH_WRITE, 0); }
static void del_write(void *p) { want(p, 0, PX_WATCH_WRITE); }

static void cleanup(void *p)
{
    redis_px *r = p;
    px_watch_stop(r->w);
    r->dead = true;
    if (!r->busy)
        free(r);
}

int redis_px_attach(redisAsyncContext *ac, px_loop *loop)
{
    if (!ac || !loop || ac->ev.data || ac->c.fd < 0)
        return -EINVAL;
    redis_px *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->ac = ac;
    int rc = px_watch_start(loop, &r->w, ac->c.fd, 0, on_ready, r);
    if (rc) {
        free(r);
        return rc;
    }
    ac->ev.data = r;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    return 0;
}
