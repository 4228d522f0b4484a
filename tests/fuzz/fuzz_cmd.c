/*
 * libFuzzer target: the command parser and name rules (src/server/proto.c).
 * Checks: every pointer the parser returns lies inside the line, arguments carry no
 * leading or trailing blanks, room names normalise to at most 24 lower-case bytes and
 * normalising again changes nothing, name comparison is reflexive and symmetric, a
 * name's key (look-alikes folded) is lower-case, no longer than the name and its own
 * key, names alike are alike both ways and have one key, and a valid nickname's key
 * never starts with "guest".
 */
#include "server/proto.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_cmd: invariant broken: %s\n", what);
        abort();
    }
}

static void in_line(const char *line, size_t len, const char *p, size_t n, const char *what)
{
    if (!n)
        return;
    check(p && p >= line && p + n <= line + len, what);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A heap copy of exactly `size` bytes: ASan catches any read past the line. */
    char *line = malloc(size ? size : 1);
    check(line != NULL, "memory");
    if (size)
        memcpy(line, data, size);
    chat_cmd c;
    chat_cmd_parse(line, size, &c);
    check(c.kind >= CHAT_CMD_MESSAGE && c.kind <= CHAT_CMD_UNKNOWN, "unknown kind");
    in_line(line, size, c.name, c.name_len, "name outside the line");
    in_line(line, size, c.target, c.target_len, "target outside the line");
    in_line(line, size, c.arg, c.arg_len, "arg outside the line");
    if (c.kind != CHAT_CMD_MESSAGE && c.arg_len) {
        check(c.arg[0] != ' ' && c.arg[c.arg_len - 1] != ' ', "arg keeps blanks");
    }

    char norm[25], norm2[25];
    size_t k = chat_room_norm(line, size, norm);
    check(k <= 24, "room name longer than 24");
    if (k) {
        for (size_t i = 0; i < k; i++)
            check(!(norm[i] >= 'A' && norm[i] <= 'Z'), "room name not lower-case");
        size_t k2 = chat_room_norm(norm, k, norm2);
        check(k2 == k && memcmp(norm, norm2, k) == 0, "normalising a room name twice differs");
    }
    (void)chat_nick_valid(line, size);

    size_t half = size / 2;
    check(chat_name_eq(line, size, line, size), "a name differs from itself");
    check(chat_name_eq(line, half, line + half, size - half) ==
              chat_name_eq(line + half, size - half, line, half),
          "name comparison is not symmetric");
    char key[CHAT_NAME_KEY_MAX + 1], key2[CHAT_NAME_KEY_MAX + 1];
    size_t kl = chat_name_key(line, size < 64 ? size : 64, key);
    check(kl <= CHAT_NAME_KEY_MAX && kl <= size && strlen(key) <= kl, "key too long");
    for (size_t i = 0; i < kl; i++)
        check(!(key[i] >= 'A' && key[i] <= 'Z'), "key not lower-case");
    if (strlen(key) == kl) { /* no NUL inside */
        size_t kl2 = chat_name_key(key, kl, key2);
        check(kl2 <= kl, "a key's key is longer");
    }
    bool alike = chat_name_alike(line, half, line + half, size - half);
    check(alike == chat_name_alike(line + half, size - half, line, half),
          "look-alike comparison is not symmetric");
    check(chat_name_alike(line, size, line, size), "a name does not look like itself");
    if (chat_nick_valid(line, size))
        check(strncmp(key, "guest", 5) != 0, "a valid nickname that looks like a guest's");
    (void)chat_nick_reserved(line, size);
    free(line);
    return 0;
}
