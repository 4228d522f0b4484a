/*
 * The chat protocol's pure parsers (contract in proto.h, rules in
 * docs/protocol.md): line framing with the telnet filter, the sanitiser,
 * the command parser and name checks.  Sessions own the sockets, the
 * replies and what a line means; nothing here does I/O or keeps state
 * outside the caller's structs.
 */
#include "proto.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Framing and telnet                                                        */

enum {
    TN_SE = 240, TN_NOP = 241, TN_DM = 242, TN_BRK = 243, TN_IP = 244,
    TN_AO = 245, TN_AYT = 246, TN_EC = 247, TN_EL = 248, TN_GA = 249,
    TN_SB = 250, TN_WILL = 251, TN_WONT = 252, TN_DO = 253, TN_DONT = 254,
    TN_IAC = 255,
    TN_OPT_TIMING_MARK = 6,
};

/* chat_framer.tstate */
typedef enum tn_state {
    TS_DATA,   /* plain data */
    TS_IAC,    /* IAC seen */
    TS_OPT,    /* IAC WILL/WONT/DO/DONT seen: the option byte is next */
    TS_SB,     /* inside a subnegotiation */
    TS_SB_IAC, /* IAC seen inside a subnegotiation */
} tn_state;

int chat_framer_init(chat_framer *f, size_t max_line, bool telnet)
{
    memset(f, 0, sizeof *f);
    if (max_line > SIZE_MAX - 2)
        return -ENOMEM;
    f->telnet = telnet; /* the line buffer comes with the first byte of a line */
    f->max_line = max_line;
    f->tstate = TS_DATA;
    return 0;
}

void chat_framer_free(chat_framer *f)
{
    free(f->line);
    f->line = NULL;
    f->len = f->cap = 0;
}

void chat_framer_trim(chat_framer *f)
{
    if (f->len == 0)
        chat_framer_free(f);
}

/* Appends a byte to the partial line, growing the buffer (geometrically, to
 * at most max_line + 2 bytes).  False when memory runs out. */
static bool push(chat_framer *f, char c)
{
    if (f->len == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 128;
        if (cap > f->max_line + 2)
            cap = f->max_line + 2;
        char *p = realloc(f->line, cap);
        if (!p)
            return false;
        f->line = p;
        f->cap = cap;
    }
    f->line[f->len++] = c;
    return true;
}

/* Appends a whole answer or nothing: half a telnet command would desync the
 * client's parser. */
/* Answers to the client: "are you there?" gets the longest (option refusals are 3 bytes). */
#define TN_AYT_ANSWER "\r\n[yes]\r\n"
#define TN_ANSWER_MAX (sizeof TN_AYT_ANSWER - 1)

static void reply_add(chat_frame_out *out, const char *bytes, size_t n)
{
    if (out->reply_len > sizeof out->reply || sizeof out->reply - out->reply_len < n)
        return;
    memcpy(out->reply + out->reply_len, bytes, n);
    out->reply_len += n;
}

static chat_frame_kind line_end(chat_framer *f, chat_frame_out *out)
{
    if (f->discarding) {
        /* the tail of an overlong line, already reported */
        f->discarding = false;
        f->len = 0;
        return CHAT_FRAME_NONE;
    }
    out->line = f->line;
    out->len = f->len;
    /* The bytes stay in f->line until the next feed overwrites them. */
    f->len = 0;
    return CHAT_FRAME_LINE;
}

static chat_frame_kind too_long(chat_framer *f)
{
    f->discarding = true;
    f->len = 0;
    return CHAT_FRAME_TOO_LONG;
}

/* One data byte in chat mode (after the telnet filter).
 *
 * A CR ends its line at once, rather than waiting to see the next byte: a
 * client that ends lines with a bare CR and then goes quiet still has its
 * line delivered.  f->cr then makes a following LF or NUL (the rest of CRLF
 * or CR NUL, in this feed or a later one, with or without telnet commands
 * in between) vanish instead of ending an empty line.  The decision depends
 * only on byte values, so any split of the input gives the same events. */
static chat_frame_kind data_telnet(chat_framer *f, uint8_t c, chat_frame_out *out)
{
    if (f->cr) {
        f->cr = false;
        if (c == '\n' || c == '\0')
            return CHAT_FRAME_NONE;
    }
    if (c == '\n' || c == '\r') {
        f->cr = c == '\r';
        return line_end(f, out);
    }
    if (f->discarding)
        return CHAT_FRAME_NONE;
    if (f->len >= f->max_line || !push(f, (char)c))
        return too_long(f);
    return CHAT_FRAME_NONE;
}

