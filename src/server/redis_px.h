/*
 * hiredis's asynchronous API driven by libproactor: the adapter hiredis asks for
 * (addRead/delRead/addWrite/delWrite/cleanup) on top of a px_watch.  Like every
 * redisAsync* call, attaching and everything after it happen on the loop thread.
 */
#ifndef SRV_REDIS_PX_H
#define SRV_REDIS_PX_H

#include "proactor.h"

#include <hiredis/async.h>

/* Attaches ac (fresh from redisAsyncConnect) to loop.  Returns 0, -EINVAL (already
 * attached, or no descriptor), or px_watch_start's error; on error the caller still
 * owns ac (redisAsyncFree). */
int redis_px_attach(redisAsyncContext *ac, px_loop *loop);

#endif
