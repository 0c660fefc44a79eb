/* wiki_scan.c -- the streaming scanner of a MediaWiki XML export
 * (pp_wiki.h).
 *
 * The scanner moves from one '<' to the next: element text is XML-escaped,
 * so between tags there is none, and the bulk of a dump (page text) is
 * skipped by memchr.  It reads only the tags it needs -- <mediawiki>,
 * <page>, <title>, <redirect title=...>, </page>, </mediawiki> -- and keeps
 * nothing between calls but the state of the current page. */

#include <stdio.h>
#include <string.h>

#include "pp_wiki.h"

enum { OUTSIDE, IN_PAGE };

void
pp_wiki_scanner_init(pp_wiki_scanner *s, pp_wiki_page_fn on_page, void *arg)
{
    memset(s, 0, sizeof *s);
    s->on_page = on_page;
    s->arg = arg;
    s->state = OUTSIDE;
}

/* Is the tag at lt (through gt, its '>') named name?  The name must be
 * followed by '>', '/' or white space. */
static int
tag_is(const char *lt, const char *gt, const char *name)
{
    size_t n = strlen(name);
    const char *after = lt + 1 + n;

    if ((size_t)(gt - lt - 1) < n || memcmp(lt + 1, name, n) != 0)
        return 0;
    return after == gt || *after == '/' || *after == ' ' || *after == '\t' ||
           *after == '\n' || *after == '\r';
}