/* One byte in raw mode: only LF ends a line, which keeps its terminator.  A
 * CR may sit one byte past max_line, since it belongs to the terminator if
 * an LF follows (hence the buffer's max_line + 2 bytes); any other byte
 * after it makes it data, and the line overlong. */
static chat_frame_kind data_raw(chat_framer *f, uint8_t c, chat_frame_out *out)
{
    if (c == '\n') {
        if (!f->discarding && !push(f, '\n')) {
            too_long(f); /* no memory for the terminator: this line is lost... */
            f->discarding = false; /* ...but not the next one */
            return CHAT_FRAME_TOO_LONG;
        }
        return line_end(f, out);
    }
    if (f->discarding)
        return CHAT_FRAME_NONE;
    if (f->len > f->max_line || (c != '\r' && f->len == f->max_line) || !push(f, (char)c))
        return too_long(f);
    return CHAT_FRAME_NONE;
}

/* IAC EC: erase the last character of the partial line, a whole UTF-8
 * sequence when the line ends with one (a lead byte and up to three
 * continuation bytes), else a single byte. */
static void erase_char(chat_framer *f)
{
    if (f->len == 0)
        return;
    size_t i = f->len - 1;
    unsigned conts = 0;
    while (i > 0 && conts < 3 && ((uint8_t)f->line[i] & 0xC0) == 0x80) {
        i--;
        conts++;
    }
    if (conts > 0 && (uint8_t)f->line[i] >= 0xC0)
        f->len = i;
    else
        f->len--;
}

/* The byte after IAC (also reached from a subnegotiation that an IAC other
 * than IAC SE or IAC IAC ends: a client that forgot its IAC SE does not
 * lose the rest of its session, as in BSD telnetd). */
static chat_frame_kind telnet_command(chat_framer *f, uint8_t c, chat_frame_out *out)
{
    f->tstate = TS_DATA;
    switch (c) {
    case TN_IAC:
        return data_telnet(f, c, out); /* an escaped 0xFF data byte */
    case TN_WILL:
    case TN_WONT:
    case TN_DO:
    case TN_DONT:
        f->tverb = c;
        f->tstate = TS_OPT;
        return CHAT_FRAME_NONE;
    case TN_SB:
        f->sb_len = 0;
        f->tstate = TS_SB;
        return CHAT_FRAME_NONE;
    case TN_AYT:
        reply_add(out, TN_AYT_ANSWER, sizeof TN_AYT_ANSWER - 1);
        return CHAT_FRAME_NONE;
    case TN_IP:
    case TN_AO:
    case TN_EL:
        /* The client abandoned what it was typing: what follows is a new
         * line, so an overlong line's discard ends here too (its error was
         * already reported).  A pending CR stays: its line is already out,
         * and a following LF still belongs to it. */
        f->len = 0;
        f->discarding = false;
        return CHAT_FRAME_NONE;
    case TN_EC:
        erase_char(f);
        return CHAT_FRAME_NONE;
    default:
        /* NOP, DM, BRK, GA, a stray SE, or a byte that is no command. */
        return CHAT_FRAME_NONE;
    }
}

static void telnet_option(chat_framer *f, uint8_t opt, chat_frame_out *out)
{
    f->tstate = TS_DATA;
    /* Refuse everything so the client stays in its default line mode;
     * WONT and DONT are never answered, so no negotiation can loop. */
    if (f->tverb == TN_DO) {
        uint8_t verb = opt == TN_OPT_TIMING_MARK ? TN_WILL : TN_WONT;
        char r[3] = { (char)TN_IAC, (char)verb, (char)opt };
        reply_add(out, r, sizeof r);
    } else if (f->tverb == TN_WILL) {
        char r[3] = { (char)TN_IAC, (char)TN_DONT, (char)opt };
        reply_add(out, r, sizeof r);
    }
}

static void sb_count(chat_framer *f, size_t n)
{
    f->sb_len = SIZE_MAX - f->sb_len < n ? SIZE_MAX : f->sb_len + n;
}

