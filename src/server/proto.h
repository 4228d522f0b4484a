/*
 * Pure parsers of the chat protocol (docs/protocol.md): line framing with the
 * telnet filter, the text sanitiser, the command parser and name checks.
 * No I/O, locks, clock or global state; the framer allocates only its line
 * buffer, once, at init.  Fed byte streams split at any point give the same
 * result as fed whole.
 */
#ifndef CHAT_PROTO_H
#define CHAT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------ */
/* Framing and telnet                                                        */

typedef struct chat_framer {
    bool telnet;        /* chat mode: telnet filter on, terminators stripped */
    size_t max_line;    /* bytes of a line, terminator not counted */
    char *line;         /* the partial line; grows up to max_line + 2 bytes
                           (room for a raw CRLF), NULL when trimmed */
    size_t len;         /* bytes in line */
    size_t cap;         /* bytes allocated */
    bool discarding;    /* overlong: dropping until the end of the line */
    bool cr;            /* the previous data byte was CR */
    uint8_t tstate;     /* telnet parser state */
    uint8_t tverb;      /* WILL/WONT/DO/DONT being parsed */
    size_t sb_len;      /* bytes skipped in the current subnegotiation */
} chat_framer;

/* telnet: true for chat mode; false for raw mode (no telnet processing, only
 * LF ends a line, the line keeps its terminator).  Allocates nothing: the
 * line buffer is allocated as bytes of a line arrive.  Returns 0 or -ENOMEM
 * (an impossible max_line). */
int chat_framer_init(chat_framer *f, size_t max_line, bool telnet);
void chat_framer_free(chat_framer *f);
/* Frees the line buffer when no partial line is held (after the caller is
 * done with the last line returned), so an idle client holds none. */
void chat_framer_trim(chat_framer *f);

typedef enum chat_frame_kind {
    CHAT_FRAME_NONE,     /* input consumed, no complete line yet */
    CHAT_FRAME_LINE,     /* a complete line: out->line, out->len (may be 0) */
    CHAT_FRAME_TOO_LONG, /* a line passed max_line: it is being discarded */
} chat_frame_kind;

typedef struct chat_frame_out {
    chat_frame_kind kind;
    const char *line; /* CHAT_FRAME_LINE: valid until the next feed */
    size_t len;
    /* Telnet answers to send back to the client, appended by each feed
     * (start with reply_len = 0; the caller empties it by setting
     * reply_len = 0 after sending). */
    char reply[64];
    size_t reply_len;
} chat_frame_out;

/* Consumes bytes from p[0..n) until one event happens or the input ends;
 * grows the line buffer as needed (a line that cannot get memory is reported
 * and discarded like an overlong one);
 * returns the number of bytes consumed (call again with the rest).  In
 * telnet mode the line excludes its terminator (LF, CRLF, CR NUL, bare CR);
 * in raw mode it ends with the LF that ended it (and a CR before it, if
 * any).  CHAT_FRAME_TOO_LONG is reported once per overlong line, as soon
 * as it passes max_line; the rest of that line is consumed silently.
 * The feed also returns early when reply could not hold another answer, so
 * a caller that empties reply after every call loses none; one that does
 * not has answers dropped once reply is full. */
size_t chat_frame_feed(chat_framer *f, const char *p, size_t n, chat_frame_out *out);

/* ------------------------------------------------------------------------ */
/* Sanitising                                                                */

/* Worst-case output size for n input bytes (each invalid byte becomes the
 * three bytes of U+FFFD). */
#define CHAT_SANITIZE_MAX(n) ((n) * 3)

/* Combining marks kept on one character: enough for any language's accents, not
 * for text stacked into a tower ("Zalgo"). */
#define CHAT_MARKS_MAX 4
/* Blanks in a row (of any width, with characters of no width between them): a few for
 * layout, not the hundreds that push text onto a line of its own where it could pass
 * for the server's ("hi" + 200 spaces + "*** ..."). */
#define CHAT_SPACES_MAX 3

