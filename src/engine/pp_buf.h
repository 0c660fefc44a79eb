/* pp_buf.h -- a growable byte buffer (malloc-backed, owned by its user).
 *
 * Values crossing between interpreters travel as bytes in one of these: the
 * sender's allocator never owns them, so either side may free them. */
#ifndef PP_BUF_H
#define PP_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct pp_buf {
    unsigned char *data;
    size_t len;              /* bytes written */
    size_t cap;              /* bytes allocated */
} pp_buf;

#define PP_BUF_INIT {NULL, 0, 0}

/* Makes room for extra more bytes.  Returns 0, or -1 when out of memory. */
int pp_buf__grow(pp_buf *b, size_t extra);

static inline int
pp_buf_reserve(pp_buf *b, size_t extra)
{
    return b->cap - b->len >= extra ? 0 : pp_buf__grow(b, extra);
}

/* Appends n bytes.  Returns 0 or -1 when out of memory. */
static inline int
pp_buf_put(pp_buf *b, const void *p, size_t n)
{
    if (pp_buf_reserve(b, n) < 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static inline int
pp_buf_put_u8(pp_buf *b, uint8_t v)
{
    if (pp_buf_reserve(b, 1) < 0)
        return -1;
    b->data[b->len++] = v;
    return 0;
}

/* Frees the storage and empties the buffer. */
void pp_buf_free(pp_buf *b);

/* A read cursor over bytes produced by a pp_buf. */
typedef struct pp_reader {
    const unsigned char *p;
    const unsigned char *end;
} pp_reader;

/* Copies n bytes out; returns 0, or -1 if fewer than n remain. */
static inline int
pp_read(pp_reader *r, void *out, size_t n)
{
    if ((size_t)(r->end - r->p) < n)
        return -1;
    if (n)
        memcpy(out, r->p, n);
    r->p += n;
    return 0;
}

/* Returns a pointer to the next n bytes and skips them, or NULL. */
static inline const unsigned char *
pp_read_view(pp_reader *r, size_t n)
{
    const unsigned char *v = r->p;

    if ((size_t)(r->end - r->p) < n)
        return NULL;
    r->p += n;
    return v;
}

#endif /* PP_BUF_H */