static size_t
put_utf8(char *out, unsigned long c)
{
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (char)(0xC0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (char)(0xE0 | (c >> 12));
        out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (c >> 18));
    out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* Decodes XML character data s[0:n] (the five named entities and numeric
 * references; anything else is kept as it is) into out.  Returns the
 * length, or -1 when it does not fit in cap. */
static long
xml_decode(const char *s, size_t n, char *out, size_t cap)
{
    static const struct { const char *name; char c; } named[] = {
        {"amp;", '&'}, {"lt;", '<'}, {"gt;", '>'}, {"quot;", '"'}, {"apos;", '\''},
    };
    size_t i = 0, o = 0;

    while (i < n) {
        char ch = s[i];
        if (ch == '&') {
            size_t rest = n - i - 1, k;
            const char *e = s + i + 1;
            int done = 0;
            for (k = 0; k < sizeof named / sizeof named[0]; k++) {
                size_t l = strlen(named[k].name);
                if (rest >= l && memcmp(e, named[k].name, l) == 0) {
                    if (o + 1 > cap)
                        return -1;
                    out[o++] = named[k].c;
                    i += 1 + l;
                    done = 1;
                    break;
                }
            }
            if (!done && rest >= 3 && e[0] == '#') {
                unsigned long c = 0;
                size_t j = 1;
                int hex = e[1] == 'x' || e[1] == 'X', digits = 0;
                if (hex)
                    j++;
                for (; j < rest && j < 12; j++) {
                    char d = e[j];
                    int v;
                    if (d >= '0' && d <= '9')
                        v = d - '0';
                    else if (hex && d >= 'a' && d <= 'f')
                        v = d - 'a' + 10;
                    else if (hex && d >= 'A' && d <= 'F')
                        v = d - 'A' + 10;
                    else
                        break;
                    c = c * (hex ? 16 : 10) + (unsigned long)v;
                    digits++;
                }
                if (digits && j < rest && e[j] == ';' && c > 0 && c <= 0x10FFFF &&
                    !(c >= 0xD800 && c <= 0xDFFF)) {
                    if (o + 4 > cap)
                        return -1;
                    o += put_utf8(out + o, c);
                    i += 1 + j + 1;
                    done = 1;
                }
            }
            if (done)
                continue;
        }
        if (o + 1 > cap)
            return -1;
        out[o++] = ch;
        i++;
    }
    return (long)o;
}

static size_t
fail(pp_wiki_scanner *s, uint64_t at, const char *what)
{
    snprintf(s->err, sizeof s->err, "byte %llu: %s", (unsigned long long)at, what);
    return (size_t)-1;
}

static size_t
truncated(pp_wiki_scanner *s)
{
    return fail(s, s->page_start, "the dump ends inside the <page> that starts here: it is truncated");
}

/* The value of attribute name="..." inside the tag [lt, gt). */
static const char *
attr(const char *lt, const char *gt, const char *name, size_t *len)
{
    size_t n = strlen(name);
    const char *p = lt;

    while ((p = memmem(p, (size_t)(gt - p), name, n)) != NULL) {
        const char *q = p + n, *end;
        if (p > lt && (p[-1] == ' ' || p[-1] == '\t' || p[-1] == '\n') &&
            q + 1 < gt && q[0] == '=' && (q[1] == '"' || q[1] == '\'')) {
            end = memchr(q + 2, q[1], (size_t)(gt - q - 2));
            if (end == NULL)
                return NULL;
            *len = (size_t)(end - q - 2);
            return q + 2;
        }
        p = q;
    }
    return NULL;
}

size_t
pp_wiki_scan(pp_wiki_scanner *s, const char *buf, size_t len, int eof)
{
    const char *p = buf, *end = buf + len;
    uint64_t base = s->pos;

#define AT(ptr) (base + (uint64_t)((ptr) - buf))
    for (;;) {
        const char *lt = memchr(p, '<', (size_t)(end - p)), *gt;
        size_t span;

        if (lt == NULL) {
            p = end;
            break;
        }
        span = (size_t)(end - lt);
        gt = memchr(lt, '>', span < PP_WIKI_TAG_MAX ? span : PP_WIKI_TAG_MAX);
        if (gt == NULL) {
            if (span >= PP_WIKI_TAG_MAX)
                return fail(s, AT(lt), "a tag longer than 4096 bytes: not a MediaWiki export");
            if (eof)
                return s->state == IN_PAGE ? truncated(s) :
                       fail(s, AT(lt), "the dump ends inside a tag: it is truncated");
            p = lt;
            break;
        }
        if (s->state == OUTSIDE) {
            if (tag_is(lt, gt, "page")) {
                if (!s->seen_root)
                    return fail(s, AT(lt), "<page> before <mediawiki>: not a MediaWiki export");
                s->state = IN_PAGE;
                s->page_start = AT(lt);
                s->have_title = s->have_redirect = 0;
                s->title_len = s->redirect_len = 0;
            } else if (tag_is(lt, gt, "mediawiki")) {
                s->seen_root = 1;
            } else if (tag_is(lt, gt, "/mediawiki")) {
                s->seen_end = 1;
            }
            p = gt + 1;
            continue;
        }
        /* In a page. */
        if (tag_is(lt, gt, "title") && gt[-1] != '/') {
            const char *text = gt + 1;
            const char *close = memchr(text, '<', (size_t)(end - text) < PP_WIKI_TAG_MAX
                                                      ? (size_t)(end - text) : PP_WIKI_TAG_MAX);
            long n;
            if (close == NULL) {
                if ((size_t)(end - text) >= PP_WIKI_TAG_MAX)
                    return fail(s, AT(lt), "a <title> longer than 4096 bytes");
                if (eof)
                    return truncated(s);
                p = lt;                 /* again, with more of the dump */
                break;
            }
            if (end - close < 8) {
                if (eof)
                    return truncated(s);
                p = lt;
                break;
            }
            if (memcmp(close, "</title>", 8) != 0)
                return fail(s, AT(close), "markup inside a <title>");
            if (s->have_title)
                return fail(s, AT(lt), "a page with two <title>s");
            n = xml_decode(text, (size_t)(close - text), s->title, sizeof s->title);
            if (n < 0)
                return fail(s, AT(lt), "a title longer than 1024 bytes");
            s->title_len = (size_t)n;
            s->have_title = 1;
            p = close + 8;
            continue;
        }
        if (tag_is(lt, gt, "redirect")) {
            size_t vlen;
            const char *v = attr(lt, gt, "title", &vlen);
            long n;
            if (v != NULL) {
                n = xml_decode(v, vlen, s->redirect, sizeof s->redirect);
                if (n < 0)
                    return fail(s, AT(lt), "a redirect target longer than 1024 bytes");
                s->redirect_len = (size_t)n;
                s->have_redirect = 1;
            }
            p = gt + 1;
            continue;
        }
        if (tag_is(lt, gt, "/page")) {
            pp_wiki_page page;
            if (!s->have_title)
                return fail(s, s->page_start, "a <page> without a <title>");
            if (s->title_len == 0)
                return fail(s, s->page_start, "a <page> with an empty <title>");
            page.start = s->page_start;
            page.length = AT(gt + 1) - s->page_start;
            page.title = s->title;
            page.title_len = s->title_len;
            page.redirect = s->have_redirect ? s->redirect : NULL;
            page.redirect_len = s->redirect_len;
            s->pages++;
            s->last_page_end = AT(gt + 1);
            s->state = OUTSIDE;
            if (s->on_page && s->on_page(s->arg, &page) < 0) {
                if (!s->err[0])
                    snprintf(s->err, sizeof s->err, "byte %llu: the page could not be kept",
                             (unsigned long long)page.start);
                return (size_t)-1;
            }
            p = gt + 1;
            continue;
        }
        if (tag_is(lt, gt, "page"))
            return fail(s, s->page_start, "a <page> that never ends (another <page> starts inside it)");
        if (tag_is(lt, gt, "/mediawiki"))
            return fail(s, s->page_start, "a <page> that never ends (</mediawiki> inside it)");
        p = gt + 1;
    }
#undef AT
    if (eof && p == end) {
        if (s->state == IN_PAGE)
            return truncated(s);
        if (!s->seen_root)
            return fail(s, 0, "no <mediawiki> element: not a MediaWiki XML export");
        if (!s->seen_end)
            return fail(s, base + len, "the dump ends before </mediawiki>: it is truncated");
    }
    s->pos = base + (uint64_t)(p - buf);
    return (size_t)(p - buf);
}

int
pp_wiki_scan_fragment(pp_wiki_scanner *s, const char *buf, size_t len,
                      size_t *head, size_t *tail)
{
    const char *p = buf, *end = buf + len;
    size_t used;

    *head = *tail = len;
    /* The first "<page>" tag: '<' then "page" then '>' or white space. */
    while ((p = memchr(p, '<', (size_t)(end - p))) != NULL) {
        if (end - p >= 6 && memcmp(p + 1, "page", 4) == 0 &&
            (p[5] == '>' || p[5] == ' ' || p[5] == '\t' || p[5] == '\n' || p[5] == '\r'))
            break;
        p++;
    }
    if (p == NULL)
        return 0;
    *head = *tail = (size_t)(p - buf);
    s->pos = *head;
    s->seen_root = 1;
    s->state = OUTSIDE;
    s->last_page_end = *head;
    used = pp_wiki_scan(s, p, (size_t)(end - p), 0);
    if (used == (size_t)-1)
        return -1;
    *tail = (size_t)s->last_page_end;
    return 0;
}

int
pp_wiki_scan_skip(pp_wiki_scanner *s, uint64_t to)
{
    if (s->state != OUTSIDE || !s->seen_root || to < s->pos) {
        snprintf(s->err, sizeof s->err, "byte %llu: the pieces of the dump do not join "
                 "up (a page crosses a cut that was taken for a page boundary)",
                 (unsigned long long)s->pos);
        return -1;
    }
    s->pos = to;
    return 0;
}
