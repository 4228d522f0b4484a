/*
 * Reference-counted immutable buffers: one copy of a message however many
 * streams send it.  The header and the bytes share one allocation unless the
 * caller wraps its own memory.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static px_buf *buf_make(size_t len)
{
    if (len > SIZE_MAX - sizeof(px_buf))
        return NULL;
    px_buf *b = malloc(sizeof(*b) + len);
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    b->len = len;
    b->data = b->bytes;
    b->free_fn = NULL;
    b->ctx = NULL;
    return b;
}

int px_buf_new(px_buf **out, const void *data, size_t len)
{
    if (!out || (len && !data))
        return -EINVAL;
    px_buf *b = buf_make(len);
    if (!b)
        return -ENOMEM;
    if (len)
        memcpy(b->bytes, data, len);
    *out = b;
    return 0;
}

int px_buf_alloc(px_buf **out, size_t len, void **data)
{
    if (!out || !data)
        return -EINVAL;
    px_buf *b = buf_make(len);
    if (!b)
        return -ENOMEM;
    *data = b->bytes;
    *out = b;
    return 0;
}

int px_buf_wrap(px_buf **out, const void *data, size_t len,
                void (*free_fn)(const void *data, void *ctx), void *ctx)
{
    if (!out || (len && !data))
        return -EINVAL;
    px_buf *b = buf_make(0);
    if (!b)
        return -ENOMEM;
    b->len = len;
    b->data = data;
    b->free_fn = free_fn;
    b->ctx = ctx;
    *out = b;
    return 0;
}

px_buf *px_buf_retain(px_buf *buf)
{
    atomic_fetch_add_explicit(&buf->refs, 1, memory_order_relaxed);
    return buf;
}

void px_buf_release(px_buf *buf)
{
    if (!buf || px__refs_dec(&buf->refs) != 0)
        return;
    if (buf->free_fn)
        buf->free_fn(buf->data, buf->ctx);
    free(buf);
}

const void *px_buf_data(const px_buf *buf) { return buf->data; }
size_t px_buf_len(const px_buf *buf) { return buf->len; }