size_t chat_frame_feed(chat_framer *f, const char *p, size_t n, chat_frame_out *out)
{
    const uint8_t *s = (const uint8_t *)p;
    size_t i = 0;

    out->kind = CHAT_FRAME_NONE;
    out->line = NULL;
    out->len = 0;

    if (!f->telnet) {
        while (i < n) {
            chat_frame_kind k = data_raw(f, s[i++], out);
            if (k != CHAT_FRAME_NONE) {
                out->kind = k;
                return i;
            }
        }
        return i;
    }

    while (i < n) {
        /* Give the caller the answers so far before one could be dropped; with
         * nothing consumed yet, go on (progress first). */
        if (i > 0 && sizeof out->reply - out->reply_len < TN_ANSWER_MAX)
            return i;
        chat_frame_kind k = CHAT_FRAME_NONE;
        switch ((tn_state)f->tstate) {
        case TS_DATA: {
            uint8_t c = s[i++];
            if (c == TN_IAC)
                f->tstate = TS_IAC;
            else
                k = data_telnet(f, c, out);
            break;
        }
        case TS_IAC:
            k = telnet_command(f, s[i++], out);
            break;
        case TS_OPT:
            telnet_option(f, s[i++], out);
            break;
        case TS_SB: {
            /* Skip to the next IAC in one step: O(n), nothing stored. */
            const uint8_t *iac = memchr(s + i, TN_IAC, n - i);
            size_t skip = iac ? (size_t)(iac - (s + i)) : n - i;
            sb_count(f, skip);
            i += skip;
            if (iac) {
                i++;
                f->tstate = TS_SB_IAC;
            }
            break;
        }
        case TS_SB_IAC: {
            uint8_t c = s[i++];
            if (c == TN_SE) {
                f->tstate = TS_DATA;
            } else if (c == TN_IAC) {
                sb_count(f, 1); /* an escaped 255 inside the subnegotiation */
                f->tstate = TS_SB;
            } else {
                k = telnet_command(f, c, out);
            }
            break;
        }
        }
        if (k != CHAT_FRAME_NONE) {
            out->kind = k;
            return i;
        }
    }
    return i;
}

/* ------------------------------------------------------------------------ */
/* Sanitising                                                                */

enum { ESC = 0x1B, BEL = 0x07 };

/* Length of the valid UTF-8 sequence at s[0..n) and its code point, or 0
 * when it is invalid: overlong forms, surrogates, code points above
 * U+10FFFF and sequences cut short by the end of input (the ranges of
 * Unicode's table 3-7). */
static size_t utf8_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t c = s[0];
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */

    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        *cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        *cp = c & 0x0F;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        *cp = c & 0x07;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0; /* a continuation byte, C0, C1 or F5..FF */
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        *cp = (*cp << 6) | (s[i] & 0x3F);
    }
    return len;
}

/* Skips a string sequence (OSC, DCS, SOS, PM, APC) whose body starts at
 * s[i]; returns where scanning resumes.  ST (ESC \) ends it, and BEL too
 * for OSC.  Any other ESC ends it without being consumed, since a terminal
 * would take it as the start of a new sequence.  An unterminated sequence
 * runs to the end of the input. */
static size_t skip_string(const uint8_t *s, size_t n, size_t i, bool bel_ends)
{
    for (; i < n; i++) {
        if (bel_ends && s[i] == BEL)
            return i + 1;
        if (s[i] == ESC)
            return i + 1 < n && s[i + 1] == '\\' ? i + 2 : i;
    }
    return n;
}

/* Skips the escape sequence at s[i] (an ESC); returns where scanning
 * resumes, always past the ESC.  Malformed sequences end at the first byte
 * that cannot belong to them, which is then sanitised on its own: without
 * its ESC nothing left can drive a terminal, and a stray "ESC [" does not
 * swallow the rest of the line. */
static size_t skip_escape(const uint8_t *s, size_t n, size_t i)
{
    i++;
    if (i >= n)
        return n;
    switch (s[i]) {
    case '[':
        /* CSI: parameter and intermediate bytes 0x20..0x3F, then a final
         * byte 0x40..0x7E. */
        for (i++; i < n; i++) {
            if (s[i] >= 0x40 && s[i] <= 0x7E)
                return i + 1;
            if (s[i] < 0x20 || s[i] > 0x3F)
                return i;
        }
        return n;
    case ']':
        return skip_string(s, n, i + 1, true);
    case 'P':
    case 'X':
    case '^':
    case '_':
        return skip_string(s, n, i + 1, false);
    default:
        /* ESC, intermediates 0x20..0x2F (as in "ESC ( 0"), then one more
         * ASCII byte.  Another ESC starts a new sequence, and a non-ASCII
         * byte is left to the UTF-8 decoder rather than split. */
        while (i < n && s[i] >= 0x20 && s[i] <= 0x2F)
            i++;
        if (i < n && s[i] != ESC && s[i] < 0x80)
            i++;
        return i;
    }
}

