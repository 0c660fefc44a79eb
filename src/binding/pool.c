/* pool.c -- own-GIL worker interpreters, tasks, and the completion thread.
 *
 * A Pool owns N workers.  Each worker is an OS thread that owns one
 * sub-interpreter with its own GIL (PEP 684) and one persistent thread
 * state.  The life of a task:
 *
 *   main thread      submit(): the callable is named by (module, qualname)
 *                    through a per-pool table, or pickled; arguments are
 *                    encoded to bytes (xcopy.c); the Task goes on the queue.
 *   worker thread    pops it (spinning briefly before sleeping), attaches
 *                    its interpreter, resolves the callable once and caches
 *                    it, decodes the arguments, calls, encodes the result or
 *                    the exception, and publishes state DONE.
 *   completion       a C thread holding a main-interpreter thread state
 *   thread           drains finished tasks in batches under one main-GIL
 *                    acquisition and completes their Futures.  A main thread
 *                    already blocked in Future.result() does not wait for it:
 *                    it sees DONE on the task's state word and completes the
 *                    Future itself (whichever comes first wins, under the
 *                    main GIL).
 *
 * The same completion thread runs call_from_main_thread() requests.
 *
 * Interpreters are created by the main thread, one at a time (concurrent
 * creation has crashed CPython), and each is ended by its own worker with
 * its own thread state, serialised by a process-wide lock, before the pool
 * reports itself joined.  Worker threads start with every signal blocked, so
 * Ctrl-C always reaches the main thread.
 */
#include "pp_binding.h"
#include "pp_io.h"
#include "pp_queue.h"
#include "pp_sync.h"
#include "pp_thread.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum { ITEM_TASK = 1, ITEM_MAINCALL = 2 };
enum { TASK_PENDING = 0, TASK_RUNNING = 1, TASK_DONE = 2, TASK_CANCELLED = 3 };

#define FN_PICKLED UINT32_MAX
/* How long an idle worker or a waiting caller spins before sleeping: a
 * stream of small tasks then never pays for a futex round trip. */
#define DEFAULT_SPIN_NS 50000L
/* Waits give Ctrl-C a chance this often. */
#define SIGNAL_SLICE_NS 50000000L
/* Finished tasks whose caller completes them itself wake the completion
 * thread only in batches of this many. */
#define LAZY_BATCH 64

typedef struct pp_item {
    pp_qnode node;
    int kind;
} pp_item;

typedef struct pp_pool pp_pool;

typedef struct pp_task {
    PyObject_HEAD
    pp_item item;
    pp_word state;
    atomic_int waiting;    /* callers blocked in wait() */
    uint32_t fn_id;
    int failed;            /* out holds a packed exception */
    int materialized;      /* the Future was completed (main GIL) */
    pp_buf in;             /* [pickled callable] args kwargs */
    pp_buf out;            /* result, or packed exception */
    PyObject *future;      /* main GIL */
    pp_pool *pool;         /* strong reference (main GIL) */
} pp_task;

typedef struct pp_maincall {
    pp_item item;
    pp_word done;          /* 0, then 1 when out is ready */
    int wait;              /* the worker waits for the result */
    int failed;
    pp_buf in;             /* (fn, args, kwargs) */
    pp_buf out;
} pp_maincall;

typedef struct pp_worker {
    pp_pool *pool;
    int index;
    pp_thread thread;
    PyInterpreterState *interp;
    PyThreadState *boot_ts;  /* the creating thread state, until the worker
                                has one of its own */
    PyThreadState *ts;
    /* The rest belongs to the worker's interpreter. */
    pp_state *st;
    PyObject *module;      /* _pyparallel */
    PyObject *resolve;     /* pyparallel._worker.resolve */
    PyObject *pack_exception;
    PyObject *fini;        /* pyparallel._worker.fini */
    PyObject *fns;         /* list: fn_id -> callable, or None */
    char *init_error;      /* malloc'd traceback of a failed start */
    pp_lthread *lt;        /* its loop thread, once I/O needs one */
} pp_worker;

struct pp_pool {
    PyObject_HEAD
    pp_state *st;          /* the main interpreter's module state */
    PyObject *module;
    PyObject *classify;    /* callable -> (module, qualname) or None */
    PyObject *fn_ids;      /* {callable: fn_id} */
    PyObject *s_set_result, *s_set_exception, *s_cancel;
    int nworkers;
    pp_worker *workers;
    int nstarted;          /* worker threads started */
    int completer_started;
    pp_thread completer;
    pthread_t completer_tid;
    PyInterpreterState *main_interp;
    pp_queue tasks;
    pp_queue done;
    int queues_ready;
    pp_word live;          /* worker threads not yet finished */
    pp_word ready;         /* workers past start-up */
    int shut;              /* no more submits */
    int joined;
    long spin_ns;
    pp_buf config;         /* encoded worker configuration */
    pthread_mutex_t fn_mu; /* guards the table below */
    char **fn_module, **fn_qualname;
    uint32_t n_fns, cap_fns;
};

/* Ending interpreters concurrently is not something CPython promises. */
static pthread_mutex_t end_interp_mu = PTHREAD_MUTEX_INITIALIZER;
/* Pools ever created: safety mode must be chosen before the first. */
int pp_pools_created;

/* ---- helpers ---------------------------------------------------------- */

/* The current exception as "Traceback ...\n" text (malloc'd), clearing it.
 * Never NULL. */
char *
pp_exception_text(void)
{
    PyObject *exc = PyErr_GetRaisedException(), *tb = NULL, *lines = NULL,
             *text = NULL, *empty = NULL;
    const char *s = NULL;
    char *res;

    if (exc != NULL) {
        tb = PyImport_ImportModule("traceback");
        if (tb)
            lines = PyObject_CallMethod(tb, "format_exception", "O", exc);
        empty = PyUnicode_FromString("");
        if (lines && empty)
            text = PyUnicode_Join(empty, lines);
        if (text == NULL) {
            PyErr_Clear();
            text = PyObject_Str(exc);
        }
        if (text)
            s = PyUnicode_AsUTF8(text);
    }
    PyErr_Clear();
    res = strdup(s ? s : "(no details)");
    Py_XDECREF(exc);
    Py_XDECREF(tb);
    Py_XDECREF(lines);
    Py_XDECREF(text);
    Py_XDECREF(empty);
    return res ? res : strdup("");
}