/* Writes the safe form of in[0..n) to out (CHAT_SANITIZE_MAX(n) bytes) and
 * returns its length: controls, escape sequences, C1 and bidi controls, line and
 * paragraph separators, tag and interlinear annotation characters removed, at most
 * CHAT_MARKS_MAX combining marks and CHAT_SPACES_MAX spaces (of any width) in a row,
 * TAB to space, BS/DEL erase the previous character, invalid UTF-8 bytes replaced with
 * U+FFFD, valid UTF-8 unchanged. */
size_t chat_sanitize(const char *in, size_t n, char *out);

/* Whether sanitised text shows anything: false when it holds only spaces,
 * zero-width and format characters, fillers and lone combining marks. */
bool chat_text_visible(const char *p, size_t n);
/* The kinds of character chat_sanitize counts in runs: combining marks; blanks that
 * take room (spaces of any width, Hangul fillers, the Braille blank); characters
 * without width (zero-width spaces and joiners, variation selectors, soft hyphen). */
bool chat_char_combining(uint32_t cp);
bool chat_char_space(uint32_t cp);
bool chat_char_zero_width(uint32_t cp);

/* ------------------------------------------------------------------------ */
/* Commands                                                                  */

typedef enum chat_cmd_kind {
    CHAT_CMD_MESSAGE, /* not a command: arg is the text (a leading "//" gives "/") */
    CHAT_CMD_NICK,
    CHAT_CMD_WHO,
    CHAT_CMD_ME,
    CHAT_CMD_MSG,
    CHAT_CMD_JOIN,
    CHAT_CMD_ROOMS,
    CHAT_CMD_QUIT,
    CHAT_CMD_HELP,
    CHAT_CMD_UNKNOWN, /* name: the unknown word, without its slash */
} chat_cmd_kind;

typedef struct chat_cmd {
    chat_cmd_kind kind;
    const char *name; size_t name_len; /* the command word (UNKNOWN) */
    const char *target; size_t target_len; /* NICK, MSG, JOIN: first word */
    const char *arg; size_t arg_len; /* the rest, leading blanks skipped,
                                        trailing blanks trimmed */
} chat_cmd;

/* Parses one sanitised line (pointers point into it).  Command words are
 * case-insensitive ("/NICK" works).  Arguments are not validated here. */
void chat_cmd_parse(const char *line, size_t len, chat_cmd *out);

/* Sanitises a complete line into clean (CHAT_SANITIZE_MAX(len) bytes) and
 * parses the result into c (pointing into clean); an argument that shows nothing
 * (chat_text_visible) counts as none.  Returns false when there is nothing to act
 * on: nothing visible, or a message without text. */
bool chat_line_parse(const char *line, size_t len, char *clean, chat_cmd *c);

/* Name rules of docs/protocol.md.  chat_nick_valid rejects names starting
 * with "guest" (any case): those are given out by the server.  chat_room_norm writes the lower-case
 * room name without a leading '#' to out (25 bytes) and returns its length,
 * or 0 when the name is invalid. */
bool chat_nick_valid(const char *name, size_t len);
size_t chat_room_norm(const char *name, size_t len, char out[25]);

/* Writes src[0..n) in ASCII lower case, then a NUL, to dst (n + 1 bytes): the key
 * under which a name is looked up. */
void chat_name_lower(char *dst, const char *src, size_t n);

/* The key under which a nickname is unique: lower case, with the characters that look
 * alike folded together (I, l, 1 and | as 1; O and 0 as 0; "rn" as m; "vv" as w), so
 * that "aIice" is taken while "alice" is there.  Letters fold into digits, not the other
 * way, so that a guest name (guest17) is its own key, as the cluster's Lua scripts,
 * which make guest names, write it.  Returns its length. */
#define CHAT_NAME_KEY_MAX 16
size_t chat_name_key(const char *name, size_t len, char out[CHAT_NAME_KEY_MAX + 1]);
/* Whether two names have one key (chat_name_key). */
bool chat_name_alike(const char *a, size_t alen, const char *b, size_t blen);
/* Whether name looks like one of the server's or its staff's (server, admin, NickServ,
 * ...): nobody may take it. */
bool chat_nick_reserved(const char *name, size_t len);

/* Case-insensitive (ASCII) comparison of names. */
bool chat_name_eq(const char *a, size_t alen, const char *b, size_t blen);

#endif
