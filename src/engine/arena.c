/* arena.c -- see pp_arena.h.
 *
 * A chunk comes from one of three places: a reserved region (pp_region,
 * for the freeze arenas that are write-protected later), a chunk cache
 * (pp_chunk_cache: sub-page chunks carved from 64 KiB slabs, reused across
 * connections), or its own mmap.  A block carries a 16-byte header holding
 * its size so that a realloc hook can copy it. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "pp_arena.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Under AddressSanitizer, cached chunks are poisoned, so that a use of a
 * connection's memory after its release is caught although the pages stay
 * mapped. */
#if defined(__SANITIZE_ADDRESS__)
#define PP_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PP_ASAN 1
#endif
#endif
#ifdef PP_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

struct pp_arena_chunk {
    pp_arena_chunk *next;
    size_t size;             /* mapped bytes, header included */
    size_t off;              /* next free offset from the chunk start */
};

#define HDR 16u
#define CHUNK_HDR ((sizeof(pp_arena_chunk) + 15u) & ~(size_t)15u)

static size_t
page_size(void)
{
    static size_t ps;

    if (ps == 0)
        ps = (size_t)sysconf(_SC_PAGESIZE);
    return ps;
}

int
pp_region_reserve(pp_region *r, size_t size)
{
    size_t ps = page_size();
    void *p;
    int rc;

    size = (size + ps - 1) & ~(ps - 1);
    p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
             -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    if ((rc = pthread_mutex_init(&r->mu, NULL)) != 0) {
        munmap(p, size);
        return -rc;
    }
    r->base = p;
    r->size = size;
    r->used = 0;
    return 0;
}

/* Takes size bytes (a page multiple) from the region, readable and
 * writable.  Returns NULL with errno set when the region is full. */