/* Waits on a word while it holds expected, with the GIL released, in slices
 * that let signal handlers run.  timeout_ns < 0: no limit.  Returns the
 * value seen, or -1 with an exception set (KeyboardInterrupt). */
static int64_t
wait_word_interruptibly(pp_word *w, uint32_t expected, long spin_ns,
                        long timeout_ns)
{
    uint64_t start = pp_now_ns();
    uint32_t seen = expected;

    for (;;) {
        long slice = SIGNAL_SLICE_NS;

        if (timeout_ns >= 0) {
            uint64_t spent = pp_now_ns() - start;
            if (spent >= (uint64_t)timeout_ns)
                return seen;
            if ((uint64_t)timeout_ns - spent < (uint64_t)slice)
                slice = (long)((uint64_t)timeout_ns - spent);
        }
        Py_BEGIN_ALLOW_THREADS
        seen = pp_word_wait(w, expected, spin_ns, slice);
        Py_END_ALLOW_THREADS
        spin_ns = 0;
        if (seen != expected)
            return seen;
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
}

/* ---- main side: completing Futures ------------------------------------ */

/* Calls pyparallel._errors.rebuild(*packed) in the current interpreter.
 * New reference to an exception instance, or NULL. */
static PyObject *
rebuild_exception(pp_state *st, PyObject *packed)
{
    PyObject *rebuild, *exc;

    if (st->errors_module == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "pyparallel._errors is not loaded");
        return NULL;
    }
    rebuild = PyObject_GetAttrString(st->errors_module, "rebuild");
    if (rebuild == NULL)
        return NULL;
    exc = PyTuple_Check(packed) ? PyObject_Call(rebuild, packed, NULL) : NULL;
    Py_DECREF(rebuild);
    if (exc == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_SystemError, "malformed packed exception");
    return exc;
}

/* Completes the task's Future if the worker has finished it and nobody did
 * yet.  Main GIL held.  A failing callback is reported as unraisable, like
 * concurrent.futures does; only a signal handler's exception (Ctrl-C in the
 * main thread, while set_result() ran Python code) is kept: returns -1 with
 * it set, else 0. */
static int
task_materialize(pp_task *t)
{
    uint32_t s = pp_word_get(&t->state);
    PyObject *fut, *val, *exc, *r = NULL;
    pp_state *st = t->pool->st;
    pp_reader rd;

    if (t->materialized || (s != TASK_DONE && s != TASK_CANCELLED))
        return 0;
    t->materialized = 1;
    fut = t->future;
    t->future = NULL;
    if (fut == NULL)
        return 0;
    if (s == TASK_CANCELLED) {
        Py_DECREF(fut);
        return 0;
    }
    rd.p = t->out.data;
    rd.end = t->out.data + t->out.len;
    val = pp_decode(st, &rd);
    if (val != NULL && t->failed) {
        exc = rebuild_exception(st, val);
        Py_DECREF(val);
        if (exc) {
            r = PyObject_CallMethodOneArg(fut, t->pool->s_set_exception, exc);
            Py_DECREF(exc);
        }
    } else if (val != NULL) {
        r = PyObject_CallMethodOneArg(fut, t->pool->s_set_result, val);
        Py_DECREF(val);
    }
    if (r == NULL && val == NULL) {
        /* The value could not be rebuilt here (an unpickling error). */
        PyObject *cause = PyErr_GetRaisedException();
        PyErr_Format(pp_exc(st->TransferError, PyExc_TypeError),
                     "the worker's result could not be rebuilt in the main "
                     "interpreter: %S", cause);
        exc = PyErr_GetRaisedException();
        PyException_SetCause(exc, cause);
        r = PyObject_CallMethodOneArg(fut, t->pool->s_set_exception, exc);
        Py_DECREF(exc);
    }
    pp_buf_free(&t->out);
    if (r == NULL && (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) ||
                      PyErr_ExceptionMatches(PyExc_SystemExit))) {
        Py_DECREF(fut);
        return -1;
    }
    if (r == NULL)
        PyErr_WriteUnraisable(fut);
    Py_XDECREF(r);
    Py_DECREF(fut);
    return 0;
}

/* Runs one call_from_main_thread request.  Main GIL held. */
static void
run_maincall(pp_pool *pool, pp_maincall *mc)
{
    pp_state *st = pool->st;
    pp_reader rd = {mc->in.data, mc->in.data + mc->in.len};
    PyObject *call = pp_decode(st, &rd), *res = NULL, *fn = NULL;

    if (call && PyTuple_Check(call) && PyTuple_GET_SIZE(call) == 3) {
        PyObject *kw = PyTuple_GET_ITEM(call, 2);
        fn = PyTuple_GET_ITEM(call, 0);
        res = PyObject_Call(fn, PyTuple_GET_ITEM(call, 1),
                            kw == Py_None ? NULL : kw);
    } else if (call) {
        PyErr_SetString(PyExc_SystemError, "malformed main-thread call");
    }
    pp_buf_free(&mc->in);
    if (!mc->wait) {
        if (res == NULL) {
            PySys_WriteStderr("pyparallel: a call_from_main_thread() call "
                              "raised:\n");
            PyErr_Print();
        }
        Py_XDECREF(res);
        Py_XDECREF(call);
        free(mc);
        return;
    }
    if (res == NULL || pp_encode(st, res, &mc->out, "the result") < 0) {
        PyObject *exc = PyErr_GetRaisedException(), *packed = NULL, *pack;
        mc->failed = 1;
        mc->out.len = 0;
        pack = st->errors_module
            ? PyObject_GetAttrString(st->errors_module, "pack_exception") : NULL;
        if (pack)
            packed = PyObject_CallOneArg(pack, exc);
        if (packed == NULL || pp_encode(st, packed, &mc->out, "exception") < 0) {
            PyErr_Clear();
            mc->out.len = 0;
            Py_XDECREF(packed);
            packed = Py_BuildValue("(Osss)", Py_None, "RuntimeError",
                                   "the main-thread call failed and its "
                                   "exception could not be sent back", "");
            if (packed == NULL || pp_encode(st, packed, &mc->out, "exception") < 0)
                PyErr_Clear();
        }
        Py_XDECREF(pack);
        Py_XDECREF(packed);
        Py_XDECREF(exc);
    }
    Py_XDECREF(res);
    Py_XDECREF(call);
    pp_word_set(&mc->done, 1);     /* the worker owns mc from here on */
}

