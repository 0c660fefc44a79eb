/* wiki_index.c -- the flat title index of a MediaWiki dump (pp_wiki.h):
 * collected page by page while the scanner runs, then sorted into one
 * position-independent image that every worker reads as it is. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pp_wiki.h"

/* ---- builder ------------------------------------------------------------ */

typedef struct rec {
    uint64_t start, length;
    uint64_t title_off, redirect_off;   /* into the arena; UINT64_MAX: none */
    uint32_t title_len, redirect_len;
} rec;

struct pp_wiki_builder {
    rec *recs;
    size_t n, cap;
    char *arena;
    size_t used, arena_cap;
    char err[160];
};

pp_wiki_builder *
pp_wiki_builder_new(void)
{
    return calloc(1, sizeof(pp_wiki_builder));
}

void
pp_wiki_builder_free(pp_wiki_builder *b)
{
    if (b == NULL)
        return;
    free(b->recs);
    free(b->arena);
    free(b);
}

const char *
pp_wiki_builder_error(const pp_wiki_builder *b)
{
    return b->err;
}

static int
grow(void **p, size_t *cap, size_t need, size_t unit)
{
    size_t c = *cap ? *cap : 1024;
    void *q;

    if (need <= *cap)
        return 0;
    while (c < need)
        c += c / 2;
    q = realloc(*p, c * unit);
    if (q == NULL)
        return -1;
    *p = q;
    *cap = c;
    return 0;
}

static uint64_t
keep(pp_wiki_builder *b, const char *s, size_t n)
{
    uint64_t off = b->used;

    /* + 1: the arena exists once anything is kept, even "" (no arithmetic
     * on a NULL arena later). */
    if (grow((void **)&b->arena, &b->arena_cap, b->used + n + 1, 1) < 0)
        return UINT64_MAX;
    if (n)
        memcpy(b->arena + b->used, s, n);
    b->used += n;
    return off;
}

int
pp_wiki_builder_add(void *builder, const pp_wiki_page *page)
{
    pp_wiki_builder *b = builder;
    rec *r;

    if (page->length > UINT32_MAX) {
        snprintf(b->err, sizeof b->err, "byte %llu: a page longer than 4 GiB",
                 (unsigned long long)page->start);
        return -1;
    }
    if (b->n >= UINT32_MAX - 1) {
        snprintf(b->err, sizeof b->err, "more than 4 billion pages");
        return -1;
    }
    if (grow((void **)&b->recs, &b->cap, b->n + 1, sizeof(rec)) < 0)
        goto nomem;
    r = &b->recs[b->n];
    r->start = page->start;
    r->length = page->length;
    r->title_len = (uint32_t)page->title_len;
    if ((r->title_off = keep(b, page->title, page->title_len)) == UINT64_MAX)
        goto nomem;
    r->redirect_off = UINT64_MAX;
    r->redirect_len = 0;
    if (page->redirect != NULL) {
        /* A target's "#section" names a part of the page, not another. */
        const char *hash = memchr(page->redirect, '#', page->redirect_len);
        size_t n = hash ? (size_t)(hash - page->redirect) : page->redirect_len;
        if ((r->redirect_off = keep(b, page->redirect, n)) == UINT64_MAX)
            goto nomem;
        r->redirect_len = (uint32_t)n;
    }
    b->n++;
    return 0;
nomem:
    snprintf(b->err, sizeof b->err, "out of memory after %zu pages", b->n);
    return -1;
}

/* Byte order of two strings (a prefix first). */
static int
cmp_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);

    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen;
}

typedef struct sort_ctx {
    const char *base;          /* strings of the keys */
    const uint64_t *off;       /* per record */
    const uint32_t *len;
} sort_ctx;

static int
cmp_rec(const void *x, const void *y, void *arg)
{
    const sort_ctx *c = arg;
    uint32_t i = *(const uint32_t *)x, j = *(const uint32_t *)y;
    int r = cmp_bytes(c->base + c->off[i], c->len[i], c->base + c->off[j], c->len[j]);

    return r ? r : (i > j) - (i < j);   /* ties in input order */
}

