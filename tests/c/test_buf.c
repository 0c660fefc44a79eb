/* test_buf.c -- pp_buf (growable byte buffer) and pp_reader (its cursor). */
#include "pp_buf.h"
#include "pp_test.h"

#include <sys/mman.h>

/* A deterministic byte pattern: byte i of the stream. */
static unsigned char
pattern(size_t i)
{
    return (unsigned char)((i * 131u) ^ (i >> 8));
}

static void
check_contents(const pp_buf *b, size_t n)
{
    size_t i;

    ASSERT_EQ(b->len, n);
    ASSERT_LE(b->len, b->cap);
    for (i = 0; i < n; i++) {
        if (b->data[i] != pattern(i))
            PP_TEST_FAIL("byte %zu is 0x%02x, want 0x%02x", i, b->data[i],
                         pattern(i));
    }
}

static void
test_init_and_free(void)
{
    pp_buf b = PP_BUF_INIT;

    ASSERT_NULL(b.data);
    ASSERT_EQ(b.len, 0);
    ASSERT_EQ(b.cap, 0);
    pp_buf_free(&b);          /* freeing an empty buffer is fine */
    ASSERT_NULL(b.data);

    /* An empty put on an empty buffer allocates nothing. */
    ASSERT_EQ(pp_buf_put(&b, NULL, 0), 0);
    ASSERT_EQ(b.len, 0);
    ASSERT_EQ(pp_buf_reserve(&b, 0), 0);

    ASSERT_EQ(pp_buf_put_u8(&b, 9), 0);
    ASSERT_NOT_NULL(b.data);
    ASSERT_EQ(b.cap, 64);
    pp_buf_free(&b);
    ASSERT_NULL(b.data);
    ASSERT_EQ(b.len, 0);
    ASSERT_EQ(b.cap, 0);
    /* A freed buffer is reusable. */
    ASSERT_EQ(pp_buf_put_u8(&b, 1), 0);
    ASSERT_EQ(b.data[0], 1);
    pp_buf_free(&b);
}

static void
test_put_u8_growth(void)
{
    pp_buf b = PP_BUF_INIT;
    size_t i, cap = 0;

    for (i = 0; i < 100000; i++) {
        ASSERT_EQ(pp_buf_put_u8(&b, pattern(i)), 0);
        if (b.cap != cap) {
            /* Capacity starts at 64 and doubles, and only when full. */
            ASSERT_EQ(b.cap, cap ? cap * 2 : 64);
            ASSERT_EQ(i, cap);
            cap = b.cap;
        }
    }
    check_contents(&b, 100000);
    pp_buf_free(&b);
}

static void
test_put_many_sizes(void)
{
    unsigned char src[5000];
    pp_buf b = PP_BUF_INIT;
    size_t n, i, total = 0;

    for (i = 0; i < sizeof(src); i++)
        src[i] = 0;
    /* Chunks of every size 0..1100, then some odd large ones; each chunk
     * continues the pattern so the whole stream can be checked. */
    for (n = 0; n < 1200; n++) {
        size_t len = n <= 1100 ? n : (n * 977) % sizeof(src);

        for (i = 0; i < len; i++)
            src[i] = pattern(total + i);
        ASSERT_EQ(pp_buf_put(&b, src, len), 0);
        total += len;
        ASSERT_EQ(b.len, total);
        ASSERT_LE(b.len, b.cap);
    }
    check_contents(&b, total);
    /* Capacity is 64 times a power of two. */
    ASSERT_EQ(b.cap % 64, 0);
    ASSERT_EQ((b.cap / 64) & (b.cap / 64 - 1), 0);
    ASSERT_LT(b.cap, 2 * total);
    pp_buf_free(&b);

    /* One put far larger than the initial capacity. */
    {
        static unsigned char large[300000];

        for (i = 0; i < sizeof(large); i++)
            large[i] = pattern(i);
        ASSERT_EQ(pp_buf_put(&b, large, sizeof(large)), 0);
        check_contents(&b, sizeof(large));
        ASSERT_EQ(b.cap, (size_t)64 << 13); /* 524288 */
        pp_buf_free(&b);
    }
}

