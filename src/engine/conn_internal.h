/* conn_internal.h -- what conn.c and conn_write.c share.
 *
 * Not part of the API: the pp_conn layout, its flags and the output
 * chunks.  Functions shared between the files are named pp__conn_*.  No
 * Python here.
 */
#ifndef PP_CONN_INTERNAL_H
#define PP_CONN_INTERNAL_H

#include <sys/types.h>

#include "pp_buf.h"
#include "pp_conn.h"

/* Connection flags. */
#define C_CONNECTING   (1u << 0)   /* waiting for connect to complete */
#define C_READABLE     (1u << 1)   /* input may be waiting */
#define C_PAUSED_USER  (1u << 2)   /* pp_conn_pause_reading */
#define C_PAUSED_WATER (1u << 3)   /* back-pressure */
#define C_WRITE_PAUSED (1u << 4)   /* above the high-water mark */
#define C_EOF          (1u << 5)   /* the peer shut its side */
#define C_SHUT_WANTED  (1u << 6)   /* shut our side once drained */
#define C_SHUT_DONE    (1u << 7)
#define C_CLOSE_WANTED (1u << 8)   /* close once drained */
#define C_CLOSING      (1u << 9)   /* fd closed; freed in the pending call */
#define C_PEND_READ    (1u << 10)
#define C_PEND_WRITE   (1u << 11)
#define C_IN_IO        (1u << 12)  /* a flush follows before we return */
#define C_RDHUP        (1u << 13)  /* a FIN waits behind the data */
#define C_PEND_AGAIN   (1u << 14)  /* present the kept input again */

#define C_NO_READ (C_CONNECTING | C_PAUSED_USER | C_PAUSED_WATER | C_EOF | \
                   C_CLOSE_WANTED | C_CLOSING)

/* One chunk of output. */
enum { SEG_BYTES, SEG_REF, SEG_FILE, SEG_MARK };

typedef struct seg {
    struct seg *next;
    int kind;
    int fd;                  /* FILE */
    unsigned flags;          /* FILE: PP_FILE_CLOSE; BYTES: 1 if pooled */
    const char *p;           /* BYTES (the block's data), REF */
    size_t off;              /* BYTES, REF: bytes of p already sent */
    size_t len;              /* BYTES, REF: bytes in p; FILE: bytes left */
    size_t cap;              /* BYTES: room in the block */
    off_t foff;              /* FILE: next offset to send from */
    pp_release_proc release; /* REF */
    void *ctx;               /* REF */
    uint64_t id;             /* MARK */
} seg;

#define BLOCK_CAP (PP_CONN_BLOCK_SIZE - sizeof(seg))

struct pp_conn {
    pp_io io;
    pp_pending pend;
    pp_timer idle;
    pp_link link;            /* in group->conns */
    pp_conn_group *group;
    const pp_conn_handler *h;
    void *data;
    pp_arena arena;          /* lives in its own first chunk */
    unsigned flags;
    int fd;
    int err;                 /* for on_close */
    pp_buf rbuf;             /* unconsumed input */
    seg *head;               /* output queue, oldest first */
    seg *tail;
    seg *free_segs;          /* spare descriptors, from the arena */
    size_t queued;           /* bytes in the queue */
    size_t high;
    size_t low;
    uint64_t idle_ns;
    uint64_t last_active;    /* pp_loop_now() of the last I/O progress */
};

/* conn.c */
/* Closes the connection now with err; on_close and the freeing follow in
 * the pending call.  Does nothing if it is already closing. */
void pp__conn_fail(pp_conn *c, int err);
/* Sets flag (C_PEND_READ or C_PEND_WRITE) and queues the pending call. */
void pp__conn_defer(pp_conn *c, unsigned flag);
/* Reads in the pending call if reading is allowed and input may wait. */
void pp__conn_schedule_read(pp_conn *c);

/* conn_write.c */
/* Flushes in the pending call, unless a flush follows anyway. */
void pp__conn_schedule_write(pp_conn *c);
void pp__conn_flush(pp_conn *c);
/* The queue is empty: carries out a close or shutdown waiting for that. */
void pp__conn_drained(pp_conn *c);
void pp__conn_water_down(pp_conn *c);
/* Frees every queued chunk (releasing references, closing files). */
void pp__conn_drop_output(pp_conn *c);

#endif /* PP_CONN_INTERNAL_H */
