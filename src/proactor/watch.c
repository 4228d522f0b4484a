/*
 * Readiness watches: the loop tells the application when a descriptor it
 * drives itself is ready.  The backend does the watching (epoll: a
 * level-triggered registration; io_uring: a one-shot poll armed again after
 * each report); this file keeps the list, runs the callbacks and frees
 * stopped watches once no backend event can name them any more.
 */
#include "backend.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>

int px_watch_start(px_loop *loop, px_watch **out, int fd, unsigned events,
                   void (*fn)(px_watch *w, unsigned ready, void *user), void *user)
{
    if (!loop || !out || fd < 0 || !fn || (events & ~(PX_WATCH_READ | PX_WATCH_WRITE)))
        return -EINVAL;
    if (atomic_load_explicit(&loop->running, memory_order_acquire) && !px__on_loop(loop))
        return -EPERM;
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return -errno;
    if (S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode))
        return -EPERM; /* always "ready": nothing to wait for (epoll refuses them too) */
    px_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    *w = (px_watch){.io.kind = PX_IO_WATCH, .loop = loop, .fd = fd, .events = events,
                    .fn = fn, .user = user};
    int rc = loop->be->watch_set(loop, w);
    if (rc) {
        free(w);
        return rc;
    }
    w->next = loop->watches;
    if (loop->watches)
        loop->watches->prev = w;
    loop->watches = w;
    *out = w;
    return 0;
}

int px_watch_set(px_watch *w, unsigned events)
{
    if (!w)
        return -EINVAL;
    PX_ASSERT_LOOP_THREAD(w->loop);
    if (w->stopped || (events & ~(PX_WATCH_READ | PX_WATCH_WRITE)))
        return -EINVAL;
    if (events == w->events)
        return 0;
    w->events = events;
    return w->loop->be->watch_set(w->loop, w);
}

unsigned px_watch_events(const px_watch *w)
{
    return w ? w->events : 0;
}

void px_watch_stop(px_watch *w)
{
    if (!w || w->stopped)
        return;
    PX_ASSERT_LOOP_THREAD(w->loop);
    w->stopped = true;
    w->events = 0;
    w->loop->watches_stopped++;
    w->loop->be->watch_set(w->loop, w);
}

void px__watch_fire(px_watch *w, unsigned ready)
{
    ready &= w->events;
    if (!w->stopped && ready)
        w->fn(w, ready, w->user);
}

void px__watches_reap(px_loop *loop, bool all)
{
    for (px_watch *w = loop->watches, *next; w; w = next) {
        next = w->next;
        if (!all && (!w->stopped || w->be_inflight))
            continue;
        if (w->prev)
            w->prev->next = w->next;
        else
            loop->watches = w->next;
        if (w->next)
            w->next->prev = w->prev;
        if (w->stopped)
            loop->watches_stopped--;
        free(w);
    }
}