static void
completer_main(void *arg)
{
    pp_pool *pool = arg;
    PyThreadState *ts = PyThreadState_New(pool->main_interp);
    pp_qnode *chain, *next;

    for (;;) {
        chain = pp_queue_pop_all(&pool->done, 0);
        if (chain == NULL)
            break;                 /* closed and drained */
        PyEval_RestoreThread(ts);
        for (; chain; chain = next) {
            pp_item *item = pp_container_of(chain, pp_item, node);
            next = chain->next;
            if (item->kind == ITEM_TASK) {
                pp_task *t = pp_container_of(item, pp_task, item);
                if (task_materialize(t) < 0)   /* no signals on this thread */
                    PyErr_WriteUnraisable(NULL);
                Py_DECREF(t);      /* the pipeline's reference */
            } else {
                run_maincall(pool, pp_container_of(item, pp_maincall, item));
            }
        }
        PyEval_SaveThread();
    }
    PyEval_RestoreThread(ts);
    PyThreadState_Clear(ts);
    PyThreadState_DeleteCurrent();
}

/* ---- worker side ------------------------------------------------------ */

/* Start-up inside the worker's interpreter.  Returns 0 or -1. */
static int
worker_init(pp_worker *w)
{
    pp_state tmp_state;
    pp_reader rd = {w->pool->config.data, w->pool->config.data + w->pool->config.len};
    PyObject *config, *path, *wmod = NULL, *r;

    /* The configuration holds builtin values only: no pickle, no state. */
    memset(&tmp_state, 0, sizeof tmp_state);
    tmp_state.worker_id = w->index;
    config = pp_decode(&tmp_state, &rd);
    if (config == NULL || !PyDict_Check(config))
        goto fail;
    /* Main's sys.path first, so that pyparallel and the user's modules are
     * found where main found them. */
    path = PyDict_GetItemString(config, "sys_path");
    if (path && PySys_SetObject("path", path) < 0)
        goto fail;
    w->module = PyImport_ImportModule("pyparallel._pyparallel");
    if (w->module == NULL)
        goto fail;
    w->st = pp_state_of(w->module);
    w->st->worker = w;
    w->st->worker_id = w->index;
    wmod = PyImport_ImportModule("pyparallel._worker");
    if (wmod == NULL)
        goto fail;
    r = PyObject_CallMethod(wmod, "init", "O", config);
    if (r == NULL)
        goto fail;
    Py_DECREF(r);
    /* Unpickling in a worker goes through _worker.loads (main's script). */
    if (w->st->pickle_dumps == NULL) {
        PyObject *pickle = PyImport_ImportModule("pickle");
        if (pickle == NULL)
            goto fail;
        w->st->pickle_dumps = PyObject_GetAttrString(pickle, "dumps");
        w->st->pickle_protocol = PyObject_GetAttrString(pickle, "HIGHEST_PROTOCOL");
        Py_DECREF(pickle);
        w->st->pickle_loads = PyObject_GetAttrString(wmod, "loads");
        if (!w->st->pickle_dumps || !w->st->pickle_protocol || !w->st->pickle_loads)
            goto fail;
    }
    w->resolve = PyObject_GetAttrString(wmod, "resolve");
    w->pack_exception = PyObject_GetAttrString(wmod, "pack_exception");
    w->fini = PyObject_GetAttrString(wmod, "fini");
    w->fns = PyList_New(0);
    if (!w->resolve || !w->pack_exception || !w->fini || !w->fns)
        goto fail;
    Py_DECREF(wmod);
    Py_DECREF(config);
    return 0;
fail:
    Py_XDECREF(wmod);
    Py_XDECREF(config);
    return -1;
}

/* The callable for fn_id, resolved once per worker.  New reference. */
static PyObject *
worker_fn(pp_worker *w, uint32_t id)
{
    pp_pool *pool = w->pool;
    PyObject *fn;
    char *mod, *qual;

    if ((Py_ssize_t)id < PyList_GET_SIZE(w->fns)) {
        fn = PyList_GET_ITEM(w->fns, id);
        if (fn != Py_None)
            return Py_NewRef(fn);
    }
    pthread_mutex_lock(&pool->fn_mu);
    mod = strdup(pool->fn_module[id]);
    qual = strdup(pool->fn_qualname[id]);
    pthread_mutex_unlock(&pool->fn_mu);
    if (mod == NULL || qual == NULL) {
        free(mod);
        free(qual);
        return PyErr_NoMemory();
    }
    fn = PyObject_CallFunction(w->resolve, "ss", mod, qual);
    free(mod);
    free(qual);
    if (fn == NULL)
        return NULL;
    while (PyList_GET_SIZE(w->fns) <= (Py_ssize_t)id) {
        if (PyList_Append(w->fns, Py_None) < 0) {
            Py_DECREF(fn);
            return NULL;
        }
    }
    PyList_SetItem(w->fns, id, Py_NewRef(fn));
    return fn;
}