static void
test_reserve(void)
{
    pp_buf b = PP_BUF_INIT;
    unsigned char *data;
    size_t extra, i, len, cap;

    for (extra = 0; extra < 70000; extra = extra * 3 + 1) {
        len = b.len;
        ASSERT_EQ(pp_buf_reserve(&b, extra), 0);
        ASSERT_EQ(b.len, len);          /* reserving writes nothing */
        ASSERT_GE(b.cap - b.len, extra);
        /* Puts within the reservation never grow or move the data. */
        data = b.data;
        cap = b.cap;
        for (i = 0; i < extra; i++)
            ASSERT_EQ(pp_buf_put_u8(&b, pattern(len + i)), 0);
        ASSERT_PTR_EQ(b.data, data);
        ASSERT_EQ(b.cap, cap);
    }
    check_contents(&b, b.len);

    /* An impossible reservation fails and leaves the buffer intact. */
    len = b.len;
    data = b.data;
    ASSERT_EQ(pp_buf_reserve(&b, SIZE_MAX), -1);
    ASSERT_EQ(pp_buf_reserve(&b, SIZE_MAX / 2), -1);
    {
        /* Through a volatile: GCC 16 sees the constant reach memcpy() and
         * flags it, though pp_buf_put() refuses before copying. */
        volatile size_t huge = SIZE_MAX;
        ASSERT_EQ(pp_buf_put(&b, "x", huge), -1);
    }
    ASSERT_PTR_EQ(b.data, data);
    check_contents(&b, len);
    pp_buf_free(&b);

    /* Reserving on an empty buffer. */
    ASSERT_EQ(pp_buf_reserve(&b, 1000), 0);
    ASSERT_EQ(b.len, 0);
    ASSERT_EQ(b.cap, 1024);
    /* Filling to exactly cap, in one put or byte by byte, does not grow. */
    {
        static unsigned char fill[1024];

        ASSERT_EQ(pp_buf_put(&b, fill, 1000), 0);
        ASSERT_EQ(pp_buf_reserve(&b, 24), 0);
        ASSERT_EQ(b.cap, 1024);
        for (i = 0; i < 24; i++)
            ASSERT_EQ(pp_buf_put_u8(&b, 0), 0);
        ASSERT_EQ(b.len, 1024);
        ASSERT_EQ(b.cap, 1024);
        ASSERT_EQ(pp_buf_reserve(&b, 0), 0);
        ASSERT_EQ(b.cap, 1024);
        ASSERT_EQ(pp_buf_put_u8(&b, 0), 0);  /* one more: doubles */
        ASSERT_EQ(b.cap, 2048);
    }
    pp_buf_free(&b);
}

static void
test_reader(void)
{
    pp_buf b = PP_BUF_INIT;
    pp_reader r;
    const unsigned char *v, *start;
    unsigned char out[16];
    uint32_t u32 = 0xdeadbeef, got32;
    uint8_t u8;
    size_t i;

    ASSERT_EQ(pp_buf_put_u8(&b, 0x7f), 0);
    ASSERT_EQ(pp_buf_put(&b, &u32, sizeof(u32)), 0);
    ASSERT_EQ(pp_buf_put(&b, "hello world", 11), 0);
    ASSERT_EQ(b.len, 16);

    r.p = start = b.data;
    r.end = b.data + b.len;
    ASSERT_EQ(pp_read(&r, &u8, 1), 0);
    ASSERT_EQ(u8, 0x7f);
    ASSERT_EQ(pp_read(&r, &got32, sizeof(got32)), 0);
    ASSERT_EQ(got32, 0xdeadbeef);
    ASSERT_PTR_EQ(r.p, start + 5);

    /* Asking for one byte more than remains fails and does not move. */
    for (i = 0; i < sizeof(out); i++)
        out[i] = 0xee;
    ASSERT_EQ(pp_read(&r, out, 12), -1);
    ASSERT_PTR_EQ(r.p, start + 5);
    ASSERT_EQ(out[0], 0xee);        /* nothing copied */
    ASSERT_NULL(pp_read_view(&r, 12));
    ASSERT_PTR_EQ(r.p, start + 5);
    ASSERT_EQ(pp_read(&r, out, SIZE_MAX), -1);
    ASSERT_NULL(pp_read_view(&r, SIZE_MAX));
    ASSERT_PTR_EQ(r.p, start + 5);

    /* A view points into the buffer itself: no copy. */
    v = pp_read_view(&r, 5);
    ASSERT_PTR_EQ(v, start + 5);
    ASSERT_EQ(memcmp(v, "hello", 5), 0);
    ASSERT_PTR_EQ(r.p, start + 10);

    /* Zero-length reads succeed anywhere, without moving. */
    ASSERT_EQ(pp_read(&r, out, 0), 0);
    v = pp_read_view(&r, 0);
    ASSERT_PTR_EQ(v, start + 10);
    ASSERT_PTR_EQ(r.p, start + 10);

    /* Exactly what remains. */
    ASSERT_EQ(pp_read(&r, out, 6), 0);
    ASSERT_EQ(memcmp(out, " world", 6), 0);
    ASSERT_PTR_EQ(r.p, r.end);

    /* At the end: everything but zero bytes fails. */
    ASSERT_EQ(pp_read(&r, out, 1), -1);
    ASSERT_NULL(pp_read_view(&r, 1));
    ASSERT_EQ(pp_read(&r, out, 0), 0);
    ASSERT_PTR_EQ(pp_read_view(&r, 0), r.end);
    ASSERT_PTR_EQ(r.p, r.end);
    pp_buf_free(&b);
}

