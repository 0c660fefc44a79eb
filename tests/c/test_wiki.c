/* test_wiki.c -- the MediaWiki export scanner and the title index. */

#include "pp_test.h"
#include "pp_wiki.h"

static const char DUMP[] =
    "<mediawiki xmlns=\"http://www.mediawiki.org/xml/export-0.10/\" version=\"0.10\">\n"
    "  <siteinfo><sitename>T</sitename></siteinfo>\n"
    "  <page>\n    <title>Banana</title>\n    <ns>0</ns>\n    <id>1</id>\n"
    "    <revision><text xml:space=\"preserve\">a &lt;b&gt; text</text></revision>\n"
    "  </page>\n"
    "  <page>\n    <title>AT&amp;T</title>\n    <ns>0</ns>\n"
    "    <revision><text>x</text></revision>\n  </page>\n"
    "  <page>\n    <title>Apple</title>\n    <redirect title=\"Banana#Kinds\" />\n"
    "    <revision><text>#REDIRECT [[Banana]]</text></revision>\n  </page>\n"
    "  <page>\n    <title>\xc3\x89lan</title>\n    <revision><text/></revision>\n  </page>\n"
    "  <page>\n    <title>&#201;cole &#x263A;</title>\n  </page>\n"
    "  <page>\n    <title>Banana</title>\n  </page>\n"
    "</mediawiki>\n";

typedef struct seen {
    int n;
    char titles[8][64];
    uint64_t start[8], length[8];
    int redirect[8];
} seen;

static int
on_page(void *arg, const pp_wiki_page *p)
{
    seen *s = arg;

    memcpy(s->titles[s->n], p->title, p->title_len);
    s->titles[s->n][p->title_len] = 0;
    s->start[s->n] = p->start;
    s->length[s->n] = p->length;
    s->redirect[s->n] = p->redirect != NULL;
    s->n++;
    return 0;
}

/* Feeds text in pieces of step bytes, carrying what was not consumed, as
 * a reader of a file does. */
static size_t
scan_in_steps(pp_wiki_scanner *sc, const char *text, size_t len, size_t step)
{
    char buf[16384];
    size_t have = 0, fed = 0;

    for (;;) {
        size_t add = len - fed < step ? len - fed : step, used;
        memcpy(buf + have, text + fed, add);
        have += add;
        fed += add;
        used = pp_wiki_scan(sc, buf, have, fed == len);
        if (used == (size_t)-1)
            return used;
        memmove(buf, buf + used, have - used);
        have -= used;
        if (fed == len)
            return 0;
    }
}

static void
test_scan_pages_at_any_split(void)
{
    size_t step;

    for (step = 1; step < sizeof DUMP; step += (step < 64 ? 1 : 97)) {
        pp_wiki_scanner sc;
        seen s;
        memset(&s, 0, sizeof s);
        pp_wiki_scanner_init(&sc, on_page, &s);
        ASSERT_EQ(scan_in_steps(&sc, DUMP, sizeof DUMP - 1, step), 0);
        ASSERT_EQ(s.n, 6);
        ASSERT_TRUE(strcmp(s.titles[0], "Banana") == 0);
        ASSERT_TRUE(strcmp(s.titles[1], "AT&T") == 0);
        ASSERT_TRUE(strcmp(s.titles[3], "\xc3\x89lan") == 0);
        ASSERT_TRUE(strcmp(s.titles[4], "\xc3\x89" "cole \xe2\x98\xba") == 0);
        ASSERT_EQ(s.redirect[2], 1);
        ASSERT_EQ(s.redirect[0], 0);
        /* Offsets: the element itself, "<page>" through "</page>". */
        ASSERT_TRUE(memcmp(DUMP + s.start[0], "<page>", 6) == 0);
        ASSERT_TRUE(memcmp(DUMP + s.start[0] + s.length[0] - 7, "</page>", 7) == 0);
        ASSERT_TRUE(memcmp(DUMP + s.start[5] + s.length[5] - 7, "</page>", 7) == 0);
    }
}

static const char *
scan_error(const char *text)
{
    static pp_wiki_scanner sc;

    pp_wiki_scanner_init(&sc, NULL, NULL);
    if (pp_wiki_scan(&sc, text, strlen(text), 1) != (size_t)-1)
        return NULL;
    return sc.err;
}