/* Removes the last character of out[0..len), which is valid UTF-8. */
static size_t erase_last(const char *out, size_t len)
{
    if (len == 0)
        return 0;
    len--;
    while (len > 0 && ((uint8_t)out[len] & 0xC0) == 0x80)
        len--;
    return len;
}

/* Removed: bidi embeddings, overrides and isolates (they reorder the text around
 * them; kept on purpose: U+200E/U+200F LRM, RLM and U+061C ALM, marks that cannot),
 * the line and paragraph separators U+2028/U+2029 (a line break where the terminal
 * shows none), tag characters U+E0000-U+E007F (invisible data) and the interlinear
 * annotation characters U+FFF9-U+FFFB (hidden text). */
static bool is_removed(uint32_t cp)
{
    return (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069) ||
           cp == 0x2028 || cp == 0x2029 || (cp >= 0xE0000 && cp <= 0xE007F) ||
           (cp >= 0xFFF9 && cp <= 0xFFFB);
}

bool chat_char_combining(uint32_t cp)
{
    return (cp >= 0x300 && cp <= 0x36F) || (cp >= 0x483 && cp <= 0x489) ||
           (cp >= 0x591 && cp <= 0x5BD) || cp == 0x5BF || cp == 0x5C1 || cp == 0x5C2 ||
           cp == 0x5C4 || cp == 0x5C5 || cp == 0x5C7 || (cp >= 0x610 && cp <= 0x61A) ||
           (cp >= 0x64B && cp <= 0x65F) || cp == 0x670 || (cp >= 0x6D6 && cp <= 0x6DC) ||
           (cp >= 0x6DF && cp <= 0x6E4) || cp == 0x6E7 || cp == 0x6E8 ||
           (cp >= 0x6EA && cp <= 0x6ED) || (cp >= 0x1AB0 && cp <= 0x1AFF) ||
           (cp >= 0x1DC0 && cp <= 0x1DFF) || (cp >= 0x20D0 && cp <= 0x20FF) ||
           (cp >= 0xFE20 && cp <= 0xFE2F);
}

/* Characters that show nothing: spaces, zero-width and format characters, fillers
 * (Hangul, Braille blank), variation selectors and lone combining marks. */
static bool is_invisible(uint32_t cp)
{
    return chat_char_space(cp) || chat_char_zero_width(cp) || chat_char_combining(cp);
}

bool chat_text_visible(const char *p, size_t n)
{
    const uint8_t *s = (const uint8_t *)p;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = utf8_decode(s + i, n - i, &cp);
        if (len == 0 || !is_invisible(cp))
            return true; /* (invalid UTF-8 does not come out of the sanitiser) */
        i += len;
    }
    return false;
}

bool chat_char_space(uint32_t cp)
{
    return cp == ' ' || cp == 0xA0 || cp == 0x115F || cp == 0x1160 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x202F || cp == 0x205F || cp == 0x2800 ||
           cp == 0x3000 || cp == 0x3164 || cp == 0xFFA0;
}

bool chat_char_zero_width(uint32_t cp)
{
    return cp == 0xAD || cp == 0x34F || cp == 0x61C || cp == 0x17B4 || cp == 0x17B5 ||
           cp == 0x180E || (cp >= 0x200B && cp <= 0x200F) || (cp >= 0x2060 && cp <= 0x2064) ||
           (cp >= 0xFE00 && cp <= 0xFE0F) || cp == 0xFEFF || (cp >= 0xE0100 && cp <= 0xE01EF);
}

/* How many characters of the kind counted() end out[0..len), passing over those of
 * the kind skipped() (up to max + 1). */
static unsigned trailing(const char *out, size_t len, bool (*counted)(uint32_t),
                         bool (*skipped)(uint32_t), unsigned max)
{
    unsigned n = 0;
    while (len > 0 && n <= max) {
        size_t start = erase_last(out, len);
        uint32_t cp;
        if (utf8_decode((const uint8_t *)out + start, len - start, &cp) == 0)
            break;
        if (counted(cp))
            n++;
        else if (!skipped(cp))
            break;
        len = start;
    }
    return n;
}

