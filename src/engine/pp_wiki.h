/* pp_wiki.h -- a MediaWiki XML export, scanned and indexed: the core of
 * the wiki server (docs/wiki.md).
 *
 * Two parts, neither of which includes Python.h:
 *
 *   scanner  pp_wiki_scan() streams a dump (the <mediawiki> export format
 *            of Wikipedia's pages-articles files) in pieces of any size and
 *            reports each <page> element: its byte offset and length in
 *            the uncompressed file, its title and its redirect target, XML
 *            entities decoded.  It keeps no more than one tag between
 *            calls, so memory is constant however large the dump.  Page
 *            text is never parsed: in XML it holds no '<', so the scanner
 *            jumps from one '<' to the next with memchr.
 *   index    a flat, position-independent image (one allocation, or the
 *            saved file's bytes): a header, the entries sorted by title
 *            (byte order of UTF-8, that is code-point order), the titles,
 *            and a second order by case-folded title for case-insensitive
 *            search.  Lookups are binary searches over it; nothing in it is
 *            a pointer, so one image is read by every worker as it is.
 *
 * Image layout (little-endian, every section 8-byte aligned):
 *
 *   pp_wiki_header
 *   pp_wiki_entry  entry[n]       sorted by title; title_off into titles
 *   uint64_t       fold_off[n]    folded keys, sorted; offsets into folds
 *   uint32_t       fold_entry[n]  (+ pad) the entry each folded key is of
 *   char           titles[titles_size]
 *   char           folds[folds_size]
 *
 * A title's length is the next title's offset (or titles_size) minus its
 * own; likewise for folded keys.
 */
#ifndef PP_WIKI_H
#define PP_WIKI_H

#include <stddef.h>
#include <stdint.h>

/* ---- scanner ------------------------------------------------------------ */

/* Longest title or redirect target kept, in bytes (MediaWiki's limit is
 * 255), and longest tag the scanner looks at whole. */
#define PP_WIKI_TITLE_MAX 1024
#define PP_WIKI_TAG_MAX 4096

typedef struct pp_wiki_page {
    uint64_t start;            /* offset of "<page>" in the dump */
    uint64_t length;           /* through the '>' of "</page>" */
    const char *title;         /* decoded UTF-8, not NUL-terminated */
    size_t title_len;
    const char *redirect;      /* NULL when the page is no redirect */
    size_t redirect_len;
} pp_wiki_page;

/* Called once per page; returns 0 to go on, -1 to stop the scan (the
 * callback sets the scanner's err). */
typedef int (*pp_wiki_page_fn)(void *arg, const pp_wiki_page *page);

typedef struct pp_wiki_scanner {
    pp_wiki_page_fn on_page;
    void *arg;
    uint64_t pos;              /* dump offset of the next byte fed */
    uint64_t pages;
    int state;
    int seen_root, seen_end;
    uint64_t page_start;
    uint64_t last_page_end;    /* just past the last "</page>" seen */
    size_t title_len, redirect_len;
    int have_title, have_redirect;
    char title[PP_WIKI_TITLE_MAX];
    char redirect[PP_WIKI_TITLE_MAX];
    char err[256];
} pp_wiki_scanner;

void pp_wiki_scanner_init(pp_wiki_scanner *s, pp_wiki_page_fn on_page, void *arg);

/* Scans buf[0:len], the dump's bytes from s->pos on.  Returns how many
 * bytes were consumed; the caller passes the rest again, followed by more
 * of the dump (the rest is never more than PP_WIKI_TAG_MAX +
 * PP_WIKI_TITLE_MAX bytes).  eof says no more will follow.  Returns
 * (size_t)-1 on a malformed or truncated dump, with s->err naming the byte
 * offset. */
size_t pp_wiki_scan(pp_wiki_scanner *s, const char *buf, size_t len, int eof);

/* Scans a fragment: a piece of a dump cut anywhere (a worker's batch of a
 * multistream .bz2), for the pages wholly inside it.  on_page gets each,
 * with start relative to buf.  *head is the offset of the first "<page>"
 * (len when there is none), *tail the end of the last whole page (*head
 * when there is none): the caller scans buf[0:head] and buf[tail:len] in
 * sequence with its neighbours' ends (they may hold parts of pages that
 * cross the cut) and skips [head, tail) (pp_wiki_scan_skip).  Returns 0,
 * or -1 with s->err (offsets relative to buf). */
int pp_wiki_scan_fragment(pp_wiki_scanner *s, const char *buf, size_t len,
                          size_t *head, size_t *tail);

/* Moves a sequential scan over bytes scanned elsewhere: s must be between
 * pages, with everything before s->pos consumed, and to >= s->pos.
 * Returns 0, or -1 with s->err. */
