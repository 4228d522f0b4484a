/* px_buf: copies, allocation, wrapping, and reference counting across threads. */
#include "helpers.h"

#include <string.h>

Test(buf, new_copies_its_source, .timeout = 10)
{
    char src[] = "hello, world";
    px_buf *b = NULL;
    cr_assert_eq(px_buf_new(&b, src, sizeof src - 1), 0);
    cr_assert_not_null(b);
    memset(src, 'X', sizeof src - 1);
    cr_assert_eq(px_buf_len(b), sizeof src - 1);
    cr_assert_neq((const void *)px_buf_data(b), (const void *)src, "px_buf_new must copy");
    cr_assert_eq(memcmp(px_buf_data(b), "hello, world", 12), 0);
    px_buf_release(b);
}

Test(buf, new_len_zero, .timeout = 10)
{
    px_buf *b = NULL;
    cr_assert_eq(px_buf_new(&b, "", 0), 0);
    cr_assert_not_null(b);
    cr_assert_eq(px_buf_len(b), 0);
    px_buf *r = px_buf_retain(b);
    cr_assert_eq(r, b);
    px_buf_release(r);
    px_buf_release(b);
}

Test(buf, alloc_gives_writable_bytes, .timeout = 10)
{
    px_buf *b = NULL;
    void *data = NULL;
    cr_assert_eq(px_buf_alloc(&b, 1000, &data), 0);
    cr_assert_not_null(b);
    cr_assert_not_null(data);
    tc_fill(data, 1000, 7, 0);
    cr_assert_eq(px_buf_data(b), data);
    cr_assert_eq(px_buf_len(b), 1000);
    cr_assert_eq(tc_check_fill(px_buf_data(b), 1000, 7, 0), 1000);
    px_buf_release(b);
}

static atomic_int wrap_frees;
static const void *wrap_seen_data;
static void *wrap_seen_ctx;

static void count_free(const void *data, void *ctx)
{
    wrap_seen_data = data;
    wrap_seen_ctx = ctx;
    atomic_fetch_add(&wrap_frees, 1);
}

Test(buf, wrap_does_not_copy_and_frees_once, .timeout = 10)
{
    static const char text[] = "wrapped";
    int ctx_obj = 0;
    px_buf *b = NULL;
    cr_assert_eq(px_buf_wrap(&b, text, 7, count_free, &ctx_obj), 0);
    cr_assert_eq(px_buf_data(b), (const void *)text);
    cr_assert_eq(px_buf_len(b), 7);
    px_buf_retain(b);
    px_buf_release(b);
    cr_assert_eq(atomic_load(&wrap_frees), 0, "freed while a reference remained");
    px_buf_release(b);
    cr_assert_eq(atomic_load(&wrap_frees), 1);
    cr_assert_eq(wrap_seen_data, (const void *)text);
    cr_assert_eq(wrap_seen_ctx, (void *)&ctx_obj);

    /* A NULL free_fn is allowed, and releasing NULL does nothing. */
    cr_assert_eq(px_buf_wrap(&b, text, 7, NULL, NULL), 0);
    px_buf_release(b);
    px_buf_release(NULL);
    cr_assert_eq(atomic_load(&wrap_frees), 1);
}

enum { RC_THREADS = 8, RC_ITERS = 10000 };

static void *retain_release_worker(void *arg)
{
    px_buf *b = arg;
    for (int i = 0; i < RC_ITERS; i++) {
        px_buf *r = px_buf_retain(b);
        if (r != b)
            tc_fail_at(__FILE__, __LINE__, "retain returned another pointer");
        if (atomic_load(&wrap_frees) != 0)
            tc_fail_at(__FILE__, __LINE__, "freed while referenced");
        if ((i & 1) == 0) {
            /* hold two references for a moment */
            px_buf *r2 = px_buf_retain(b);
            px_buf_release(r2);
        }
        px_buf_release(r);
    }
    return NULL;
}

Test(buf, refcount_is_thread_safe, .timeout = 30)
{
    static char payload[64];
    tc_fill(payload, sizeof payload, 3, 0);
    px_buf *b = NULL;
    cr_assert_eq(px_buf_wrap(&b, payload, sizeof payload, count_free, NULL), 0);

    pthread_t th[RC_THREADS];
    for (int i = 0; i < RC_THREADS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, retain_release_worker, b), 0);
    for (int i = 0; i < RC_THREADS; i++)
        pthread_join(th[i], NULL);

    tc_assert_no_failures();
    cr_assert_eq(atomic_load(&wrap_frees), 0, "freed while the creator still holds it");
    cr_assert_eq(tc_check_fill(px_buf_data(b), sizeof payload, 3, 0), sizeof payload);
    px_buf_release(b);
    cr_assert_eq(atomic_load(&wrap_frees), 1, "free_fn must run exactly once");
}

/* The last reference dropped on another thread runs free_fn there. */
static void *release_last(void *arg)
{
    px_buf_release(arg);
    return NULL;
}

Test(buf, last_release_on_other_thread, .timeout = 10)
{
    static const char text[] = "x";
    px_buf *b = NULL;
    cr_assert_eq(px_buf_wrap(&b, text, 1, count_free, NULL), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, release_last, b), 0);
    pthread_join(th, NULL);
    cr_assert_eq(atomic_load(&wrap_frees), 1);
}