/* Packs the current exception into t->out.  Never fails. */
static void
report_exception(pp_worker *w, pp_task *t)
{
    static pp_state bare = {.worker_id = 0};  /* no pickle: builtins only */
    pp_state *st = w->st ? w->st : &bare;
    PyObject *exc = PyErr_GetRaisedException(), *packed = NULL;

    t->failed = 1;
    t->out.len = 0;
    if (w->pack_exception)
        packed = PyObject_CallOneArg(w->pack_exception, exc);
    if (packed == NULL || pp_encode(st, packed, &t->out, "exception") < 0) {
        /* pyparallel itself is unusable here (a failed start): send the
         * text, named so that main rebuilds the right class. */
        PyObject *msg = exc ? PyObject_Str(exc) : NULL;
        const char *type_name = w->init_error
            ? "pyparallel._errors.WorkerInitError" : "builtins.SystemError";
        PyErr_Clear();
        t->out.len = 0;
        Py_XDECREF(packed);
        packed = Py_BuildValue("(OsOs)", Py_None, type_name,
                               msg ? msg : Py_None, "");
        Py_XDECREF(msg);
        if (packed == NULL || pp_encode(st, packed, &t->out, "exception") < 0)
            PyErr_Clear();
    }
    Py_XDECREF(packed);
    Py_XDECREF(exc);
}

/* Runs one task.  The worker's GIL is held. */
static void
run_task(pp_worker *w, pp_task *t)
{
    pp_reader rd = {t->in.data, t->in.data + t->in.len};
    PyObject *fn = NULL, *args = NULL, *kwargs = NULL, *res = NULL;

    if (w->init_error != NULL) {
        PyErr_Format(pp_exc(w->st ? w->st->WorkerInitError : NULL,
                            PyExc_RuntimeError),
                     "pyparallel worker %d failed to start, so it cannot run "
                     "tasks:\n%s", w->index, w->init_error);
        goto error;
    }
    fn = t->fn_id == FN_PICKLED ? pp_decode(w->st, &rd) : worker_fn(w, t->fn_id);
    if (fn == NULL || (args = pp_decode(w->st, &rd)) == NULL ||
        (kwargs = pp_decode(w->st, &rd)) == NULL)
        goto error;
    pp_buf_free(&t->in);
    res = PyObject_Call(fn, args, kwargs == Py_None ? NULL : kwargs);
    if (res == NULL)
        goto error;
    t->out.len = 0;
    if (pp_encode(w->st, res, &t->out, "the result") == 0)
        goto done;
error:
    report_exception(w, t);
done:
    pp_buf_free(&t->in);
    Py_XDECREF(fn);
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    Py_XDECREF(res);
}

static void
worker_main(void *arg)
{
    pp_worker *w = arg;
    pp_pool *pool = w->pool;
    pp_qnode *node;
    int claimed = 0;

    /* A thread state of our own first, then drop the creating one: deleting
     * the interpreter's first thread state before another exists would make
     * CPython 3.12 reuse its storage and abort ("thread state already
     * initialized"). */
    w->ts = PyThreadState_New(w->interp);
    PyEval_RestoreThread(w->ts);
    PyThreadState_Clear(w->boot_ts);
    PyThreadState_Delete(w->boot_ts);
    w->boot_ts = NULL;
    if (worker_init(w) < 0)
        w->init_error = pp_exception_text();
    PyEval_SaveThread();
    pp_word_add(&pool->ready, 1);

    /* An idle worker spins a little before sleeping (the queue lets fewer
     * workers than CPUs spin at once, so a submitter always has a CPU):
     * on an idle 2-vCPU VM this took a trivial round trip from 86 us to
     * 6 us, because waking a sleeping thread means waking a halted vCPU. */
    while ((node = pp_queue_pop_claimed(&pool->tasks, pool->spin_ns, claimed)) != NULL) {
        pp_task *t = pp_container_of(node, pp_task, item.node);

        claimed = 0;
        if (pp_word_cas(&t->state, TASK_PENDING, TASK_RUNNING)) {
            PyEval_RestoreThread(w->ts);
            run_task(w, t);
            PyEval_SaveThread();
            /* Be a spinner before the caller sees the result: its next
             * submit then finds us instead of waking a sleeping worker. */
            claimed = pool->spin_ns > 0 && pp_queue_claim_spin(&pool->tasks);
            pp_word_set(&t->state, TASK_DONE);
        }
        /* Finished or cancelled: the completion thread takes it from here
         * (it owns the pipeline's reference).  When a caller is already
         * waiting on this task, that caller completes the Future itself, so
         * the completion thread need not be woken just for it. */
        if (atomic_load(&t->waiting))
            pp_queue_push_lazy(&pool->done, &t->item.node, LAZY_BATCH);
        else
            pp_queue_push(&pool->done, &t->item.node);
    }

    /* The loop thread goes first: it closes its connections (running their
     * connection_lost) and deletes its thread state, and Py_EndInterpreter
     * wants to be the interpreter's last thread. */
    if (w->lt)
        pp_lthread_stop_join(w->lt);   /* freed with the pool */
    PyEval_RestoreThread(w->ts);
    if (w->fini) {
        PyObject *r = PyObject_CallNoArgs(w->fini);
        if (r == NULL)
            PyErr_WriteUnraisable(w->fini);
        Py_XDECREF(r);
        Py_CLEAR(w->fini);
    }
    Py_CLEAR(w->fns);
    Py_CLEAR(w->resolve);
    Py_CLEAR(w->pack_exception);
    if (w->st) {
        w->st->worker = NULL;
        w->st = NULL;
    }
    Py_CLEAR(w->module);
    pthread_mutex_lock(&end_interp_mu);
    Py_EndInterpreter(w->ts);
    pthread_mutex_unlock(&end_interp_mu);
    w->ts = NULL;
    pp_word_add(&pool->live, -1);
}

/* Creates one own-GIL interpreter from the main thread.  Returns 0, or -1
 * with an exception set. */
static int
create_interpreter(pp_worker *w)
{
    PyInterpreterConfig cfg = {
        .use_main_obmalloc = 0,
        .allow_fork = 0,
        .allow_exec = 0,
        .allow_threads = 1,
        .allow_daemon_threads = 0,
        .check_multi_interp_extensions = 1,
        .gil = PyInterpreterConfig_OWN_GIL,
    };
    PyThreadState *save = PyThreadState_Swap(NULL), *ts = NULL;
    PyStatus status = Py_NewInterpreterFromConfig(&ts, &cfg);

    if (PyStatus_Exception(status) || ts == NULL) {
        PyThreadState_Swap(save);
        PyErr_Format(PyExc_RuntimeError,
                     "pyparallel could not create worker interpreter %d: %s",
                     w->index, status.err_msg ? status.err_msg : "unknown error");
        return -1;
    }
    w->interp = PyThreadState_GetInterpreter(ts);
    w->boot_ts = ts;             /* the worker deletes it */
    PyThreadState_Swap(save);
    return 0;
}