static bool zero_width_or_mark(uint32_t cp)
{
    return chat_char_zero_width(cp) || chat_char_combining(cp);
}

/* The run limits of chat_sanitize: a character of a run that is already as long as it
 * may be is dropped.  Only what is written counts (a removed control neither adds to a
 * run nor ends it), so sanitising twice changes nothing; nor do characters without
 * width (zero-width ones between spaces, marks on them) end a run of spaces, or
 * zero-width ones a run of marks. */
typedef struct runs {
    unsigned marks, spaces;
} runs;

static bool runs_take(runs *r, uint32_t cp)
{
    bool mark = chat_char_combining(cp), space = chat_char_space(cp);
    bool zero = chat_char_zero_width(cp);
    if ((mark && r->marks >= CHAT_MARKS_MAX) || (space && r->spaces >= CHAT_SPACES_MAX))
        return false;
    if (mark)
        r->marks++;
    else if (!zero)
        r->marks = 0;
    if (space)
        r->spaces++;
    else if (!zero && !mark)
        r->spaces = 0;
    return true;
}

static void runs_recount(runs *r, const char *out, size_t len)
{
    r->marks = trailing(out, len, chat_char_combining, chat_char_zero_width, CHAT_MARKS_MAX);
    r->spaces = trailing(out, len, chat_char_space, zero_width_or_mark, CHAT_SPACES_MAX);
}

/* Invalid input is replaced byte by byte (a truncated "E2 82" gives two
 * U+FFFD), as docs/protocol.md says; that is also what bounds the output
 * by CHAT_SANITIZE_MAX.  C1 controls are removed as characters (C2 80..
 * C2 9F); an 8-bit CSI's parameters are then plain text and harmless.  The
 * output is valid UTF-8 with nothing left to remove, so sanitising it again
 * changes nothing. */
size_t chat_sanitize(const char *in, size_t n, char *out)
{
    const uint8_t *s = (const uint8_t *)in;
    size_t i = 0, o = 0;
    runs r = {0};

    while (i < n) {
        uint8_t c = s[i];
        if (c == ESC) {
            i = skip_escape(s, n, i);
        } else if (c == 0x08 || c == 0x7F) {
            o = erase_last(out, o);
            runs_recount(&r, out, o);
            i++;
        } else if (c < 0x20 && c != '\t') {
            i++;
        } else if (c < 0x80) {
            if (runs_take(&r, c == '\t' ? ' ' : c))
                out[o++] = c == '\t' ? ' ' : (char)c;
            i++;
        } else {
            uint32_t cp;
            size_t len = utf8_decode(s + i, n - i, &cp);
            if (len == 0) {
                runs_take(&r, 0xFFFD);
                memcpy(out + o, "\xEF\xBF\xBD", 3);
                o += 3;
                i++;
                continue;
            }
            if (cp > 0x9F && !is_removed(cp) && runs_take(&r, cp)) {
                memcpy(out + o, s + i, len);
                o += len;
            }
            i += len;
        }
    }
    return o;
}

/* ------------------------------------------------------------------------ */
/* Commands and names                                                        */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool ascii_alpha(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool name_char(char c)
{
    return ascii_alpha(c) || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

void chat_name_lower(char *dst, const char *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = ascii_lower(src[i]);
    dst[n] = '\0';
}

size_t chat_name_key(const char *name, size_t len, char out[CHAT_NAME_KEY_MAX + 1])
{
    size_t o = 0;
    for (size_t i = 0; i < len && o < CHAT_NAME_KEY_MAX; i++) {
        char c = ascii_lower(name[i]);
        char next = i + 1 < len ? ascii_lower(name[i + 1]) : '\0';
        if ((c == 'r' && next == 'n') || (c == 'v' && next == 'v')) {
            out[o++] = c == 'r' ? 'm' : 'w'; /* "rn" reads as "m", "vv" as "w" */
            i++;
        } else if (c == 'i' || c == 'l' || c == '|') {
            out[o++] = '1';
        } else if (c == 'o') {
            out[o++] = '0';
        } else {
            out[o++] = c;
        }
    }
    out[o] = '\0';
    return o;
}

bool chat_name_alike(const char *a, size_t alen, const char *b, size_t blen)
{
    char ka[CHAT_NAME_KEY_MAX + 1], kb[CHAT_NAME_KEY_MAX + 1];
    chat_name_key(a, alen, ka);
    chat_name_key(b, blen, kb);
    return strcmp(ka, kb) == 0;
}

bool chat_nick_reserved(const char *name, size_t len)
{
    /* Names users would take for the server's or its staff's (IRC services too). */
    static const char *const reserved[] = {
        "server", "st_proactor", "admin", "administrator", "root", "sysop", "operator",
        "moderator", "system", "staff", "support", "nickserv", "chanserv", "services",
    };
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        if (chat_name_alike(name, len, reserved[i], strlen(reserved[i])))
            return true;
    return false;
}

bool chat_name_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++)
        if (ascii_lower(a[i]) != ascii_lower(b[i]))
            return false;
    return true;
}