int pp_wiki_scan_skip(pp_wiki_scanner *s, uint64_t to);

/* ---- index -------------------------------------------------------------- */

#define PP_WIKI_MAGIC "PPWIKI\001\n"
#define PP_WIKI_NO_REDIRECT UINT32_MAX

typedef struct pp_wiki_header {
    char magic[8];
    uint64_t image_size;       /* of the whole image, header included */
    uint64_t n;                /* entries (unique titles) */
    uint64_t titles_size, folds_size;
    uint64_t dump_size;        /* of the uncompressed dump indexed */
    uint64_t dump_mtime_ns;    /* of the dump file (0: unknown) */
    uint64_t pages;            /* <page> elements seen */
    uint64_t redirects;        /* entries that redirect to another */
    uint64_t duplicates;       /* pages dropped: a title seen before */
    uint64_t source_size;      /* of the file indexed (.bz2: compressed) */
    uint64_t source_mtime_ns;
    uint64_t checksum;         /* pp_wiki_checksum() of all after the header */
    uint64_t reserved[3];
} pp_wiki_header;

typedef struct pp_wiki_entry {
    uint64_t start;            /* <page> offset in the dump */
    uint64_t title_off;
    uint32_t length;           /* of the <page> element */
    uint32_t redirect;         /* entry redirected to, or PP_WIKI_NO_REDIRECT */
} pp_wiki_entry;

/* Case folding for search: writes the folded form of s[0:n] to out (cap
 * bytes, at least 4 * n + 4) and returns its length, or -1. */
typedef long (*pp_wiki_fold_fn)(void *arg, const char *s, size_t n, char *out,
                                size_t cap);

/* ASCII-only folding (A-Z to a-z, other bytes kept): the default. */
long pp_wiki_fold_ascii(void *arg, const char *s, size_t n, char *out, size_t cap);

/* Collects pages (give pp_wiki_builder_add as the scanner's callback). */
typedef struct pp_wiki_builder pp_wiki_builder;

pp_wiki_builder *pp_wiki_builder_new(void);
void pp_wiki_builder_free(pp_wiki_builder *b);
int pp_wiki_builder_add(void *builder, const pp_wiki_page *page);
/* Why pp_wiki_builder_add last failed ("" if it did not). */
const char *pp_wiki_builder_error(const pp_wiki_builder *b);

/* Sorts, drops duplicate titles (the first page wins), resolves redirects
 * and folds titles with fold (NULL: ASCII).  On success returns the image
 * (malloc'ed; *size set), with the header's dump and source fields from
 * hdr_in; on failure NULL with err set.  The builder may be freed after. */
void *pp_wiki_builder_finish(pp_wiki_builder *b, const pp_wiki_header *hdr_in,
                             pp_wiki_fold_fn fold, void *fold_arg,
                             size_t *size, char *err, size_t errlen);

/* A 64-bit checksum of the image's bytes after its header (a saved index
 * damaged on disk is refused, not trusted). */
uint64_t pp_wiki_checksum(const void *image, size_t size);

/* A view of an image. */
typedef struct pp_wiki_index {
    const pp_wiki_header *h;
    const pp_wiki_entry *entry;
    const uint64_t *fold_off;
    const uint32_t *fold_entry;
    const char *titles, *folds;
    size_t n;
} pp_wiki_index;

/* Checks an image completely (sizes, bounds, order: O(n)) and fills ix.
 * Returns 0, or -1 with err saying what is wrong.  buf must be 8-aligned. */
int pp_wiki_index_open(pp_wiki_index *ix, const void *buf, size_t len,
                       char *err, size_t errlen);

/* Title of entry i. */
static inline const char *
pp_wiki_title(const pp_wiki_index *ix, size_t i, size_t *len)
{
    uint64_t end = i + 1 < ix->n ? ix->entry[i + 1].title_off : ix->h->titles_size;
    *len = (size_t)(end - ix->entry[i].title_off);
    return ix->titles + ix->entry[i].title_off;
}

/* The entry titled key, or -1. */
long pp_wiki_find(const pp_wiki_index *ix, const char *key, size_t len);

/* Entries whose title starts with prefix: [*lo, *hi) in title order. */
void pp_wiki_prefix(const pp_wiki_index *ix, const char *prefix, size_t len,
                    size_t *lo, size_t *hi);

/* Positions in the folded order whose key starts with the folded prefix:
 * [*lo, *hi); ix->fold_entry[k] is the entry. */
void pp_wiki_fold_prefix(const pp_wiki_index *ix, const char *prefix, size_t len,
                         size_t *lo, size_t *hi);

#endif /* PP_WIKI_H */