/* ---- the Pool type ---------------------------------------------------- */

static void cancel_pending(pp_pool *self);
static int pool_join(pp_pool *self);

static PyObject *
pool_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"nworkers", "config", "classify", "spin_us", NULL};
    int n, i, rc;
    long spin_us = DEFAULT_SPIN_NS / 1000;
    PyObject *config, *classify;
    pp_pool *self;
    pp_state *st = PyType_GetModuleState(type);

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iO!O|l:Pool", kwlist, &n,
                                     &PyDict_Type, &config, &classify, &spin_us))
        return NULL;
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "a pool needs at least one worker");
        return NULL;
    }
    if (st->worker_id >= 0 || PyInterpreterState_Get() != PyInterpreterState_Main()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "worker pools are created by the main interpreter only");
        return NULL;
    }
    if (pp_frozenmap_ready() < 0)
        return NULL;
    self = (pp_pool *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    pp_pools_created++;
    self->st = st;
    self->module = Py_NewRef(PyType_GetModule(type));
    self->classify = Py_NewRef(classify);
    self->nworkers = n;
    self->spin_ns = spin_us < 0 ? 0 : spin_us * 1000;
    self->main_interp = PyInterpreterState_Get();
    self->fn_ids = PyDict_New();
    self->s_set_result = PyUnicode_InternFromString("set_result");
    self->s_set_exception = PyUnicode_InternFromString("set_exception");
    self->s_cancel = PyUnicode_InternFromString("cancel");
    self->workers = PyMem_RawCalloc((size_t)n, sizeof(pp_worker));
    if (!self->fn_ids || !self->s_set_result || !self->s_set_exception ||
        !self->s_cancel || !self->workers)
        goto fail;
    if (pp_queue_init(&self->tasks) != 0 || pp_queue_init(&self->done) != 0 ||
        pthread_mutex_init(&self->fn_mu, NULL) != 0) {
        PyErr_NoMemory();
        goto fail;
    }
    self->queues_ready = 1;
    pp_queue_set_max_spinners(&self->tasks, pp_cpu_count() > 1 ? pp_cpu_count() - 1 : 0);
    pp_word_init(&self->live, 0);
    pp_word_init(&self->ready, 0);
    if (pp_encode(st, config, &self->config, "config") < 0)
        goto fail;

    rc = pp_thread_start(&self->completer, completer_main, self);
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        goto fail;
    }
    self->completer_tid = self->completer.handle;
    self->completer_started = 1;
    for (i = 0; i < n; i++) {
        pp_worker *w = &self->workers[i];
        w->pool = self;
        w->index = i;
        if (create_interpreter(w) < 0)
            goto fail;
        pp_word_add(&self->live, 1);
        rc = pp_thread_start(&w->thread, worker_main, w);
        if (rc != 0) {
            /* Nobody will end that interpreter: do it here. */
            PyThreadState *save = PyThreadState_Swap(w->boot_ts);
            Py_EndInterpreter(w->boot_ts);
            PyThreadState_Swap(save);
            pp_word_add(&self->live, -1);
            errno = rc;
            PyErr_SetFromErrno(PyExc_OSError);
            goto fail;
        }
        self->nstarted++;
    }
    return (PyObject *)self;
fail:
    if (self->queues_ready) {
        PyObject *exc = PyErr_GetRaisedException();
        self->shut = 1;
        pp_queue_close(&self->tasks);
        (void)pool_join(self);
        PyErr_Clear();
        PyErr_SetRaisedException(exc);
    }
    Py_DECREF(self);
    return NULL;
}

/* Names the callable for workers.  Returns its id, FN_PICKLED when it must
 * travel by pickle, or -1 with an exception set. */
static int64_t
fn_lookup(pp_pool *self, PyObject *fn)
{
    PyObject *id, *ref;
    const char *mod, *qual;
    char *m, *q;
    uint32_t n;

    id = PyDict_GetItemWithError(self->fn_ids, fn);
    if (id != NULL)
        return PyLong_AsLongLong(id);
    if (PyErr_Occurred())
        PyErr_Clear();           /* unhashable: it will be pickled */
    ref = PyObject_CallOneArg(self->classify, fn);
    if (ref == NULL)
        return -1;
    if (ref == Py_None) {
        Py_DECREF(ref);
        return FN_PICKLED;
    }
    if (!PyArg_ParseTuple(ref, "ss", &mod, &qual)) {
        Py_DECREF(ref);
        return -1;
    }
    m = strdup(mod);
    q = strdup(qual);
    Py_DECREF(ref);
    pthread_mutex_lock(&self->fn_mu);
    if (m && q && self->n_fns == self->cap_fns) {
        uint32_t cap = self->cap_fns ? self->cap_fns * 2 : 16;
        char **a = realloc(self->fn_module, cap * sizeof *a);
        if (a)
            self->fn_module = a;
        char **b = a ? realloc(self->fn_qualname, cap * sizeof *b) : NULL;
        if (b) {
            self->fn_qualname = b;
            self->cap_fns = cap;
        }
    }
    if (!m || !q || self->n_fns == self->cap_fns || self->n_fns >= FN_PICKLED - 1) {
        pthread_mutex_unlock(&self->fn_mu);
        free(m);
        free(q);
        PyErr_NoMemory();
        return -1;
    }
    n = self->n_fns;
    self->fn_module[n] = m;
    self->fn_qualname[n] = q;
    self->n_fns++;
    pthread_mutex_unlock(&self->fn_mu);
    id = PyLong_FromUnsignedLong(n);
    if (id == NULL || PyDict_SetItem(self->fn_ids, fn, id) < 0)
        PyErr_Clear();           /* only the cache is lost */
    Py_XDECREF(id);
    return n;
}

