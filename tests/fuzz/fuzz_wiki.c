/* fuzz_wiki.c -- libFuzzer target for the wiki index (src/engine/pp_wiki.h):
 * the input is scanned as a MediaWiki dump, in pieces whose sizes the
 * input's first byte chooses (as a file reader hands them over, carrying
 * what was not consumed); the index built from it is checked and searched
 * with prefixes cut from the input.  It is also scanned as a fragment (a
 * worker's batch of a multistream dump).  The same bytes are then read as a
 * saved index image, checksum made to match, so the structural checks of
 * pp_wiki_index_open are fuzzed too: whatever they accept must be safe to
 * search. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pp_wiki.h"

static void
search(const pp_wiki_index *ix, const uint8_t *data, size_t size)
{
    size_t i, lo, hi, n = size < 64 ? size : 64;

    for (i = 0; i + 1 <= n; i += 7) {
        size_t len = (data[i] % 9) < n - i ? (data[i] % 9) : n - i;
        pp_wiki_find(ix, (const char *)data + i, len);
        pp_wiki_prefix(ix, (const char *)data + i, len, &lo, &hi);
        if (lo > hi || hi > ix->n)
            abort();
        pp_wiki_fold_prefix(ix, (const char *)data + i, len, &lo, &hi);
        if (lo > hi || hi > ix->n)
            abort();
        for (size_t end = lo + 8; lo < hi && lo < end; lo++) {   /* read what a route would */
            size_t tl;
            uint32_t k = ix->fold_entry[lo];
            const pp_wiki_entry *e = &ix->entry[k];
            volatile char c = 0;
            const char *t = pp_wiki_title(ix, k, &tl);
            if (tl)
                c = t[tl - 1];
            (void)c;
            if (e->start > ix->h->dump_size ||
                (e->redirect != PP_WIKI_NO_REDIRECT && e->redirect >= ix->n))
                abort();
        }
    }
}

static void
as_dump(const uint8_t *data, size_t size)
{
    pp_wiki_builder *b = pp_wiki_builder_new();
    pp_wiki_scanner sc;
    pp_wiki_header h;
    char *buf = malloc(size + 1), err[256];
    size_t step = size ? (size_t)(data[0] % 64) + 1 : 1, have = 0, fed = 0, isize;
    void *img;
    pp_wiki_index ix;

    pp_wiki_scanner_init(&sc, pp_wiki_builder_add, b);
    for (;;) {
        size_t add = size - fed < step ? size - fed : step, used;
        memcpy(buf + have, data + fed, add);
        have += add;
        fed += add;
        used = pp_wiki_scan(&sc, buf, have, fed == size);
        if (used == (size_t)-1)
            goto out;
        if (used > have)
            abort();
        memmove(buf, buf + used, have - used);
        have -= used;
        if (fed == size)
            break;
    }
    memset(&h, 0, sizeof h);
    h.dump_size = size;
    img = pp_wiki_builder_finish(b, &h, NULL, NULL, &isize, err, sizeof err);
    if (img != NULL) {
        /* What the builder makes, the checker accepts. */
        if (pp_wiki_index_open(&ix, img, isize, err, sizeof err) < 0)
            abort();
        search(&ix, data, size);
        free(img);
    }
out:
    free(buf);
    pp_wiki_builder_free(b);
}

static void
as_image(const uint8_t *data, size_t size)
{
    uint64_t *img;
    pp_wiki_index ix;
    char err[256];

    if (size < sizeof(pp_wiki_header) || size % 8 != 0)
        return;
    img = malloc(size);
    memcpy(img, data, size);
    memcpy(img, PP_WIKI_MAGIC, 8);
    ((pp_wiki_header *)img)->image_size = size;
    ((pp_wiki_header *)img)->checksum = pp_wiki_checksum(img, size);
    if (pp_wiki_index_open(&ix, img, size, err, sizeof err) == 0)
        search(&ix, data, size);
    free(img);
}

typedef struct {
    size_t len;
    int bad;
} bounds;

static int
in_fragment(void *arg, const pp_wiki_page *p)
{
    bounds *b = arg;

    if (p->start + p->length > b->len || p->title_len > PP_WIKI_TITLE_MAX)
        b->bad = 1;
    return 0;
}

static void
as_fragment(const uint8_t *data, size_t size)
{
    /* As a worker scans its batch of a multistream dump: whatever it
     * reports lies inside the piece, and head <= tail <= size. */
    pp_wiki_scanner sc;
    bounds b = {size, 0};
    size_t head, tail;

    pp_wiki_scanner_init(&sc, in_fragment, &b);
    if (pp_wiki_scan_fragment(&sc, (const char *)data, size, &head, &tail) == 0 &&
        (head > tail || tail > size || b.bad))
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    as_dump(data, size);
    as_fragment(data, size);
    as_image(data, size);
    return 0;
}
