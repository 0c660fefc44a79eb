/* buf.c -- see pp_buf.h. */
#include "pp_buf.h"

#include <stdlib.h>

int
pp_buf__grow(pp_buf *b, size_t extra)
{
    size_t cap = b->cap ? b->cap : 64;
    unsigned char *data;

    if (extra > SIZE_MAX / 2 - b->len)
        return -1;
    while (cap - b->len < extra)
        cap *= 2;
    data = realloc(b->data, cap);
    if (data == NULL)
        return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

void
pp_buf_free(pp_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