/* A new Task for future in the given state (main GIL).  New reference. */
static pp_task *
task_new(pp_pool *pool, PyObject *future, uint32_t fn_id, uint32_t state)
{
    pp_task *t = PyObject_GC_New(pp_task, pool->st->task_type);

    if (t == NULL)
        return NULL;
    t->item.node.next = NULL;
    t->item.kind = ITEM_TASK;
    pp_word_init(&t->state, state);
    atomic_init(&t->waiting, 0);
    t->fn_id = fn_id;
    t->failed = 0;
    t->materialized = 0;
    memset(&t->in, 0, sizeof t->in);
    memset(&t->out, 0, sizeof t->out);
    t->future = Py_NewRef(future);
    t->pool = (pp_pool *)Py_NewRef(pool);
    PyObject_GC_Track(t);
    return t;
}

/* submit(future, fn, args, kwargs) -> Task */
static PyObject *
pool_submit(pp_pool *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *future, *fn, *fargs, *fkwargs;
    pp_state *st = self->st;
    pp_task *t;
    int64_t id;

    if (nargs != 4 || !PyTuple_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "submit(future, fn, args: tuple, kwargs: dict | None)");
        return NULL;
    }
    future = args[0];
    fn = args[1];
    fargs = args[2];
    fkwargs = args[3];
    if (fkwargs != Py_None && !PyDict_Check(fkwargs)) {
        PyErr_SetString(PyExc_TypeError, "kwargs must be a dict or None");
        return NULL;
    }
    if (self->shut) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after shutdown");
        return NULL;
    }
    if ((id = fn_lookup(self, fn)) < 0)
        return NULL;
    if ((t = task_new(self, future, (uint32_t)id, TASK_PENDING)) == NULL)
        return NULL;
    if ((t->fn_id == FN_PICKLED && pp_encode(st, fn, &t->in, "the callable") < 0) ||
        pp_encode_call(st, fn, fargs, fkwargs, &t->in) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    Py_INCREF(t);                    /* the pipeline's reference */
    if (pp_queue_push(&self->tasks, &t->item.node) < 0) {
        Py_DECREF(t);
        Py_DECREF(t);
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after shutdown");
        return NULL;
    }
    return (PyObject *)t;
}

static void
cancel_pending(pp_pool *self)
{
    pp_qnode *chain = pp_queue_take_all(&self->tasks), *next;

    for (; chain; chain = next) {
        pp_task *t = pp_container_of(chain, pp_task, item.node);
        next = chain->next;
        if (pp_word_cas(&t->state, TASK_PENDING, TASK_CANCELLED) && t->future) {
            PyObject *r = PyObject_CallMethodNoArgs(t->future, self->s_cancel);
            if (r == NULL)
                PyErr_WriteUnraisable(t->future);
            Py_XDECREF(r);
        }
        if (task_materialize(t) < 0)
            PyErr_WriteUnraisable(NULL);
        Py_DECREF(t);                /* the pipeline's reference */
    }
}

static int
pool_join(pp_pool *self)
{
    int64_t n;
    int i;

    if (self->joined)
        return 0;
    if (self->completer_started && pthread_equal(pthread_self(), self->completer_tid)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "shutdown(wait=True) cannot run inside a Future callback "
                        "(it would wait for itself); use wait=False there");
        return -1;
    }
    while ((n = pp_word_get(&self->live)) > 0) {
        if (wait_word_interruptibly(&self->live, (uint32_t)n, 0, -1) < 0)
            return -1;
    }
    Py_BEGIN_ALLOW_THREADS
    for (i = 0; i < self->nstarted; i++)
        pp_thread_join(&self->workers[i].thread);
    pp_queue_close(&self->done);
    if (self->completer_started)
        pp_thread_join(&self->completer);
    Py_END_ALLOW_THREADS
    self->joined = 1;
    return 0;
}