/* A reader over a buffer that never allocated: {NULL, NULL}. */
static void
test_reader_empty_buffer(void)
{
    pp_buf b = PP_BUF_INIT;
    pp_reader r;
    unsigned char out[4] = {1, 2, 3, 4};

    r.p = b.data;
    r.end = b.data;
    /* Zero bytes are always there (and memcpy must not see NULL). */
    ASSERT_EQ(pp_read(&r, out, 0), 0);
    ASSERT_EQ(pp_read(&r, out, 1), -1);
    ASSERT_EQ(out[0], 1);
    ASSERT_NULL(pp_read_view(&r, 1));
    ASSERT_NULL(r.p);
}

/* The reader's input ends at a page boundary followed by an inaccessible
 * page (as picohttpparser's tests do), so any read past the end faults. */
static void
test_reader_guard_page(void)
{
    size_t ps = (size_t)sysconf(_SC_PAGESIZE), n, k, i;
    unsigned char *map, *end, out[64];
    pp_reader r;

    map = mmap(NULL, 2 * ps, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_TRUE(map != MAP_FAILED);
    ASSERT_EQ(mprotect(map + ps, ps, PROT_NONE), 0);
    end = map + ps;

    for (n = 0; n <= sizeof(out); n++) {
        for (i = 0; i < n; i++)
            (end - n)[i] = pattern(i);
        /* Read n bytes in pieces of k, then try one more byte. */
        for (k = 1; k <= (n ? n : 1); k++) {
            const unsigned char *v;
            size_t pos = 0, step;

            r.p = end - n;
            r.end = end;
            while (pos < n) {
                step = n - pos < k ? n - pos : k;
                if (pos % 2) {
                    ASSERT_EQ(pp_read(&r, out, step), 0);
                    v = out;
                } else {
                    v = pp_read_view(&r, step);
                    ASSERT_NOT_NULL(v);
                }
                for (i = 0; i < step; i++)
                    ASSERT_EQ(v[i], pattern(pos + i));
                pos += step;
            }
            ASSERT_PTR_EQ(r.p, end);
            ASSERT_EQ(pp_read(&r, out, 1), -1);
            ASSERT_NULL(pp_read_view(&r, 1));
            ASSERT_PTR_EQ(r.p, end);
        }
    }
    ASSERT_EQ(munmap(map, 2 * ps), 0);
}

int
main(void)
{
    PP_TEST_BEGIN();
    RUN_TEST(test_init_and_free);
    RUN_TEST(test_put_u8_growth);
    RUN_TEST(test_put_many_sizes);
    RUN_TEST(test_reserve);
    RUN_TEST(test_reader);
    RUN_TEST(test_reader_empty_buffer);
    RUN_TEST(test_reader_guard_page);
    return PP_TEST_DONE();
}
