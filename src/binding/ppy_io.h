/* ppy_io.h -- the binding's parallel I/O layer: loop threads, protocols,
 * servers, clients and timers (see docs/io.md for the Python face).
 *
 * Every worker interpreter gets, on first use, a *loop thread*: an OS thread
 * with a thread state of its own in that interpreter, running a pp_loop.  It
 * holds the interpreter's GIL while it runs callbacks and gives it up only
 * while its poll may block (pp_loop_set_block_hooks), so a busy loop pays
 * nothing per event for the GIL, and the worker's task thread can run
 * whenever the loop waits.
 *
 * Other threads talk to a loop thread with commands: a ppy_cmd is queued
 * under a mutex and the loop's pp_async is sent; the loop thread runs the
 * command's proc with its GIL held.  A command is reference-counted (the
 * poster and the loop thread each hold one), so a caller interrupted by
 * Ctrl-C while it waits can leave without freeing memory the loop thread
 * still uses.
 */
#ifndef PPY_IO_H
#define PPY_IO_H

#include "ppy_binding.h"
#include "pp_conn.h"
#include "pp_loop.h"
#include "pp_net.h"
#include "pp_queue.h"
#include "pp_sync.h"
#include "pp_thread.h"

#include <pthread.h>

struct ppy_worker;
typedef struct ppy_lthread ppy_lthread;
typedef struct ppy_cmd ppy_cmd;

/* ---- commands ---------------------------------------------------------- */

typedef void (*ppy_cmd_proc)(ppy_lthread *lt, ppy_cmd *cmd);

struct ppy_cmd {
    ppy_cmd *next;
    ppy_cmd_proc proc;        /* loop thread, worker GIL held */
    void (*free)(ppy_cmd *);  /* frees the whole command (NULL: free()) */
    atomic_int refs;
    pp_word done;            /* 0, then 1 once proc has run (or the post
                                failed) */
    int rc;                  /* 0 or -errno, set by proc */
    char *error;             /* malloc'd message, set by proc on failure */
    ppy_lthread *lt;         /* where it was posted */
};

/* Initialises a command of a bigger struct; refs = 1 (the caller's). */
void ppy_cmd_init(ppy_cmd *cmd, ppy_cmd_proc proc);
/* Drops one reference; the last frees it. */
void ppy_cmd_release(ppy_cmd *cmd);

/* Queues cmd for the loop thread (taking a reference for it).  Any thread.
 * Returns 0, or -1 when the loop thread has stopped (proc will never run). */
int ppy_cmd_post(ppy_lthread *lt, ppy_cmd *cmd);

/* Posts cmd and waits for it with the GIL released, in slices that let
 * Ctrl-C through.  Main interpreter.  Returns 0 (see cmd->rc), or -1 with
 * an exception set: RuntimeError when the loop thread is gone, or the
 * signal handler's exception.  The caller releases cmd either way. */
int ppy_cmd_call(ppy_lthread *lt, ppy_cmd *cmd);

/* Waits for a posted cmd as ppy_cmd_call() does.  Returns 0, or -1 with
 * an exception set: the signal handler's, or RuntimeError when the wait
 * could never end (the loop thread waits for the caller: see maincall.c). */
int ppy_cmd_wait(ppy_cmd *cmd);
/* The same, giving up with TimeoutError ("<what> timed out ...") after
 * timeout_ns (< 0: never); the command still runs later. */
int ppy_cmd_wait_for(ppy_cmd *cmd, int64_t timeout_ns, const char *what);

/* ---- loop threads (lthread.c) ------------------------------------------ */

struct ppy_lthread {
    int index;                   /* the worker's */
    struct ppy_worker *worker;
    PyInterpreterState *interp;
    ppy_state *st;                /* the worker interpreter's module state */
    PyThreadState *ts;
    PyThreadState *saved;        /* while the poll blocks */
    pp_thread thread;
    pp_loop *loop;
    pp_async async;
    pthread_mutex_t mu;          /* guards the queue and stopped */
    ppy_cmd *head, *tail;
    int stopped;                 /* no more commands */
    pp_word started;             /* 1: running, 2: failed to start */
    /* Loop thread only. */
    pp_link endpoints;           /* servers and clients living here */
    pp_link timers;
    PyObject *log_error;         /* pyparallel._worker.log_callback_error */
    pp_conn_group clients;       /* connections made by client() */
    int clients_ready;
};