long
pp_wiki_fold_ascii(void *arg, const char *s, size_t n, char *out, size_t cap)
{
    size_t i;

    (void)arg;
    if (n > cap)
        return -1;
    for (i = 0; i < n; i++) {
        char c = s[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    return (long)n;
}

#define ALIGN8(x) (((x) + 7) & ~(size_t)7)

static void *
fail_null(char *err, size_t errlen, const char *msg)
{
    snprintf(err, errlen, "%s", msg);
    return NULL;
}

void *
pp_wiki_builder_finish(pp_wiki_builder *b, const pp_wiki_header *hdr_in,
                       pp_wiki_fold_fn fold, void *fold_arg,
                       size_t *size, char *err, size_t errlen)
{
    size_t m = b->n, n = 0, i, k, titles_size = 0, folds_size = 0, total, fold_cap;
    uint32_t *order = NULL, *kept = NULL, *forder = NULL, *flen = NULL;
    uint64_t *toff = NULL, *foff = NULL;
    uint32_t *tlen = NULL;
    char *folds_tmp = NULL, *img = NULL, *fbuf = NULL;
    void *done = NULL;                  /* the image, once it is whole */
    size_t folds_used = 0, folds_cap = 0;
    pp_wiki_header *h;
    pp_wiki_entry *e;
    uint64_t *fold_off;
    uint32_t *fold_entry;
    char *titles, *folds;
    uint64_t redirects = 0;
    sort_ctx ctx;

    if (b->err[0])
        return fail_null(err, errlen, b->err);
    if (fold == NULL)
        fold = pp_wiki_fold_ascii;
    order = malloc((m ? m : 1) * sizeof *order);
    toff = malloc((m ? m : 1) * sizeof *toff);
    tlen = malloc((m ? m : 1) * sizeof *tlen);
    if (order == NULL || toff == NULL || tlen == NULL)
        goto nomem;
    for (i = 0; i < m; i++) {
        order[i] = (uint32_t)i;
        toff[i] = b->recs[i].title_off;
        tlen[i] = b->recs[i].title_len;
    }
    ctx.base = b->arena;
    ctx.off = toff;
    ctx.len = tlen;
    qsort_r(order, m, sizeof *order, cmp_rec, &ctx);
    /* Drop repeated titles: the first page of a title wins. */
    kept = order;
    for (i = 0; i < m; i++) {
        uint32_t r = order[i];
        if (n > 0) {
            uint32_t prev = kept[n - 1];
            if (tlen[r] == tlen[prev] &&
                memcmp(b->arena + toff[r], b->arena + toff[prev], tlen[r]) == 0)
                continue;
        }
        kept[n++] = r;
        titles_size += tlen[r];
    }
    /* Folded keys, in entry order first. */
    foff = malloc((n ? n : 1) * sizeof *foff);
    flen = malloc((n ? n : 1) * sizeof *flen);
    forder = malloc((n ? n : 1) * sizeof *forder);
    fold_cap = 4 * PP_WIKI_TITLE_MAX + 4;
    fbuf = malloc(fold_cap);
    if (foff == NULL || flen == NULL || forder == NULL || fbuf == NULL)
        goto nomem;
    for (i = 0; i < n; i++) {
        const rec *r = &b->recs[kept[i]];
        long fl = fold(fold_arg, b->arena + r->title_off, r->title_len, fbuf, fold_cap);
        if (fl < 0) {
            snprintf(err, errlen, "byte %llu: the title could not be case-folded",
                     (unsigned long long)r->start);
            goto fail;
        }
        if (grow((void **)&folds_tmp, &folds_cap, folds_used + (size_t)fl + 1, 1) < 0)
            goto nomem;
        memcpy(folds_tmp + folds_used, fbuf, (size_t)fl);
        foff[i] = folds_used;
        flen[i] = (uint32_t)fl;
        folds_used += (size_t)fl;
        forder[i] = (uint32_t)i;
    }
    folds_size = folds_used;
    ctx.base = folds_tmp;
    ctx.off = foff;
    ctx.len = flen;
    qsort_r(forder, n, sizeof *forder, cmp_rec, &ctx);

    total = sizeof(pp_wiki_header) + n * sizeof(pp_wiki_entry) + n * sizeof(uint64_t) +
            ALIGN8(n * sizeof(uint32_t)) + ALIGN8(titles_size) + ALIGN8(folds_size);
    img = calloc(1, total ? total : 1);
    if (img == NULL)
        goto nomem;
    h = (pp_wiki_header *)img;
    *h = *hdr_in;
    memcpy(h->magic, PP_WIKI_MAGIC, 8);
    h->image_size = total;
    h->n = n;
    h->titles_size = titles_size;
    h->folds_size = folds_size;
    h->pages = m;
    h->duplicates = m - n;
    e = (pp_wiki_entry *)(h + 1);
    fold_off = (uint64_t *)(e + n);
    fold_entry = (uint32_t *)(fold_off + n);
    titles = (char *)fold_entry + ALIGN8(n * sizeof(uint32_t));
    folds = titles + ALIGN8(titles_size);
    for (i = 0, k = 0; i < n; i++) {
        const rec *r = &b->recs[kept[i]];
        e[i].start = r->start;
        e[i].length = (uint32_t)r->length;
        e[i].title_off = k;
        e[i].redirect = PP_WIKI_NO_REDIRECT;
        memcpy(titles + k, b->arena + r->title_off, r->title_len);
        k += r->title_len;
    }
    for (i = 0, k = 0; i < n; i++) {
        uint32_t j = forder[i];
        fold_off[i] = k;
        fold_entry[i] = j;
        memcpy(folds + k, folds_tmp + foff[j], flen[j]);
        k += flen[j];
    }
    /* Redirects, now that titles can be found. */
    {
        pp_wiki_index ix;
        ix.h = h;
        ix.entry = e;
        ix.fold_off = fold_off;
        ix.fold_entry = fold_entry;
        ix.titles = titles;
        ix.folds = folds;
        ix.n = n;
        for (i = 0; i < n; i++) {
            const rec *r = &b->recs[kept[i]];
            long t;
            if (r->redirect_off == UINT64_MAX)
                continue;
            t = pp_wiki_find(&ix, b->arena + r->redirect_off, r->redirect_len);
            if (t >= 0 && (size_t)t != i) {
                e[i].redirect = (uint32_t)t;
                redirects++;
            }
        }
    }
    h->redirects = redirects;
    h->checksum = pp_wiki_checksum(img, total);
    *size = total;
    done = img;
    img = NULL;
    goto out;
nomem:
    snprintf(err, errlen, "out of memory sorting %zu titles", m);
fail:
out:
    free(order);
    free(toff);
    free(tlen);
    free(foff);
    free(flen);
    free(forder);
    free(fbuf);
    free(folds_tmp);
    free(img);
    return done;
}

/* ---- reading an image --------------------------------------------------- */

uint64_t
pp_wiki_checksum(const void *image, size_t size)
{
    /* Four independent multiply-xor lanes over 64-bit words (the image is
     * 8-byte aligned and a multiple of 8 long), folded at the end. */
    const uint64_t *w = (const uint64_t *)((const char *)image + sizeof(pp_wiki_header));
    size_t n = (size - sizeof(pp_wiki_header)) / 8, i;
    uint64_t a = 0x9E3779B97F4A7C15u, b = 0xC2B2AE3D27D4EB4Fu, c = 0x165667B19E3779F9u,
             d = 0x27D4EB2F165667C5u, m = 0x100000001B3u;

    for (i = 0; i + 4 <= n; i += 4) {
        a = (a ^ w[i]) * m;
        b = (b ^ w[i + 1]) * m;
        c = (c ^ w[i + 2]) * m;
        d = (d ^ w[i + 3]) * m;
    }
    for (; i < n; i++)
        a = (a ^ w[i]) * m;
    a ^= (b << 1 | b >> 63) ^ (c << 2 | c >> 62) ^ (d << 3 | d >> 61);
    a ^= a >> 33;
    a *= 0xFF51AFD7ED558CCDu;
    a ^= a >> 33;
    return a ^ (uint64_t)size;
}

static int
bad(char *err, size_t errlen, const char *what, size_t i)
{
    snprintf(err, errlen, "not a valid wiki index: %s (at entry %zu)", what, i);
    return -1;
}

int
pp_wiki_index_open(pp_wiki_index *ix, const void *buf, size_t len,
                   char *err, size_t errlen)
{
    const pp_wiki_header *h = buf;
    size_t n, i, need;
    const char *base = buf;

    if (((uintptr_t)buf & 7) != 0)
        return bad(err, errlen, "the image is not 8-byte aligned", 0);
    if (len < sizeof *h || memcmp(h->magic, PP_WIKI_MAGIC, 8) != 0)
        return bad(err, errlen, "no header (wrong magic or version)", 0);
    if (h->image_size != len)
        return bad(err, errlen, "the size in the header differs from the image's", 0);
    if (h->n >= UINT32_MAX || h->titles_size > len || h->folds_size > len)
        return bad(err, errlen, "sizes out of range", 0);
    n = (size_t)h->n;
    need = sizeof *h + n * sizeof(pp_wiki_entry) + n * sizeof(uint64_t) +
           ALIGN8(n * sizeof(uint32_t)) + ALIGN8((size_t)h->titles_size) +
           ALIGN8((size_t)h->folds_size);
    if (need != len)
        return bad(err, errlen, "the sections do not add up to the image's size", 0);
    if (pp_wiki_checksum(buf, len) != h->checksum)
        return bad(err, errlen, "the checksum does not match: the image is damaged", 0);
    ix->h = h;
    ix->n = n;
    ix->entry = (const pp_wiki_entry *)(base + sizeof *h);
    ix->fold_off = (const uint64_t *)(ix->entry + n);
    ix->fold_entry = (const uint32_t *)(ix->fold_off + n);
    ix->titles = (const char *)ix->fold_entry + ALIGN8(n * sizeof(uint32_t));
    ix->folds = ix->titles + ALIGN8((size_t)h->titles_size);
    for (i = 0; i < n; i++) {
        const pp_wiki_entry *e = &ix->entry[i];
        uint64_t end = i + 1 < n ? ix->entry[i + 1].title_off : h->titles_size;
        uint64_t fend = i + 1 < n ? ix->fold_off[i + 1] : h->folds_size;
        if ((i == 0 && e->title_off != 0) || e->title_off > end || end > h->titles_size)
            return bad(err, errlen, "title offsets out of order", i);
        if (e->start > h->dump_size || e->length > h->dump_size - e->start)
            return bad(err, errlen, "a page lies beyond the dump's end", i);
        if (e->redirect != PP_WIKI_NO_REDIRECT && e->redirect >= n)
            return bad(err, errlen, "a redirect to no entry", i);
        if ((i == 0 && ix->fold_off[0] != 0) || ix->fold_off[i] > fend || fend > h->folds_size)
            return bad(err, errlen, "folded-key offsets out of order", i);
        if (ix->fold_entry[i] >= n)
            return bad(err, errlen, "a folded key of no entry", i);
        if (i > 0) {
            size_t la, lb;
            const char *a = pp_wiki_title(ix, i - 1, &la), *t = pp_wiki_title(ix, i, &lb);
            if (cmp_bytes(a, la, t, lb) >= 0)
                return bad(err, errlen, "titles not sorted or repeated", i);
            if (cmp_bytes(ix->folds + ix->fold_off[i - 1],
                          (size_t)(ix->fold_off[i] - ix->fold_off[i - 1]),
                          ix->folds + ix->fold_off[i], (size_t)(fend - ix->fold_off[i])) > 0)
                return bad(err, errlen, "folded keys not sorted", i);
        }
    }
    return 0;
}

long
pp_wiki_find(const pp_wiki_index *ix, const char *key, size_t len)
{
    size_t lo = 0, hi = ix->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2, tl;
        const char *t = pp_wiki_title(ix, mid, &tl);
        int c = cmp_bytes(t, tl, key, len);
        if (c == 0)
            return (long)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* Compares s's first len bytes (all of s when shorter) with prefix:
 * 0 when s starts with prefix. */
static int
cmp_prefix(const char *s, size_t slen, const char *prefix, size_t len)
{
    return cmp_bytes(s, slen < len ? slen : len, prefix, len);
}

typedef const char *(*key_at_fn)(const pp_wiki_index *ix, size_t i, size_t *len);

static const char *
fold_at(const pp_wiki_index *ix, size_t i, size_t *len)
{
    uint64_t end = i + 1 < ix->n ? ix->fold_off[i + 1] : ix->h->folds_size;
    *len = (size_t)(end - ix->fold_off[i]);
    return ix->folds + ix->fold_off[i];
}

static void
range(const pp_wiki_index *ix, key_at_fn at, const char *prefix, size_t len,
      size_t *out_lo, size_t *out_hi)
{
    size_t lo = 0, hi = ix->n, first, kl;

    while (lo < hi) {                   /* first key >= prefix */
        size_t mid = lo + (hi - lo) / 2;
        const char *k = at(ix, mid, &kl);
        if (cmp_prefix(k, kl, prefix, len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    first = lo;
    hi = ix->n;
    while (lo < hi) {                   /* first key past the prefix */
        size_t mid = lo + (hi - lo) / 2;
        const char *k = at(ix, mid, &kl);
        if (cmp_prefix(k, kl, prefix, len) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *out_lo = first;
    *out_hi = lo;
}

void
pp_wiki_prefix(const pp_wiki_index *ix, const char *prefix, size_t len,
               size_t *lo, size_t *hi)
{
    range(ix, pp_wiki_title, prefix, len, lo, hi);
}

void
pp_wiki_fold_prefix(const pp_wiki_index *ix, const char *prefix, size_t len,
                    size_t *lo, size_t *hi)
{
    range(ix, fold_at, prefix, len, lo, hi);
}