static PyObject *
pool_shutdown(pp_pool *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"wait", "cancel_futures", NULL};
    int wait = 1, cancel = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|pp:shutdown", kwlist,
                                     &wait, &cancel))
        return NULL;
    self->shut = 1;
    if (cancel)
        cancel_pending(self);
    pp_queue_close(&self->tasks);
    if (wait && pool_join(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* wait_ready(timeout=None) -> bool: every worker has started. */
static PyObject *
pool_wait_ready(pp_pool *self, PyObject *args)
{
    double timeout = -1.0;
    uint64_t start = pp_now_ns();
    int64_t n;

    if (!PyArg_ParseTuple(args, "|d:wait_ready", &timeout))
        return NULL;
    while ((n = pp_word_get(&self->ready)) < self->nworkers) {
        long left = -1;
        if (timeout >= 0) {
            double spent = (double)(pp_now_ns() - start);
            if (spent >= timeout * 1e9)
                Py_RETURN_FALSE;
            left = (long)(timeout * 1e9 - spent);
        }
        if (wait_word_interruptibly(&self->ready, (uint32_t)n, 0, left) < 0)
            return NULL;
    }
    Py_RETURN_TRUE;
}

static int
pool_traverse(pp_pool *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->module);
    Py_VISIT(self->classify);
    Py_VISIT(self->fn_ids);
    return 0;
}

static int
pool_clear(pp_pool *self)
{
    Py_CLEAR(self->classify);
    Py_CLEAR(self->fn_ids);
    return 0;
}

static void
pool_dealloc(pp_pool *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    uint32_t i;
    int n;

    PyObject_GC_UnTrack(self);
    if (self->queues_ready && !self->joined) {
        if (self->completer_started &&
            pthread_equal(pthread_self(), self->completer_tid))
            return;                  /* cannot join ourselves: leak it */
        self->shut = 1;
        pp_queue_close(&self->tasks);
        Py_BEGIN_ALLOW_THREADS
        for (n = 0; n < self->nstarted; n++)
            pp_thread_join(&self->workers[n].thread);
        pp_queue_close(&self->done);
        if (self->completer_started)
            pp_thread_join(&self->completer);
        Py_END_ALLOW_THREADS
    }
    if (self->queues_ready) {
        pp_queue_destroy(&self->tasks);
        pp_queue_destroy(&self->done);
        pthread_mutex_destroy(&self->fn_mu);
    }
    for (i = 0; i < self->n_fns; i++) {
        free(self->fn_module[i]);
        free(self->fn_qualname[i]);
    }
    free(self->fn_module);
    free(self->fn_qualname);
    if (self->workers) {
        for (n = 0; n < self->nworkers; n++) {
            free(self->workers[n].init_error);
            if (self->workers[n].lt)
                pp_lthread_free(self->workers[n].lt);
        }
        PyMem_RawFree(self->workers);
    }
    pp_buf_free(&self->config);
    pool_clear(self);
    Py_CLEAR(self->module);
    Py_CLEAR(self->s_set_result);
    Py_CLEAR(self->s_set_exception);
    Py_CLEAR(self->s_cancel);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *
pool_get_nworkers(pp_pool *self, void *c)
{
    (void)c;
    return PyLong_FromLong(self->nworkers);
}

static PyObject *
pool_get_pending(pp_pool *self, void *c)
{
    (void)c;
    return PyLong_FromSize_t(pp_queue_len(&self->tasks));
}

static PyObject *
pool_get_joined(pp_pool *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->joined);
}

static PyMethodDef pool_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))pool_submit, METH_FASTCALL,
     "submit(future, fn, args, kwargs) -> Task"},
    {"shutdown", (PyCFunction)(void (*)(void))pool_shutdown,
     METH_VARARGS | METH_KEYWORDS, "shutdown(wait=True, cancel_futures=False)"},
    {"wait_ready", (PyCFunction)pool_wait_ready, METH_VARARGS,
     "wait_ready(timeout=None) -> bool: True once every worker has started"},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef pool_getset[] = {
    {"nworkers", (getter)pool_get_nworkers, NULL, "number of workers", NULL},
    {"pending", (getter)pool_get_pending, NULL, "tasks not yet started", NULL},
    {"joined", (getter)pool_get_joined, NULL, "every worker has ended", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot pool_slots[] = {
    {Py_tp_new, pool_new},
    {Py_tp_dealloc, pool_dealloc},
    {Py_tp_traverse, pool_traverse},
    {Py_tp_clear, pool_clear},
    {Py_tp_methods, pool_methods},
    {Py_tp_getset, pool_getset},
    {Py_tp_doc, "Pool(nworkers, config, classify, spin_us=50): own-GIL "
                "worker interpreters (internal; use pyparallel.Executor)"},
    {0, NULL}
};

PyType_Spec pp_pool_spec = {
    .name = "pyparallel._pyparallel.Pool",
    .basicsize = sizeof(pp_pool),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = pool_slots,
};

/* ---- the Task type ---------------------------------------------------- */

/* wait(timeout=None) -> bool: True once the task is finished or cancelled,
 * its Future then complete. */
static PyObject *
task_wait(pp_task *t, PyObject *args)
{
    PyObject *timeout_obj = Py_None;
    long timeout_ns = -1;
    uint64_t start = pp_now_ns();
    long spin = t->pool->spin_ns;
    uint32_t s;

    if (!PyArg_ParseTuple(args, "|O:wait", &timeout_obj))
        return NULL;
    if (timeout_obj != Py_None) {
        double d = PyFloat_AsDouble(timeout_obj);
        if (d == -1.0 && PyErr_Occurred())
            return NULL;
        timeout_ns = d <= 0 ? 0 : (d > 1e9 ? -1 : (long)(d * 1e9));
    }
    for (;;) {
        long left = -1;
        int64_t seen;

        s = pp_word_get(&t->state);
        if (s == TASK_DONE || s == TASK_CANCELLED) {
            if (task_materialize(t) < 0)
                return NULL;
            Py_RETURN_TRUE;
        }
        if (timeout_ns >= 0) {
            uint64_t spent = pp_now_ns() - start;
            if (spent >= (uint64_t)timeout_ns)
                Py_RETURN_FALSE;
            left = timeout_ns - (long)spent;
        }
        atomic_fetch_add(&t->waiting, 1);
        seen = wait_word_interruptibly(&t->state, s, spin, left);
        atomic_fetch_sub(&t->waiting, 1);
        if (seen < 0)
            return NULL;
        spin = 0;
    }
}

/* try_cancel() -> bool: True if the task will never run. */
static PyObject *
task_try_cancel(pp_task *t, PyObject *unused)
{
    (void)unused;
    if (pp_word_cas(&t->state, TASK_PENDING, TASK_CANCELLED))
        Py_RETURN_TRUE;
    return PyBool_FromLong(pp_word_get(&t->state) == TASK_CANCELLED);
}

static PyObject *
task_get_running(pp_task *t, void *c)
{
    (void)c;
    return PyBool_FromLong(pp_word_get(&t->state) == TASK_RUNNING);
}

static int
task_traverse(pp_task *t, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(t));
    Py_VISIT(t->future);
    return 0;
}

static int
task_clear(pp_task *t)
{
    Py_CLEAR(t->future);
    return 0;
}

static void
task_dealloc(pp_task *t)
{
    PyTypeObject *tp = Py_TYPE(t);

    PyObject_GC_UnTrack(t);
    task_clear(t);
    pp_buf_free(&t->in);
    pp_buf_free(&t->out);
    Py_CLEAR(t->pool);
    PyObject_GC_Del(t);
    Py_DECREF(tp);
}

static PyMethodDef task_methods[] = {
    {"wait", (PyCFunction)task_wait, METH_VARARGS,
     "wait(timeout=None) -> bool: True once finished (its Future is then done)"},
    {"try_cancel", (PyCFunction)task_try_cancel, METH_NOARGS,
     "try_cancel() -> bool: True if the task will never run"},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef task_getset[] = {
    {"running", (getter)task_get_running, NULL, "a worker is running it", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot task_slots[] = {
    {Py_tp_dealloc, task_dealloc},
    {Py_tp_traverse, task_traverse},
    {Py_tp_clear, task_clear},
    {Py_tp_methods, task_methods},
    {Py_tp_getset, task_getset},
    {0, NULL}
};

PyType_Spec pp_task_spec = {
    .name = "pyparallel._pyparallel.Task",
    .basicsize = sizeof(pp_task),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = task_slots,
};

/* ---- call_from_main_thread -------------------------------------------- */

PyObject *
pp_call_from_main(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames, int wait)
{
    pp_state *st = pp_state_of(module);
    PyObject *fn, *fargs = NULL, *fkwargs = NULL, *call = NULL, *res = NULL;
    pp_maincall *mc;
    Py_ssize_t i, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    pp_reader rd;

    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError,
                        "call_from_main_thread() needs a callable");
        return NULL;
    }
    fn = args[0];
    if (st->worker == NULL) {
        /* Already in the main interpreter: just call it. */
        res = PyObject_Vectorcall(fn, args + 1, (size_t)(nargs - 1), kwnames);
        if (res != NULL && !wait)
            Py_SETREF(res, Py_NewRef(Py_None));
        return res;
    }
    fargs = PyTuple_New(nargs - 1);
    fkwargs = PyDict_New();
    if (!fargs || !fkwargs)
        goto done;
    for (i = 1; i < nargs; i++)
        PyTuple_SET_ITEM(fargs, i - 1, Py_NewRef(args[i]));
    for (i = 0; i < nkw; i++) {
        if (PyDict_SetItem(fkwargs, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0)
            goto done;
    }
    call = PyTuple_Pack(3, fn, fargs, fkwargs);
    if (call == NULL)
        goto done;
    if ((mc = calloc(1, sizeof *mc)) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    mc->item.kind = ITEM_MAINCALL;
    mc->wait = wait;
    pp_word_init(&mc->done, 0);
    if (pp_encode(st, call, &mc->in, "call_from_main_thread()") < 0) {
        pp_buf_free(&mc->in);
        free(mc);
        goto done;
    }
    if (pp_queue_push(&st->worker->pool->done, &mc->item.node) < 0) {
        pp_buf_free(&mc->in);
        free(mc);
        PyErr_SetString(PyExc_RuntimeError,
                        "pyparallel is shutting down: the main interpreter "
                        "no longer takes calls");
        goto done;
    }
    if (!wait) {
        res = Py_NewRef(Py_None);
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    pp_word_wait(&mc->done, 0, st->worker->pool->spin_ns, -1);
    Py_END_ALLOW_THREADS
    rd.p = mc->out.data;
    rd.end = mc->out.data + mc->out.len;
    res = pp_decode(st, &rd);
    if (res != NULL && mc->failed) {
        PyObject *exc = rebuild_exception(st, res);
        Py_CLEAR(res);
        if (exc)
            PyErr_SetRaisedException(exc);
    }
    pp_buf_free(&mc->out);
    free(mc);
done:
    Py_XDECREF(fargs);
    Py_XDECREF(fkwargs);
    Py_XDECREF(call);
    return res;
}

/* ---- hooks for the I/O layer (pp_io.h) -------------------------------- */

int
pp_pool_nworkers(PyObject *pool)
{
    return ((pp_pool *)pool)->nworkers;
}

pp_lthread *
pp_pool_lthread(PyObject *pool_obj, int i)
{
    pp_pool *pool = (pp_pool *)pool_obj;
    pp_worker *w;
    int64_t n;

    if (i < 0 || i >= pool->nworkers) {
        PyErr_Format(PyExc_ValueError, "worker must be in 0..%d, not %d",
                     pool->nworkers - 1, i);
        return NULL;
    }
    if (pool->shut) {
        PyErr_SetString(PyExc_RuntimeError,
                        "pyparallel's workers have shut down (interpreter exit "
                        "or pyparallel.shutdown()); no more I/O can start");
        return NULL;
    }
    while ((n = pp_word_get(&pool->ready)) < pool->nworkers) {
        if (wait_word_interruptibly(&pool->ready, (uint32_t)n, 0, -1) < 0)
            return NULL;
    }
    w = &pool->workers[i];
    if (w->init_error != NULL) {
        PyErr_Format(pp_exc(pool->st->WorkerInitError, PyExc_RuntimeError),
                     "pyparallel worker %d failed to start, so it cannot run "
                     "I/O:\n%s", i, w->init_error);
        return NULL;
    }
    if (w->lt == NULL && (w->lt = pp_lthread_start(w, i, w->interp, w->st)) == NULL)
        return NULL;
    if (pp_word_get(&w->lt->started) != 1) {
        PyErr_Format(PyExc_RuntimeError,
                     "the I/O loop of pyparallel worker %d failed to start "
                     "(its error was printed)", i);
        return NULL;
    }
    return w->lt;
}

int64_t
pp_pool_fn_id(PyObject *pool, PyObject *fn)
{
    int64_t id = fn_lookup((pp_pool *)pool, fn);

    return id == FN_PICKLED ? -2 : id;
}

PyObject *
pp_worker_callable(struct pp_worker *w, uint32_t id)
{
    return worker_fn(w, id);
}

PyObject *
pp_pool_task_new(PyObject *pool_obj, PyObject *future)
{
    pp_pool *pool = (pp_pool *)pool_obj;
    pp_task *t = task_new(pool, future, FN_PICKLED, TASK_RUNNING);

    if (t == NULL)
        return NULL;
    Py_INCREF(t);                    /* the pipeline's reference */
    return (PyObject *)t;
}

void
pp_task_finish(struct pp_worker *w, PyObject *task, PyObject *value)
{
    pp_task *t = (pp_task *)task;

    t->out.len = 0;
    if (value == NULL || pp_encode(w->st, value, &t->out, "the result") < 0)
        report_exception(w, t);
    pp_word_set(&t->state, TASK_DONE);
    pp_queue_push(&w->pool->done, &t->item.node);
}

int64_t
pp_wait_word(pp_word *word, uint32_t expected, long timeout_ns)
{
    return wait_word_interruptibly(word, expected, 0, timeout_ns);
}