/* The loop thread running on this OS thread, or NULL on any other thread:
 * what engine objects (a pp_conn, the loop) this thread may touch. */
extern _Thread_local ppy_lthread *ppy_lthread_current;

/* Starts the loop thread of a worker and waits until it runs.  Main GIL
 * held.  Returns it -- check lt->started: 1 running, 2 failed to start (it
 * printed why) -- or NULL with an exception set. */
ppy_lthread *ppy_lthread_start(struct ppy_worker *w, int index,
                             PyInterpreterState *interp, ppy_state *st);

/* Stops the loop thread, which closes every server connection, client and
 * timer it holds (connection_lost runs for each), and waits for it to end.
 * Called by the worker thread, holding no GIL, before it ends its
 * interpreter.  The struct stays valid -- commands posted later fail
 * cleanly -- until ppy_lthread_free(), which the pool's deallocator calls:
 * Server and Timer objects hold the pool, so they never see it freed. */
void ppy_lthread_stop_join(ppy_lthread *lt);
void ppy_lthread_free(ppy_lthread *lt);

/* Loop thread teardown: timer.c cancels every timer of the loop;
 * client.c frees the client connection group once it is empty. */
void ppy_timer_close_all(ppy_lthread *lt);
void ppy_client_fini(ppy_lthread *lt);

/* Says on stderr that an engine call on worker `worker`'s loop failed
 * where no exception can carry it ("pyparallel: worker 0: what (reason)";
 * rc is -errno, or 0 for no reason): a poll the kernel refused, or a
 * teardown step that only a bug in pyparallel can make fail.  Any thread,
 * no GIL needed. */
void ppy_io_report(int worker, const char *what, int rc);

/* Logs the pending exception through pyparallel's logger (clearing it):
 * "what" names where it came from.  Loop thread. */
void ppy_lthread_log_error(ppy_lthread *lt, const char *what, PyObject *about);

/* ---- pool hooks the I/O layer uses (pool.c) ---------------------------- */

int ppy_pool_nworkers(PyObject *pool);
/* The loop thread of worker i, started on first use.  Main GIL held.
 * Borrowed; NULL with an exception set. */
ppy_lthread *ppy_pool_lthread(PyObject *pool, int i);
/* fn's id in the pool's table of callables (as for submit), or -2 when it
 * must travel pickled, or -1 with an exception set. */
int64_t ppy_pool_fn_id(PyObject *pool, PyObject *fn);
/* The callable for id in worker w's interpreter (resolved once).  New
 * reference, or NULL with an exception set. */
PyObject *ppy_worker_callable(struct ppy_worker *w, uint32_t id);
/* A Task for a Future that worker i's loop thread will complete: state
 * RUNNING, with the pipeline's reference taken.  Main GIL.  New
 * reference. */
PyObject *ppy_pool_task_new(PyObject *pool, PyObject *future, int worker);
/* 0, or -1 with RuntimeError when the calling thread must not wait for
 * worker w's loop thread: that loop thread waits for the caller (a
 * function it runs through call_from_main_thread_and_wait()). */
int ppy_check_wait_on_loop(struct ppy_worker *w);
/* Completes such a task from worker w's interpreter: with value, or, when
 * value is NULL, with the pending exception (cleared).  Worker GIL held. */
void ppy_task_finish(struct ppy_worker *w, PyObject *task, PyObject *value);

/* ---- protocols (protocol.c) --------------------------------------------- */

/* Callback slots, in the order of ppy_proto_names. */
enum {
    PPY_CB_CONNECTION_MADE, PPY_CB_DATA_RECEIVED, PPY_CB_LINES_RECEIVED,
    PPY_CB_SEND_COMPLETE, PPY_CB_EOF_RECEIVED, PPY_CB_CONNECTION_LOST,
    PPY_CB_EXCEPTION_HANDLER, PPY_CB_COUNT
};

/* What the connections of one server (in one worker) or of one client
 * share.  Lives in the loop thread. */
#define PPY_KIND_ENDPOINT 0x50454e44u   /* "PEND" */
#define PPY_KIND_PCONN 0x50434f4eu      /* "PCON" */

