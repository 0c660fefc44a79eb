/* pp_arena.h -- page-aligned bump arenas that can be made read-only.
 *
 * The safety-proof mode of freeze() builds each frozen graph inside one
 * arena and then write-protects it, so that any later write into frozen
 * memory (a hidden cache fill, a refcount write, a bug of ours) faults at
 * once instead of racing silently.  Memory is never returned piecemeal: an
 * arena is released whole, or lives for the process.  No Python here.
 */
#ifndef PP_ARENA_H
#define PP_ARENA_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* A reserved range of address space that arenas may carve chunks from, so
 * that "is this pointer frozen memory?" is two comparisons.  Reserving costs
 * no memory (PROT_NONE, MAP_NORESERVE); chunks become readable and writable
 * as they are taken.  Chunks are never given back to a region. */
typedef struct pp_region {
    char *base;
    size_t size;
    size_t used;
    pthread_mutex_t mu;
} pp_region;

/* Reserves size bytes (rounded up to pages).  Returns 0 or -errno. */
int pp_region_reserve(pp_region *r, size_t size);

static inline int
pp_region_contains(const pp_region *r, const void *p)
{
    return (uintptr_t)p - (uintptr_t)r->base < r->size;
}

typedef struct pp_arena_chunk pp_arena_chunk;

/* A cache of free chunks of one size for arenas that come and go often
 * (one per connection): a new arena takes a chunk from here instead of
 * calling mmap, and a released one gives its chunks back instead of calling
 * munmap, which in a threaded process also costs a TLB shoot-down on every
 * CPU running it.  Not thread-safe: one per thread (per event loop). */
typedef struct pp_chunk_cache {
    pp_arena_chunk *free;    /* cached chunks, linked through ->next */
    size_t chunk_size;       /* the one size cached */
    size_t count;            /* chunks cached now */
    size_t max;              /* chunks kept at most; the rest are unmapped */
    void *slabs;             /* chunks smaller than a page are carved from
                                slabs, kept until the cache is drained */
} pp_chunk_cache;

typedef struct pp_arena {
    pp_arena_chunk *chunks;  /* newest first */
    size_t chunk_size;       /* default size of a new chunk, page multiple */
    size_t used;             /* bytes handed out, for statistics */
    size_t mapped;           /* bytes mapped */
    int protected_;          /* 1 after pp_arena_protect */
    pp_region *region;       /* where chunks come from; NULL: plain mmap */
    pp_chunk_cache *cache;   /* NULL, or set by pp_arena_init_cached */
} pp_arena;

/* chunk_size 0 picks 1 MiB.  region may be NULL. */
void pp_arena_init(pp_arena *a, size_t chunk_size, pp_region *region);

/* chunk_size 0 picks one page.  A size below a page (rounded up to 64
 * bytes, at least 256) is carved from 64 KiB slabs: idle connections then
 * cost that much instead of a page each, and such chunks always return to
 * the cache (a slab is unmapped only by pp_chunk_cache_drain).  Page-sized
 * and bigger chunks are single mmaps; max is the most of them kept
 * cached. */
void pp_chunk_cache_init(pp_chunk_cache *cc, size_t chunk_size, size_t max);

/* Unmaps every cached chunk. */
void pp_chunk_cache_drain(pp_chunk_cache *cc);

/* Like pp_arena_init(a, cc->chunk_size, NULL), except that chunks of that
 * size come from cc when it has some and go back to it (up to cc->max) on
 * release.  Memory from a cached chunk is not zero-filled. */
void pp_arena_init_cached(pp_arena *a, pp_chunk_cache *cc);

/* Returns 16-byte aligned memory, or NULL with errno set (ENOMEM, or EPERM
 * once the arena is protected). */
void *pp_arena_alloc(pp_arena *a, size_t size);

/* The usable size of a block returned by pp_arena_alloc. */
size_t pp_arena_block_size(const void *block);

/* Non-zero when ptr lies inside one of the arena's chunks. */
int pp_arena_contains(const pp_arena *a, const void *ptr);

/* Makes every chunk read-only (1) or writable again (0).  Returns 0 or
 * -errno. */
int pp_arena_protect(pp_arena *a, int readonly);

/* Unmaps every chunk (chunks from a region are made inaccessible instead,
 * since a region never takes them back). */
void pp_arena_release(pp_arena *a);

#endif /* PP_ARENA_H */
