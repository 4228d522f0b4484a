/*
 * libFuzzer target: the text sanitiser (src/server/proto.c).
 * Checks: the output fits CHAT_SANITIZE_MAX, is valid UTF-8, holds no C0 control, DEL, C1
 * control, bidi embedding/override/isolate, line or paragraph separator, tag or
 * interlinear annotation character, never more than CHAT_MARKS_MAX combining marks nor
 * CHAT_SPACES_MAX blanks in a row (characters of no width between them not ending the
 * run), and sanitising it again changes nothing.
 */
#include "server/proto.h"

#include "../support/utf8_strict.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_sanitize: invariant broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *out = malloc(CHAT_SANITIZE_MAX(size) + 1);
    char *again = malloc(CHAT_SANITIZE_MAX(CHAT_SANITIZE_MAX(size)) + 1);
    check(out && again, "memory");
    size_t n = chat_sanitize((const char *)data, size, out);
    check(n <= CHAT_SANITIZE_MAX(size), "output larger than CHAT_SANITIZE_MAX");
    const unsigned char *u = (const unsigned char *)out;
    unsigned marks = 0, spaces = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = utf8_strict_next(u + i, n - i, &cp);
        check(k > 0, "output is not valid UTF-8");
        check(!utf8_unsafe(cp), "a character the sanitiser removes is in the output");
        marks = chat_char_combining(cp) ? marks + 1 : chat_char_zero_width(cp) ? marks : 0;
        check(marks <= CHAT_MARKS_MAX, "more combining marks in a row than CHAT_MARKS_MAX");
        if (chat_char_space(cp))
            spaces++;
        else if (!chat_char_zero_width(cp) && !chat_char_combining(cp))
            spaces = 0;
        check(spaces <= CHAT_SPACES_MAX, "more blanks in a row than CHAT_SPACES_MAX");
        i += k;
    }
    size_t m = chat_sanitize(out, n, again);
    check(m == n && memcmp(out, again, n) == 0, "sanitising twice changed the text");
    free(out);
    free(again);
    return 0;
}