typedef struct ppy_endpoint {
    uint32_t kind;               /* PPY_KIND_ENDPOINT */
    ppy_lthread *lt;
    PyObject *cls;               /* the protocol class */
    PyObject *shared;            /* frozen (immortal), or None */
    PyObject *cb[PPY_CB_COUNT];   /* functions found on the class, or NULL */
    PyObject *initial;           /* initial_bytes_to_send, or NULL */
    int lines;                   /* lines_mode */
    int native;                  /* 1: echo in C, no Python at all */
    uint64_t errors;             /* callback errors */
    uint64_t line_scanned;       /* lines mode: bytes searched for '\n' */
    atomic_size_t *live;         /* server: connections across workers */
    size_t max_live;             /* the server's max_connections (0: none) */
    PyObject *task;              /* client: the Task to complete, or NULL */
    PyObject *result;            /* client: connection_lost's value */
    PyObject *failure;           /* client: the exception for the Future */
    void (*on_conn_closed)(struct ppy_endpoint *ep);  /* after each close */
    void (*close)(struct ppy_endpoint *ep);  /* close all; unlink when done */
    pp_link link;                /* in lt->endpoints */
} ppy_endpoint;

/* One connection's Python side, allocated in the connection's arena. */
typedef struct ppy_pconn {
    uint32_t kind;               /* PPY_KIND_PCONN */
    pp_conn *c;                  /* NULL once closed */
    ppy_endpoint *ep;
    PyObject *protocol;          /* the instance */
    PyObject *transport;
    PyObject *error;             /* what a failed callback raised */
    uint64_t send_id;            /* last send_complete id issued */
    size_t scanned;              /* lines mode: leading bytes of the
                                    unconsumed input known to hold no '\n' */
    int counted;                 /* holds a place in *ep->live */
} ppy_pconn;

/* A connection's data is its endpoint until on_open has made its ppy_pconn
 * (a connect that fails never gets one). */
static inline uint32_t
ppy_data_kind(void *data)
{
    return *(uint32_t *)data;
}

/* Checks a server's or client's shared= object in main: None, or frozen
 * (ppy_is_shareable), since every worker reads it by pointer and a mortal
 * object would be a reference-count race.  Returns 0, or -1 with a
 * TypeError that says to use pyparallel.freeze(). */
int ppy_check_shared(PyObject *shared);

/* Fills ep's protocol fields from cls (worker GIL).  Returns 0, or -1 with
 * an exception set (TypeError for lines_mode without lines_received). */
int ppy_endpoint_set_protocol(ppy_endpoint *ep, PyObject *cls);
void ppy_endpoint_clear(ppy_endpoint *ep);

/* Connection callbacks that drive a protocol (data: the ppy_endpoint). */
extern const pp_conn_handler ppy_proto_handler;
/* The C-only echo (the benchmark's ceiling). */
extern const pp_conn_handler ppy_native_echo_handler;

/* The exception for an engine error code (-errno or PP_NET_EAI): an
 * OSError subclass or socket.gaierror whose message is "context: reason"
 * (just the reason for context NULL, and then the idle-timeout and
 * read-limit codes of a connection become TimeoutError and BufferError).
 * A new reference, or NULL with an exception set. */
PyObject *ppy_error_from_code(int err, const char *context);

/* ---- transports (transport.c) -------------------------------------------- */

extern PyType_Spec ppy_transport_spec;

/* A new Transport for pc.  New reference. */
PyObject *ppy_transport_new(ppy_lthread *lt, ppy_pconn *pc, PyObject *shared);
/* The connection is gone: the transport's methods raise from now on. */
void ppy_transport_detach(PyObject *transport);
/* Queues a callback's return value (bytes-like, str, a list/tuple of them,
 * or None).  Returns 1 if anything was queued, 0 if not, -1 with an
 * exception set. */
int ppy_transport_send_value(PyObject *transport, PyObject *value);

/* ---- Python-visible types (server.c, client.c, timer.c) ------------------ */

extern PyType_Spec ppy_server_spec;
extern PyType_Spec ppy_timer_spec;

PyObject *ppy_client_connect(PyObject *module, PyObject *args, PyObject *kwargs);

#endif /* PPY_IO_H */
