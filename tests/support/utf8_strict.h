/*
 * An independent strict UTF-8 decoder for tests of the sanitiser (unit tests and the fuzz
 * target): decodes a sequence in full and compares its value with the shortest form's
 * range, so overlong forms, surrogates and values above U+10FFFF are invalid.
 */
#ifndef TEST_UTF8_STRICT_H
#define TEST_UTF8_STRICT_H

#include <stddef.h>
#include <stdint.h>

/* Decodes the sequence at p[0..n) into *cp; returns its length, or 0 when invalid. */
static inline size_t utf8_strict_next(const unsigned char *p, size_t n, uint32_t *cp)
{
    unsigned char c = p[0];
    size_t len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        v = v << 6 | (p[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

/* Why a code point must never reach a client (NULL when it may): the characters the
 * sanitiser removes. */
static inline const char *utf8_unsafe(uint32_t cp)
{
    if (cp < 0x20 || cp == 0x7F)
        return "C0 control or DEL";
    if (cp >= 0x80 && cp <= 0x9F)
        return "C1 control";
    if ((cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069))
        return "bidi control";
    if (cp == 0x2028 || cp == 0x2029)
        return "line or paragraph separator";
    if ((cp >= 0xE0000 && cp <= 0xE007F) || (cp >= 0xFFF9 && cp <= 0xFFFB))
        return "tag or interlinear annotation character";
    return NULL;
}

#endif