static void
test_scan_errors_name_the_offset(void)
{
    char cut[sizeof DUMP];
    const char *e;
    size_t at = (size_t)(strstr(DUMP, "<page>\n    <title>Apple") - DUMP);

    /* Cut inside the Apple page: the error names where that page starts. */
    memcpy(cut, DUMP, at + 30);
    cut[at + 30] = 0;
    e = scan_error(cut);
    ASSERT_NOT_NULL(e);
    ASSERT_TRUE(strstr(e, "truncated") != NULL);
    {
        char want[32];
        snprintf(want, sizeof want, "byte %zu:", at);
        ASSERT_TRUE(strncmp(e, want, strlen(want)) == 0);
    }
    /* Cut between pages: no </mediawiki>. */
    memcpy(cut, DUMP, at);
    cut[at] = 0;
    ASSERT_TRUE(strstr(scan_error(cut), "before </mediawiki>") != NULL);
    ASSERT_TRUE(strstr(scan_error("hello world"), "not a MediaWiki") != NULL);
    ASSERT_TRUE(strstr(scan_error("<mediawiki><page><ns>0</ns></page></mediawiki>"),
                       "without a <title>") != NULL);
    ASSERT_TRUE(strstr(scan_error("<mediawiki><page><title>a</title><page>"),
                       "never ends") != NULL);
    /* Found by fuzz_wiki: an empty title (once an empty arena, then UB). */
    ASSERT_TRUE(strstr(scan_error("<mediawiki><page><title></title></page></mediawiki>"),
                       "empty <title>") != NULL);
}

static void *
build(const char *text, size_t *size)
{
    pp_wiki_builder *b = pp_wiki_builder_new();
    pp_wiki_scanner sc;
    pp_wiki_header h;
    char err[256];
    void *img;

    memset(&h, 0, sizeof h);
    h.dump_size = strlen(text);
    pp_wiki_scanner_init(&sc, pp_wiki_builder_add, b);
    ASSERT_EQ(pp_wiki_scan(&sc, text, strlen(text), 1), strlen(text));
    img = pp_wiki_builder_finish(b, &h, NULL, NULL, size, err, sizeof err);
    pp_wiki_builder_free(b);
    ASSERT_NOT_NULL(img);
    return img;
}

static void
test_index_lookups(void)
{
    size_t size, lo, hi, tl;
    void *img = build(DUMP, &size);
    pp_wiki_index ix;
    char err[256];
    long banana, apple;
    const char *t;

    ASSERT_EQ(pp_wiki_index_open(&ix, img, size, err, sizeof err), 0);
    ASSERT_EQ(ix.n, 5);                 /* the second Banana dropped */
    ASSERT_EQ(ix.h->duplicates, 1);
    ASSERT_EQ(ix.h->pages, 6);
    ASSERT_EQ(ix.h->redirects, 1);
    /* Sorted in byte order: "AT&T" < "Apple" < "Banana" < "\xc3..." */
    t = pp_wiki_title(&ix, 0, &tl);
    ASSERT_TRUE(tl == 4 && memcmp(t, "AT&T", 4) == 0);
    banana = pp_wiki_find(&ix, "Banana", 6);
    apple = pp_wiki_find(&ix, "Apple", 5);
    ASSERT_GE(banana, 0);
    ASSERT_EQ(ix.entry[apple].redirect, (uint32_t)banana);
    ASSERT_EQ(ix.entry[banana].redirect, PP_WIKI_NO_REDIRECT);
    /* The first Banana page won. */
    ASSERT_TRUE(memcmp(DUMP + ix.entry[banana].start + 6, "\n    <title>Banana</title>\n    <ns>", 30) == 0);
    ASSERT_EQ(pp_wiki_find(&ix, "Banan", 5), -1);
    ASSERT_EQ(pp_wiki_find(&ix, "banana", 6), -1);
    pp_wiki_prefix(&ix, "A", 1, &lo, &hi);
    ASSERT_EQ(hi - lo, 2);
    pp_wiki_prefix(&ix, "Ap", 2, &lo, &hi);
    ASSERT_EQ(hi - lo, 1);
    pp_wiki_prefix(&ix, "Zz", 2, &lo, &hi);
    ASSERT_EQ(hi - lo, 0);
    pp_wiki_prefix(&ix, "", 0, &lo, &hi);
    ASSERT_EQ(hi - lo, 5);
    /* Folded (ASCII here): "a" finds AT&T and Apple. */
    pp_wiki_fold_prefix(&ix, "a", 1, &lo, &hi);
    ASSERT_EQ(hi - lo, 2);
    pp_wiki_fold_prefix(&ix, "ban", 3, &lo, &hi);
    ASSERT_EQ(hi - lo, 1);
    ASSERT_EQ(ix.fold_entry[lo], (uint32_t)banana);
    free(img);
}

