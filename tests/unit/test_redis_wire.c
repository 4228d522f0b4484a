/*
 * Events as they travel between servers (src/server/bus_redis_wire.c): what one server
 * encodes another decodes to the same event, a payload of another format version is
 * dropped, and the Lua scripts' leave template is the encoder's own output.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "server/bus_redis.h"
#include "server/door_stream.h"

TestSuite(redis_wire, .timeout = 10);

Test(redis_wire, round_trip)
{
    chat_event ev = {.kind = CHAT_EV_RENAME, .from = "ana", .to = "Ana_2", .text = "x\ty\nz",
                     .len = 5};
    size_t n;
    char *p = redis_wire_encode(&ev, 42, true, "node/7", &n);
    cr_assert(p);
    redis_wire_msg m;
    cr_assert(redis_wire_decode(p, n, "node/7", &m));
    cr_assert_eq(m.ev.kind, CHAT_EV_RENAME);
    cr_assert_str_eq(m.ev.from, "ana");
    cr_assert_str_eq(m.ev.to, "Ana_2");
    cr_assert_eq(m.ev.len, 5);
    cr_assert_eq(memcmp(m.ev.text, "x\ty\nz", 5), 0, "the text is carried as is");
    cr_assert_eq(m.sender, 42);
    cr_assert(m.history && m.ours);
    cr_assert(redis_wire_decode(p, n, "node/8", &m));
    cr_assert(!m.ours, "another node's line");
    free(p);
}

Test(redis_wire, empty_fields_and_every_kind)
{
    for (int k = CHAT_EV_MESSAGE; k <= CHAT_EV_ERROR; k++) {
        chat_event ev = {.kind = (chat_event_kind)k};
        size_t n;
        char *p = redis_wire_encode(&ev, 0, false, "t", &n);
        redis_wire_msg m;
        cr_assert(p && redis_wire_decode(p, n, "t", &m), "kind %d", k);
        cr_assert_eq(m.ev.kind, (chat_event_kind)k);
        cr_assert(!m.ev.from && !m.ev.to && m.ev.len == 0 && !m.history && m.sender == 0);
        free(p);
    }
}

Test(redis_wire, malformed_and_foreign_payloads_are_dropped)
{
    static const char *const bad[] = {
        "",
        "v1\t",
        "v1\tM\tana\t\t0\t0\tt",               /* no end of header */
        "v1\tQ\tana\t\t0\t0\tt\nhi",           /* no such kind */
        "v1\tM\tan_name_longer_than_16\t\t0\t0\tt\nhi",
        "t 0 1\n<ana> hi\r\n",                 /* the format before v1 */
        "v2\tM\tana\t\t0\t0\tt\nhi",           /* a later one */
    };
    redis_wire_msg m;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert(!redis_wire_decode(bad[i], strlen(bad[i]), "t", &m), "accepted: %s", bad[i]);
}

/* A well-formed payload may still lack what an event of its kind needs (from another
 * server's bug, or a hand-made PUBLISH): the door shows it without crashing. */
Test(redis_wire, a_payload_without_names_is_shown_safely)
{
    static const char p[] = "v1\tJ\t\t\t0\t0\tt\n";
    redis_wire_msg m;
    cr_assert(redis_wire_decode(p, sizeof(p) - 1, "t", &m));
    px_buf *b = chat_door_telnet.door.format(&m.ev);
    cr_assert(b);
    cr_assert_eq(px_buf_len(b), strlen("***  has joined .\r\n"));
    px_buf_release(b);
}

Test(redis_wire, leave_template_is_the_encoders)
{
    char tpl[REDIS_TEMPLATE_MAX];
    redis_wire_leave_template("host%1/abc", tpl);
    cr_assert_str_eq(tpl, "v1\tL\t%s\t\t0\t0\thost%%1/abc\n%s");
}