static void *
region_take(pp_region *r, size_t size)
{
    char *p = NULL;

    pthread_mutex_lock(&r->mu);
    if (r->size - r->used >= size) {
        p = r->base + r->used;
        if (mprotect(p, size, PROT_READ | PROT_WRITE) == 0)
            r->used += size;
        else
            p = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    if (p == NULL)
        errno = ENOMEM;
    return p;
}

void
pp_arena_init(pp_arena *a, size_t chunk_size, pp_region *region)
{
    size_t ps = page_size();

    if (chunk_size == 0)
        chunk_size = 1u << 20;
    a->chunks = NULL;
    a->chunk_size = (chunk_size + ps - 1) & ~(ps - 1);
    a->used = a->mapped = 0;
    a->protected_ = 0;
    a->region = region;
    a->cache = NULL;
}

#define SLAB_SIZE (64u * 1024u)
#define SLAB_HDR 64u             /* the slab list link, padded */

void
pp_chunk_cache_init(pp_chunk_cache *cc, size_t chunk_size, size_t max)
{
    size_t ps = page_size();

    if (chunk_size == 0)
        chunk_size = ps;
    if (chunk_size < ps) {
        if (chunk_size < 256)
            chunk_size = 256;
        chunk_size = (chunk_size + 63u) & ~(size_t)63u;
    } else {
        chunk_size = (chunk_size + ps - 1) & ~(ps - 1);
    }
    cc->free = NULL;
    cc->chunk_size = chunk_size;
    cc->count = 0;
    cc->max = max;
    cc->slabs = NULL;
}

static int
sub_page(const pp_chunk_cache *cc)
{
    return cc->chunk_size < page_size();
}

/* Maps a slab and puts every chunk it holds into the cache. */
static int
refill(pp_chunk_cache *cc)
{
    char *slab = mmap(NULL, SLAB_SIZE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    size_t off;

    if (slab == MAP_FAILED)
        return -1;
    *(void **)slab = cc->slabs;
    cc->slabs = slab;
    for (off = SLAB_HDR; off + cc->chunk_size <= SLAB_SIZE; off += cc->chunk_size) {
        pp_arena_chunk *c = (pp_arena_chunk *)(slab + off);
        c->size = cc->chunk_size;
        c->next = cc->free;
        cc->free = c;
        cc->count++;
        POISON((char *)c + CHUNK_HDR, c->size - CHUNK_HDR);
    }
    return 0;
}

void
pp_chunk_cache_drain(pp_chunk_cache *cc)
{
    pp_arena_chunk *c, *next;
    void *slab, *snext;

    if (!sub_page(cc)) {
        for (c = cc->free; c; c = next) {
            next = c->next;
            UNPOISON(c, c->size);
            munmap(c, c->size);
        }
    }
    for (slab = cc->slabs; slab; slab = snext) {
        snext = *(void **)slab;
        UNPOISON(slab, SLAB_SIZE);
        munmap(slab, SLAB_SIZE);
    }
    cc->slabs = NULL;
    cc->free = NULL;
    cc->count = 0;
}

void
pp_arena_init_cached(pp_arena *a, pp_chunk_cache *cc)
{
    pp_arena_init(a, cc->chunk_size, NULL);
    a->chunk_size = cc->chunk_size;  /* may be below a page */
    a->cache = cc;
}

static pp_arena_chunk *
new_chunk(pp_arena *a, size_t need)
{
    size_t ps = page_size(), size = a->chunk_size;
    pp_arena_chunk *c;

    if (need + CHUNK_HDR > size)
        size = (need + CHUNK_HDR + ps - 1) & ~(ps - 1);
    else if (size < ps && !(a->cache && size == a->cache->chunk_size))
        size = ps;                   /* only a cache carves sub-page chunks */
    if (a->cache && size == a->cache->chunk_size && a->cache->free == NULL &&
        sub_page(a->cache) && refill(a->cache) < 0) {
        errno = ENOMEM;
        return NULL;
    }
    if (a->region) {
        if ((c = region_take(a->region, size)) == NULL)
            return NULL;
    } else if (a->cache && a->cache->free && size == a->cache->chunk_size) {
        c = a->cache->free;
        a->cache->free = c->next;
        a->cache->count--;
        UNPOISON((char *)c + CHUNK_HDR, size - CHUNK_HDR);
    } else {
        c = mmap(NULL, size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (c == MAP_FAILED) {
            errno = ENOMEM;
            return NULL;
        }
    }
    c->size = size;
    c->off = CHUNK_HDR;
    c->next = a->chunks;
    a->chunks = c;
    a->mapped += size;
    return c;
}

void *
pp_arena_alloc(pp_arena *a, size_t size)
{
    pp_arena_chunk *c = a->chunks;
    size_t need = HDR + ((size + 15u) & ~(size_t)15u);
    char *block;

    if (a->protected_) {
        errno = EPERM;
        return NULL;
    }
    if (size > SIZE_MAX / 2) {
        errno = ENOMEM;
        return NULL;
    }
    if (c == NULL || c->size - c->off < need) {
        if ((c = new_chunk(a, need)) == NULL)
            return NULL;
    }
    block = (char *)c + c->off;
    c->off += need;
    a->used += need;
    *(size_t *)block = need - HDR;
    return block + HDR;
}

size_t
pp_arena_block_size(const void *block)
{
    return *(const size_t *)((const char *)block - HDR);
}

int
pp_arena_contains(const pp_arena *a, const void *ptr)
{
    const pp_arena_chunk *c;
    uintptr_t p = (uintptr_t)ptr;

    for (c = a->chunks; c; c = c->next) {
        if (p >= (uintptr_t)c && p < (uintptr_t)c + c->size)
            return 1;
    }
    return 0;
}

int
pp_arena_protect(pp_arena *a, int readonly)
{
    pp_arena_chunk *c, *next;
    int prot = readonly ? PROT_READ : PROT_READ | PROT_WRITE;

    for (c = a->chunks; c; c = next) {
        next = c->next;   /* read before the page may become read-only */
        if (mprotect(c, c->size, prot) != 0)
            return -errno;
    }
    a->protected_ = readonly;
    return 0;
}

void
pp_arena_release(pp_arena *a)
{
    pp_arena_chunk *c, *next;

    if (a->protected_)
        (void)pp_arena_protect(a, 0);
    for (c = a->chunks; c; c = next) {
        next = c->next;
        if (a->region) {
            mprotect(c, c->size, PROT_NONE);
        } else if (a->cache && c->size == a->cache->chunk_size &&
                   (a->cache->count < a->cache->max || sub_page(a->cache))) {
            c->next = a->cache->free;
            a->cache->free = c;
            a->cache->count++;
            POISON((char *)c + CHUNK_HDR, c->size - CHUNK_HDR);
        } else {
            munmap(c, c->size);
        }
    }
    a->chunks = NULL;
    a->used = a->mapped = 0;
}