/* Aliases (names, list, exit, j) are what users of other chat programs type
 * first; they are not in docs/protocol.md's table. */
static const struct {
    const char *word;
    chat_cmd_kind kind;
} cmd_words[] = {
    { "nick", CHAT_CMD_NICK },   { "who", CHAT_CMD_WHO },    { "names", CHAT_CMD_WHO },
    { "me", CHAT_CMD_ME },       { "msg", CHAT_CMD_MSG },    { "join", CHAT_CMD_JOIN },
    { "j", CHAT_CMD_JOIN },      { "rooms", CHAT_CMD_ROOMS }, { "list", CHAT_CMD_ROOMS },
    { "quit", CHAT_CMD_QUIT },   { "exit", CHAT_CMD_QUIT },  { "help", CHAT_CMD_HELP },
};

void chat_cmd_parse(const char *line, size_t len, chat_cmd *out)
{
    if (len == 0 || line == NULL) {
        line = "";
        len = 0;
    }
    const char *end = line + len;

    out->kind = CHAT_CMD_MESSAGE;
    out->name = line;
    out->name_len = 0;
    out->target = end;
    out->target_len = 0;
    out->arg = line;
    out->arg_len = len;

    if (len == 0 || line[0] != '/')
        return;
    if (len >= 2 && line[1] == '/') {
        out->arg = line + 1;
        out->arg_len = len - 1;
        return;
    }

    const char *p = line + 1;
    const char *word = p;
    while (p < end && !is_blank(*p))
        p++;
    size_t word_len = (size_t)(p - word);

    out->kind = CHAT_CMD_UNKNOWN;
    out->name = word;
    out->name_len = word_len;
    for (size_t i = 0; i < sizeof cmd_words / sizeof cmd_words[0]; i++) {
        if (chat_name_eq(word, word_len, cmd_words[i].word, strlen(cmd_words[i].word))) {
            out->kind = cmd_words[i].kind;
            break;
        }
    }

    /* rest: leading and trailing blanks trimmed */
    while (p < end && is_blank(*p))
        p++;
    const char *rest_end = end;
    while (rest_end > p && is_blank(rest_end[-1]))
        rest_end--;

    if (out->kind == CHAT_CMD_NICK || out->kind == CHAT_CMD_MSG || out->kind == CHAT_CMD_JOIN) {
        out->target = p;
        while (p < rest_end && !is_blank(*p))
            p++;
        out->target_len = (size_t)(p - out->target);
        while (p < rest_end && is_blank(*p))
            p++;
    }
    out->arg = p;
    out->arg_len = (size_t)(rest_end - p);
}

bool chat_line_parse(const char *line, size_t len, char *clean, chat_cmd *c)
{
    size_t n = chat_sanitize(line, len, clean);
    chat_cmd_parse(clean, n, c);
    if (!chat_text_visible(c->arg, c->arg_len))
        c->arg_len = 0; /* a message, action, reason or /msg text that shows nothing */
    return chat_text_visible(clean, n) && !(c->kind == CHAT_CMD_MESSAGE && !c->arg_len);
}

bool chat_nick_valid(const char *name, size_t len)
{
    if (len < 1 || len > 16 || !ascii_alpha(name[0]))
        return false;
    for (size_t i = 1; i < len; i++)
        if (!name_char(name[i]))
            return false;
    char key[CHAT_NAME_KEY_MAX + 1];
    chat_name_key(name, len, key);
    return strncmp(key, "guest", 5) != 0; /* also "GUEST", "gue5t" is fine */
}

size_t chat_room_norm(const char *name, size_t len, char out[25])
{
    out[0] = '\0';
    if (len > 0 && name[0] == '#') {
        name++;
        len--;
    }
    if (len < 1 || len > 24)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!name_char(name[i]))
            return 0;
    chat_name_lower(out, name, len);
    return len;
}
