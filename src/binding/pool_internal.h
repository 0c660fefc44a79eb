/* pool_internal.h -- what the files of the worker pool share.
 *
 * The pool is split by concern, the way src/engine/conn*.c are:
 *
 *   pool.c        the Pool type: creating workers, submit, shutdown, join;
 *                 the hooks the I/O layer uses (ppy_io.h)
 *   worker.c      a worker thread: start-up, running tasks, ending its
 *                 interpreter
 *   task.c        the Task type: a submitted call's state word, its result
 *                 bytes, and completing its Future in the main interpreter
 *   completion.c  the completion thread: finished tasks and main-thread
 *                 calls, under the main GIL
 *   maincall.c    call_from_main_thread(): posted by a worker, run by the
 *                 completion thread
 *
 * Names here are ppy__*: internal to the pool, never used outside it.
 */
#ifndef PPY_POOL_INTERNAL_H
#define PPY_POOL_INTERNAL_H

#include "ppy_binding.h"
#include "ppy_io.h"
#include "pp_queue.h"
#include "pp_sync.h"
#include "pp_thread.h"

#include <pthread.h>

enum { ITEM_TASK = 1, ITEM_MAINCALL = 2 };
enum { TASK_PENDING = 0, TASK_RUNNING = 1, TASK_DONE = 2, TASK_CANCELLED = 3 };

#define FN_PICKLED UINT32_MAX
enum { POOL_OK = 0, POOL_BREAKING = 1, POOL_BROKEN = 2 };
/* How long an idle worker or a waiting caller spins before sleeping: a
 * stream of small tasks then never pays for a futex round trip. */
#define DEFAULT_SPIN_NS 50000L
/* Finished tasks whose caller completes them itself wake the completion
 * thread only in batches of this many. */
#define LAZY_BATCH 64

typedef struct ppy_item {
    pp_qnode node;
    int kind;
} ppy_item;

typedef struct ppy_pool ppy_pool;

typedef struct ppy_task {
    PyObject_HEAD
    ppy_item item;
    pp_word state;
    atomic_int waiting;    /* callers blocked in wait() */
    atomic_int runner;     /* the worker running it, or -1 */
    int loop_worker;       /* a client's: the worker whose loop completes it,
                              or -1 for a submitted task */
    uint32_t fn_id;
    int failed;            /* out holds a packed exception */
    int materialized;      /* the Future was completed (main GIL) */
    pp_buf in;             /* [pickled callable] args kwargs */
    pp_buf out;            /* result, or packed exception */
    PyObject *future;      /* main GIL */
    ppy_pool *pool;         /* strong reference (main GIL) */
} ppy_task;

/* Which thread of a worker posted a main-thread call. */
enum { ORIGIN_OTHER = 0, ORIGIN_TASK = 1, ORIGIN_LOOP = 2 };

typedef struct ppy_maincall {
    ppy_item item;
    pp_word done;          /* 0, then 1 when out is ready */
    int wait;              /* the worker waits for the result */
    struct ppy_worker *worker;
    int origin;            /* ORIGIN_*: whose thread waits */
    int failed;
    pp_buf in;             /* (fn, args, kwargs) */
    pp_buf out;
} ppy_maincall;

typedef struct ppy_worker {
    ppy_pool *pool;
    int index;
    pp_thread thread;
    PyInterpreterState *interp;
    PyThreadState *boot_ts;  /* the creating thread state, until the worker
                                has one of its own */
    PyThreadState *ts;
    /* The rest belongs to the worker's interpreter. */
    ppy_state *st;
    PyObject *module;      /* _pyparallel */
    PyObject *resolve;     /* pyparallel._worker.resolve */
    PyObject *pack_exception;
    PyObject *broken_error;   /* pyparallel._worker.broken_error */
    PyObject *fini;        /* pyparallel._worker.fini */
    PyObject *fns;         /* list: fn_id -> callable, or None */
    char *init_error;      /* malloc'd traceback of a failed start */
    /* Its loop thread, once I/O needs one: started by a main thread, stopped
     * by the worker thread as it ends; both under lt_mu. */
    pthread_mutex_t lt_mu;
    ppy_lthread *lt;
    int ending;            /* the worker thread is ending: no loop thread */
    /* Main-call thread only: this worker's task and loop threads wait for
     * a call that the main-call thread is running (maincall.c). */
    int task_in_main, loop_in_main;
} ppy_worker;

struct ppy_pool {
    PyObject_HEAD
    ppy_state *st;          /* the main interpreter's module state */
    PyObject *module;
    PyObject *classify;    /* callable -> (module, qualname) or None */
    PyObject *fn_ids;      /* {callable: fn_id} */
    PyObject *s_set_result, *s_set_exception, *s_cancel;
    int nworkers;
    ppy_worker *workers;
    int nstarted;          /* worker threads started */
    int completer_started;
    pp_thread completer;
    pthread_t completer_tid;
    int caller_started;
    pp_thread caller;      /* the main-call thread (maincall.c) */
    pthread_t caller_tid;
    PyInterpreterState *main_interp;
    pp_queue tasks;
    pp_queue done;         /* finished tasks, for the completion thread */
    pp_queue calls;        /* main-thread calls, for the main-call thread */
    int queues_ready;
    pp_word live;          /* worker threads not yet finished */
    pp_word ready;         /* workers past start-up */
    int shut;              /* no more submits */
    int joined;
    long spin_ns;
    pp_buf config;         /* encoded worker configuration */
    int has_init;          /* an initializer runs in each worker first */
    uint32_t init_fn_id;
    pp_buf init;           /* its encoded call, as a task's */
    pp_word broken;        /* POOL_*: the initializer failed somewhere */
    char *broken_tb;       /* that worker's traceback, once BROKEN */
    pthread_mutex_t fn_mu; /* guards the table below */
    char **fn_module, **fn_qualname;
    uint32_t n_fns, cap_fns;
};

/* task.c */
/* A new Task for future in the given state (main GIL).  New reference. */
ppy_task *ppy__task_new(ppy_pool *pool, PyObject *future, uint32_t fn_id,
                        uint32_t state);
/* Completes the task's Future if its worker has finished it and nobody did
 * yet (main GIL).  Returns 0, or -1 with a signal handler's exception set. */
int ppy__task_materialize(ppy_task *t);

/* worker.c */
/* Creates worker w's own-GIL interpreter from the main thread.  Returns 0,
 * or -1 with an exception set. */
int ppy__create_interpreter(ppy_worker *w);
/* Ends an interpreter whose worker thread never started. */
void ppy__discard_interpreter(ppy_worker *w);
/* The worker thread (pp_thread entry point). */
void ppy__worker_main(void *worker);

/* completion.c: the completion thread (pp_thread entry point). */
void ppy__completer_main(void *pool);

/* maincall.c */
/* Runs one main-thread call (main GIL). */
void ppy__run_maincall(ppy_pool *pool, ppy_maincall *mc);
/* The main-call thread (pp_thread entry point). */
void ppy__caller_main(void *pool);
/* On the main-call thread, fails with RuntimeError when a wait for
 * worker w's loop thread (loop) or task thread (!loop) could never end:
 * that thread waits for a call this thread is running.  Elsewhere 0. */
int ppy__check_wait_on_worker(ppy_worker *w, int loop);
/* The same for a wait on task t. */
int ppy__check_wait_on_task(ppy_task *t);

#endif /* PPY_POOL_INTERNAL_H */