static void
test_index_open_refuses_damage(void)
{
    size_t size;
    char *img = build(DUMP, &size), err[256];
    pp_wiki_index ix;
    pp_wiki_header *h = (pp_wiki_header *)img;
    pp_wiki_entry *e = (pp_wiki_entry *)(h + 1);
    uint64_t keep;

    ASSERT_EQ(pp_wiki_index_open(&ix, img, size - 8, err, sizeof err), -1);
    /* Any changed byte: the checksum. */
    img[size - 1] ^= 1;
    ASSERT_EQ(pp_wiki_index_open(&ix, img, size, err, sizeof err), -1);
    ASSERT_TRUE(strstr(err, "checksum") != NULL);
    img[size - 1] ^= 1;
    ASSERT_EQ(pp_wiki_index_open(&ix, img, size, err, sizeof err), 0);
    /* Damage that a matching checksum would let through (a bad writer):
     * the structural checks. */
    keep = e[1].title_off;
    e[1].title_off = h->titles_size + 5;
    h->checksum = pp_wiki_checksum(img, size);
    ASSERT_EQ(pp_wiki_index_open(&ix, img, size, err, sizeof err), -1);
    ASSERT_TRUE(strstr(err, "entry") != NULL);
    e[1].title_off = keep;
    e[2].start = h->dump_size;
    h->checksum = pp_wiki_checksum(img, size);
    ASSERT_EQ(pp_wiki_index_open(&ix, img, size, err, sizeof err), -1);
    ASSERT_TRUE(strstr(err, "beyond") != NULL);
    free(img);
}

static void
test_empty_export(void)
{
    size_t size, lo, hi;
    void *img = build("<mediawiki>\n</mediawiki>\n", &size);
    pp_wiki_index ix;
    char err[256];

    ASSERT_EQ(pp_wiki_index_open(&ix, img, size, err, sizeof err), 0);
    ASSERT_EQ(ix.n, 0);
    ASSERT_EQ(pp_wiki_find(&ix, "a", 1), -1);
    pp_wiki_prefix(&ix, "abc", 3, &lo, &hi);
    ASSERT_EQ(hi - lo, 0);
    free(img);
}

static void
test_fragments_join_up(void)
{
    /* Cut the dump anywhere: pages inside a piece come from the fragment
     * scan, the seams from a sequential scan, and together they are the
     * pages of the whole. */
    size_t len = sizeof DUMP - 1, cut;

    for (cut = 1; cut < len; cut += 3) {
        pp_wiki_scanner seq, frag;
        seen s, f;
        size_t head, tail, used;
        memset(&s, 0, sizeof s);
        memset(&f, 0, sizeof f);
        pp_wiki_scanner_init(&seq, on_page, &s);
        pp_wiki_scanner_init(&frag, on_page, &f);
        /* piece 1: DUMP[0:cut] scanned in sequence */
        used = pp_wiki_scan(&seq, DUMP, cut, 0);
        ASSERT_NE(used, (size_t)-1);
        ASSERT_EQ(pp_wiki_scan_fragment(&frag, DUMP + cut, len - cut, &head, &tail), 0);
        ASSERT_LE(head, tail);
        /* the seam: what piece 1 left, then piece 2 up to head */
        {
            char seam[sizeof DUMP];
            size_t n = cut - used;
            memcpy(seam, DUMP + used, n);
            memcpy(seam + n, DUMP + cut, head);
            ASSERT_EQ(pp_wiki_scan(&seq, seam, n + head, head == len - cut), n + head);
        }
        if (head < len - cut) {
            ASSERT_EQ(pp_wiki_scan_skip(&seq, cut + tail), 0);
            ASSERT_EQ(pp_wiki_scan(&seq, DUMP + cut + tail, len - cut - tail, 1), len - cut - tail);
        }
        ASSERT_EQ(s.n + f.n, 6);
        {
            int i;
            for (i = 0; i < f.n; i++)
                ASSERT_TRUE(memcmp(DUMP + cut + f.start[i], "<page>", 6) == 0);
        }
    }
}

int
main(void)
{
    PP_TEST_BEGIN();
    RUN_TEST(test_scan_pages_at_any_split);
    RUN_TEST(test_scan_errors_name_the_offset);
    RUN_TEST(test_index_lookups);
    RUN_TEST(test_index_open_refuses_damage);
    RUN_TEST(test_empty_export);
    RUN_TEST(test_fragments_join_up);
    return PP_TEST_DONE();
}
