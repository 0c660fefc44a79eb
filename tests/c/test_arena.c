/* test_arena.c -- pp_arena (bump arenas that can be write-protected) and
 * pp_region (reserved address space they can live in). */
#include "pp_arena.h"
#include "pp_test.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)
#define GIB ((size_t)1 << 30)

static size_t
page(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

/* Runs one write of byte v to p in a child process; returns the child's
 * wait status.  The child restores the default SIGSEGV action (a sanitizer
 * would otherwise catch the fault and exit normally) and dumps no core. */
static int
write_in_child(void *p, unsigned char v)
{
    struct rlimit no_core = {0, 0};
    int status;
    pid_t pid;

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    ASSERT_NE(pid, -1);
    if (pid == 0) {
        setrlimit(RLIMIT_CORE, &no_core);
        signal(SIGSEGV, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        *(volatile unsigned char *)p = v;
        _exit(0);
    }
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    return status;
}

static void
assert_write_faults(void *p)
{
    int status = write_in_child(p, 0x5a);

    if (!WIFSIGNALED(status))
        PP_TEST_FAIL("write to %p did not fault (child exited %d)", p,
                     WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    ASSERT_EQ(WTERMSIG(status), SIGSEGV);
}

static void
assert_write_works(void *p)
{
    int status = write_in_child(p, 0x5a);

    if (!WIFEXITED(status))
        PP_TEST_FAIL("write to %p faulted (signal %d)", p,
                     WIFSIGNALED(status) ? WTERMSIG(status) : -1);
    ASSERT_EQ(WEXITSTATUS(status), 0);
}

static void
test_init_rounds_chunk_size(void)
{
    pp_arena a;

    pp_arena_init(&a, 0, NULL);
    ASSERT_EQ(a.chunk_size, MIB);
    ASSERT_NULL(a.chunks);
    ASSERT_EQ(a.used, 0);
    ASSERT_EQ(a.mapped, 0);
    ASSERT_EQ(a.protected_, 0);

    pp_arena_init(&a, 1, NULL);
    ASSERT_EQ(a.chunk_size, page());
    pp_arena_init(&a, page() + 1, NULL);
    ASSERT_EQ(a.chunk_size, 2 * page());
    pp_arena_release(&a);   /* nothing mapped: a no-op */
}

#define NBLOCKS 2000

static void
test_alignment_and_block_size(void)
{
    pp_arena a;
    unsigned char *blk[NBLOCKS];
    size_t sz[NBLOCKS], i, j;

    pp_arena_init(&a, 64 * KIB, NULL);
    for (i = 0; i < NBLOCKS; i++) {
        /* Every size from 0 to 300, then a few odd larger ones. */
        sz[i] = i <= 300 ? i : (i * 7919) % 5000;
        blk[i] = pp_arena_alloc(&a, sz[i]);
        ASSERT_NOT_NULL(blk[i]);
        ASSERT_EQ((uintptr_t)blk[i] % 16, 0);
        ASSERT_EQ(pp_arena_block_size(blk[i]), (sz[i] + 15) & ~(size_t)15);
        ASSERT_TRUE(pp_arena_contains(&a, blk[i]));
        if (sz[i])
            ASSERT_TRUE(pp_arena_contains(&a, blk[i] + sz[i] - 1));
        memset(blk[i], (int)(i & 0xff), sz[i]);
    }
    /* No block overlapped another: every pattern is intact. */
    for (i = 0; i < NBLOCKS; i++) {
        for (j = 0; j < sz[i]; j++) {
            if (blk[i][j] != (unsigned char)(i & 0xff))
                PP_TEST_FAIL("block %zu byte %zu overwritten", i, j);
        }
        ASSERT_EQ(pp_arena_block_size(blk[i]), (sz[i] + 15) & ~(size_t)15);
    }
    ASSERT_GE(a.mapped, a.used);
    ASSERT_EQ(a.mapped % page(), 0);
    ASSERT_TRUE(a.mapped > 64 * KIB); /* it took more than one chunk */
    pp_arena_release(&a);
}

static void
test_contains(void)
{
    pp_arena a, b;
    char *p, *q, on_stack[16];
    void *heap = malloc(64);

    ASSERT_NOT_NULL(heap);
    pp_arena_init(&a, 0, NULL);
    pp_arena_init(&b, 0, NULL);
    ASSERT_EQ(pp_arena_contains(&a, heap), 0); /* no chunks yet */
    p = pp_arena_alloc(&a, 100);
    q = pp_arena_alloc(&b, 100);
    ASSERT_NOT_NULL(p);
    ASSERT_NOT_NULL(q);
    ASSERT_TRUE(pp_arena_contains(&a, p));
    ASSERT_TRUE(pp_arena_contains(&b, q));
    ASSERT_EQ(pp_arena_contains(&a, q), 0);
    ASSERT_EQ(pp_arena_contains(&b, p), 0);
    ASSERT_EQ(pp_arena_contains(&a, heap), 0);
    ASSERT_EQ(pp_arena_contains(&a, on_stack), 0);
    ASSERT_EQ(pp_arena_contains(&a, NULL), 0);
    pp_arena_release(&a);
    pp_arena_release(&b);
    free(heap);
}

/* Chunks are page-aligned mmaps; a chunk of one page has exact bounds. */
static void
test_contains_bounds(void)
{
    pp_arena a;
    uintptr_t start, end;
    char *p;

    pp_arena_init(&a, page(), NULL);
    p = pp_arena_alloc(&a, 16);
    ASSERT_NOT_NULL(p);
    start = (uintptr_t)p & ~(uintptr_t)(page() - 1);
    end = start + page();
    ASSERT_EQ(a.mapped, page());
    ASSERT_TRUE(pp_arena_contains(&a, (void *)start));
    ASSERT_TRUE(pp_arena_contains(&a, (void *)(end - 1)));
    ASSERT_EQ(pp_arena_contains(&a, (void *)end), 0);
    ASSERT_EQ(pp_arena_contains(&a, (void *)(start - 1)), 0);
    pp_arena_release(&a);
}

/* Sizes right around the chunk size: each block must fit wholly inside the
 * chunk it comes from (the chunk's own header included). */
static void
test_sizes_near_chunk_size(void)
{
    size_t cs = 16 * KIB, sz;
    pp_arena a;
    unsigned char *p;

    pp_arena_init(&a, cs, NULL);
    for (sz = cs - 96; sz <= cs + 32; sz++) {
        p = pp_arena_alloc(&a, sz);
        ASSERT_NOT_NULL(p);
        ASSERT_EQ((uintptr_t)p % 16, 0);
        ASSERT_TRUE(pp_arena_contains(&a, p));
        if (sz) {
            ASSERT_TRUE(pp_arena_contains(&a, p + sz - 1));
            /* The whole block lies in one chunk: the same page-aligned
             * mapping holds both ends (checked by writing them). */
            p[0] = 1;
            p[sz - 1] = 2;
        }
        ASSERT_GE(pp_arena_block_size(p), sz);
    }
    pp_arena_release(&a);
}

static void
test_protect(void)
{
    pp_arena a;
    unsigned char *p, *big;

    pp_arena_init(&a, 16 * KIB, NULL);
    p = pp_arena_alloc(&a, 64);
    big = pp_arena_alloc(&a, 64 * KIB); /* a second, larger chunk */
    ASSERT_NOT_NULL(p);
    ASSERT_NOT_NULL(big);
    memset(p, 0x11, 64);
    memset(big, 0x22, 64 * KIB);
    assert_write_works(p);

    ASSERT_EQ(pp_arena_protect(&a, 1), 0);
    ASSERT_EQ(a.protected_, 1);
    /* Reading is fine; writing faults, in every chunk. */
    ASSERT_EQ(p[63], 0x11);
    ASSERT_EQ(big[64 * KIB - 1], 0x22);
    assert_write_faults(p);
    assert_write_faults(p + 63);
    assert_write_faults(big);
    assert_write_faults(big + 64 * KIB - 1);
    ASSERT_EQ(pp_arena_block_size(p), 64);

    /* No allocation while protected. */
    errno = 0;
    ASSERT_NULL(pp_arena_alloc(&a, 16));
    ASSERT_EQ(errno, EPERM);
    errno = 0;
    ASSERT_NULL(pp_arena_alloc(&a, 0));
    ASSERT_EQ(errno, EPERM);

    /* Protecting twice is harmless. */
    ASSERT_EQ(pp_arena_protect(&a, 1), 0);
    assert_write_faults(p);

    ASSERT_EQ(pp_arena_protect(&a, 0), 0);
    ASSERT_EQ(a.protected_, 0);
    assert_write_works(p);
    assert_write_works(big + 100);
    p[0] = 0x33;
    big[0] = 0x44;
    ASSERT_EQ(p[0], 0x33);
    ASSERT_EQ(big[0], 0x44);
    ASSERT_EQ(p[1], 0x11);
    p = pp_arena_alloc(&a, 16);
    ASSERT_NOT_NULL(p);
    p[15] = 1;

    /* Releasing a protected arena works too. */
    ASSERT_EQ(pp_arena_protect(&a, 1), 0);
    pp_arena_release(&a);
    ASSERT_NULL(a.chunks);
    ASSERT_EQ(a.mapped, 0);
}

static void
test_protect_empty_arena(void)
{
    pp_arena a;

    pp_arena_init(&a, 0, NULL);
    ASSERT_EQ(pp_arena_protect(&a, 1), 0);
    errno = 0;
    ASSERT_NULL(pp_arena_alloc(&a, 8));
    ASSERT_EQ(errno, EPERM);
    ASSERT_EQ(pp_arena_protect(&a, 0), 0);
    ASSERT_NOT_NULL(pp_arena_alloc(&a, 8));
    pp_arena_release(&a);
}

static void
test_large_allocation(void)
{
    pp_arena a;
    unsigned char *small, *large, *after;
    size_t n = 3 * MIB + 5;

    pp_arena_init(&a, 64 * KIB, NULL);
    small = pp_arena_alloc(&a, 32);
    large = pp_arena_alloc(&a, n);
    ASSERT_NOT_NULL(small);
    ASSERT_NOT_NULL(large);
    ASSERT_EQ((uintptr_t)large % 16, 0);
    ASSERT_EQ(pp_arena_block_size(large), (n + 15) & ~(size_t)15);
    memset(large, 0xab, n);
    ASSERT_TRUE(pp_arena_contains(&a, large));
    ASSERT_TRUE(pp_arena_contains(&a, large + n - 1));
    ASSERT_GE(a.mapped, n + 64 * KIB);
    /* Small allocations carry on afterwards. */
    after = pp_arena_alloc(&a, 32);
    ASSERT_NOT_NULL(after);
    memset(after, 0xcd, 32);
    ASSERT_EQ(large[n - 1], 0xab);
    ASSERT_EQ(large[0], 0xab);

    /* Exactly a chunk's worth, and just over it. */
    ASSERT_NOT_NULL(pp_arena_alloc(&a, 64 * KIB));
    ASSERT_NOT_NULL(pp_arena_alloc(&a, 64 * KIB + 1));

    /* An absurd size fails cleanly. */
    errno = 0;
    ASSERT_NULL(pp_arena_alloc(&a, SIZE_MAX));
    ASSERT_EQ(errno, ENOMEM);
    errno = 0;
    ASSERT_NULL(pp_arena_alloc(&a, SIZE_MAX - 8));
    ASSERT_EQ(errno, ENOMEM);
    pp_arena_release(&a);
}

static void
test_release(void)
{
    pp_arena a;
    void *p[10];
    int i;

    pp_arena_init(&a, page(), NULL);
    for (i = 0; i < 10; i++) {
        p[i] = pp_arena_alloc(&a, page() / 2);
        ASSERT_NOT_NULL(p[i]);
    }
    ASSERT_TRUE(a.mapped >= 5 * page());
    pp_arena_release(&a);
    ASSERT_NULL(a.chunks);
    ASSERT_EQ(a.used, 0);
    ASSERT_EQ(a.mapped, 0);
    for (i = 0; i < 10; i++)
        ASSERT_EQ(pp_arena_contains(&a, p[i]), 0);
    /* A released arena is empty, not dead. */
    p[0] = pp_arena_alloc(&a, 10);
    ASSERT_NOT_NULL(p[0]);
    ASSERT_TRUE(pp_arena_contains(&a, p[0]));
    pp_arena_release(&a);
}

static void
test_region(void)
{
    static pp_region r;     /* a region lives for the process */
    pp_arena a, plain;
    unsigned char *p[100], *big, *outside;
    void *heap = malloc(128);
    int i;

    ASSERT_NOT_NULL(heap);
    ASSERT_EQ(pp_region_reserve(&r, GIB), 0);
    ASSERT_NOT_NULL(r.base);
    ASSERT_EQ(r.size, GIB);
    ASSERT_EQ(r.used, 0);
    ASSERT_EQ((uintptr_t)r.base % page(), 0);
    ASSERT_TRUE(pp_region_contains(&r, r.base));
    ASSERT_TRUE(pp_region_contains(&r, r.base + GIB - 1));
    ASSERT_EQ(pp_region_contains(&r, r.base + GIB), 0);
    ASSERT_EQ(pp_region_contains(&r, (void *)((uintptr_t)r.base - 1)), 0);
    ASSERT_EQ(pp_region_contains(&r, NULL), 0);
    ASSERT_EQ(pp_region_contains(&r, heap), 0);
    /* Reserved but not yet taken: not accessible. */
    assert_write_faults(r.base);

    pp_arena_init(&a, 64 * KIB, &r);
    pp_arena_init(&plain, 64 * KIB, NULL);
    for (i = 0; i < 100; i++) {
        p[i] = pp_arena_alloc(&a, 1000);
        ASSERT_NOT_NULL(p[i]);
        ASSERT_TRUE(pp_region_contains(&r, p[i]));
        ASSERT_TRUE(pp_region_contains(&r, p[i] + 999));
        ASSERT_TRUE(pp_arena_contains(&a, p[i]));
        memset(p[i], i, 1000);
    }
    big = pp_arena_alloc(&a, 5 * MIB);
    ASSERT_NOT_NULL(big);
    ASSERT_TRUE(pp_region_contains(&r, big));
    ASSERT_TRUE(pp_region_contains(&r, big + 5 * MIB - 1));
    memset(big, 0x77, 5 * MIB);
    ASSERT_EQ(r.used, a.mapped);

    outside = pp_arena_alloc(&plain, 100);
    ASSERT_NOT_NULL(outside);
    ASSERT_EQ(pp_region_contains(&r, outside), 0);
    ASSERT_EQ(pp_region_contains(&r, heap), 0);

    /* Protection works the same on region chunks. */
    ASSERT_EQ(pp_arena_protect(&a, 1), 0);
    assert_write_faults(p[0]);
    assert_write_faults(big);
    ASSERT_EQ(p[99][999], 99);
    ASSERT_EQ(pp_arena_protect(&a, 0), 0);
    assert_write_works(p[0]);

    /* Released region chunks stay in the region but become inaccessible. */
    pp_arena_release(&a);
    ASSERT_TRUE(pp_region_contains(&r, p[0]));
    ASSERT_EQ(pp_arena_contains(&a, p[0]), 0);
    assert_write_faults(p[0]);
    assert_write_faults(big);
    /* New chunks come from fresh space; the region never reuses. */
    {
        size_t used = r.used;

        p[0] = pp_arena_alloc(&a, 10);
        ASSERT_NOT_NULL(p[0]);
        ASSERT_TRUE(pp_region_contains(&r, p[0]));
        ASSERT_TRUE((char *)p[0] >= r.base + used);
        ASSERT_EQ(r.used, used + 64 * KIB);
    }
    pp_arena_release(&a);
    pp_arena_release(&plain);
    free(heap);
}

static void
test_region_exhausted(void)
{
    static pp_region r;
    pp_arena a;

    ASSERT_EQ(pp_region_reserve(&r, 3 * page() - 1), 0);
    ASSERT_EQ(r.size, 3 * page());
    pp_arena_init(&a, page(), &r);
    ASSERT_NOT_NULL(pp_arena_alloc(&a, page() / 2));
    ASSERT_NOT_NULL(pp_arena_alloc(&a, page() / 2));
    ASSERT_NOT_NULL(pp_arena_alloc(&a, page() / 2));
    ASSERT_EQ(r.used, 3 * page());
    errno = 0;
    ASSERT_NULL(pp_arena_alloc(&a, page() / 2));
    ASSERT_EQ(errno, ENOMEM);
    /* A failed allocation leaves the arena usable where it has room. */
    ASSERT_NOT_NULL(pp_arena_alloc(&a, 16));
    errno = 0;
    ASSERT_NULL(pp_arena_alloc(&a, 4 * page()));
    ASSERT_EQ(errno, ENOMEM);
    ASSERT_EQ(r.used, 3 * page());
    pp_arena_release(&a);
}

/* A cache of chunks smaller than a page carves them from slabs: arenas get
 * disjoint 1 KiB chunks, every chunk comes back on release (even past max,
 * since a slab chunk cannot be unmapped alone) and is reused, and drain
 * unmaps the slabs. */
static void
test_sub_page_chunk_cache(void)
{
    enum { N = 100, B = 512 };
    static pp_arena a[N];
    unsigned char *p[N];
    pp_chunk_cache cc;
    size_t before;
    int i, j;

    pp_chunk_cache_init(&cc, 1000, 4);
    ASSERT_EQ(cc.chunk_size, 1024);
    for (i = 0; i < N; i++) {
        pp_arena_init_cached(&a[i], &cc);
        p[i] = pp_arena_alloc(&a[i], B);
        ASSERT_NOT_NULL(p[i]);
        memset(p[i], i, B);
        ASSERT_EQ(a[i].mapped, 1024);
    }
    for (i = 0; i < N; i++) {
        for (j = 0; j < B; j++)
            ASSERT_EQ(p[i][j], (unsigned char)i);
    }
    /* Bigger than the chunk: a page-multiple chunk of its own. */
    ASSERT_NOT_NULL(pp_arena_alloc(&a[0], 3000));
    ASSERT_EQ(a[0].mapped, 1024 + page());
    before = cc.count;
    for (i = 0; i < N; i++)
        pp_arena_release(&a[i]);
    ASSERT_EQ(cc.count, before + N);
    pp_arena_init_cached(&a[0], &cc);
    ASSERT_NOT_NULL(pp_arena_alloc(&a[0], 16));
    ASSERT_EQ(cc.count, before + N - 1);
    pp_arena_release(&a[0]);
    pp_chunk_cache_drain(&cc);
    ASSERT_EQ(cc.count, 0);
    ASSERT_NULL(cc.slabs);
}

int
main(void)
{
    PP_TEST_BEGIN();
    RUN_TEST(test_init_rounds_chunk_size);
    RUN_TEST(test_alignment_and_block_size);
    RUN_TEST(test_contains);
    RUN_TEST(test_contains_bounds);
    RUN_TEST(test_sizes_near_chunk_size);
    RUN_TEST(test_protect);
    RUN_TEST(test_protect_empty_arena);
    RUN_TEST(test_large_allocation);
    RUN_TEST(test_release);
    RUN_TEST(test_region);
    RUN_TEST(test_region_exhausted);
    RUN_TEST(test_sub_page_chunk_cache);
    return PP_TEST_DONE();
}
