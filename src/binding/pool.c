/* pool.c -- the Pool type: own-GIL worker interpreters and their queues.
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
 *
 * The rest of the pool lives beside this file (see pool_internal.h):
 * worker.c, task.c, completion.c, maincall.c.
 */
#include "pool_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Pools ever created: safety mode must be chosen before the first. */
int ppy_pools_created;

/* Names the callable for workers.  Returns its id, FN_PICKLED when it must
 * travel by pickle, or -1 with an exception set. */
static int64_t
fn_lookup(ppy_pool *self, PyObject *fn)
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

static int pool_join(ppy_pool *self);

/* Encodes the call of the initializer each worker makes before its first
 * task, as submit() encodes a task's.  Returns 0, or -1 with an exception
 * set (TransferError naming what cannot travel). */
static int
encode_initializer(ppy_pool *self, PyObject *fn, PyObject *args)
{
    int64_t id = fn_lookup(self, fn);

    if (id < 0)
        return -1;
    self->init_fn_id = (uint32_t)id;
    if ((id == FN_PICKLED && ppy_encode(self->st, fn, &self->init, "the initializer") < 0) ||
        ppy_encode_call(self->st, fn, args, NULL, &self->init) < 0)
        return -1;
    self->has_init = 1;
    return 0;
}

static PyObject *
pool_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"nworkers", "config", "classify", "spin_us",
                             "initializer", NULL};
    int n, i, rc;
    long spin_us = DEFAULT_SPIN_NS / 1000;
    PyObject *config, *classify, *init = Py_None;
    ppy_pool *self;
    ppy_state *st = PyType_GetModuleState(type);

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iO!O|lO:Pool", kwlist, &n,
                                     &PyDict_Type, &config, &classify, &spin_us,
                                     &init))
        return NULL;
    if (init != Py_None && (!PyTuple_Check(init) || PyTuple_GET_SIZE(init) != 2 ||
                            !PyTuple_Check(PyTuple_GET_ITEM(init, 1)))) {
        PyErr_SetString(PyExc_TypeError,
                        "initializer must be None or (callable, args tuple)");
        return NULL;
    }
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "a pool needs at least one worker");
        return NULL;
    }
    if (st->worker_id >= 0 || PyInterpreterState_Get() != PyInterpreterState_Main()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "worker pools are created by the main interpreter only");
        return NULL;
    }
    if (ppy_frozenmap_ready() < 0)
        return NULL;
    self = (ppy_pool *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    ppy_pools_created++;
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
    self->workers = PyMem_RawCalloc((size_t)n, sizeof(ppy_worker));
    if (!self->fn_ids || !self->s_set_result || !self->s_set_exception ||
        !self->s_cancel || !self->workers)
        goto fail;
    if (pp_queue_init(&self->tasks) != 0 || pp_queue_init(&self->done) != 0 ||
        pp_queue_init(&self->calls) != 0 ||
        pthread_mutex_init(&self->fn_mu, NULL) != 0) {
        PyErr_NoMemory();
        goto fail;
    }
    for (i = 0; i < n; i++)
        pthread_mutex_init(&self->workers[i].lt_mu, NULL);
    self->queues_ready = 1;
    pp_queue_set_max_spinners(&self->tasks, pp_cpu_count() > 1 ? pp_cpu_count() - 1 : 0);
    pp_word_init(&self->live, 0);
    pp_word_init(&self->ready, 0);
    pp_word_init(&self->broken, POOL_OK);
    if (ppy_encode(st, config, &self->config, "config") < 0)
        goto fail;
    if (init != Py_None && encode_initializer(self, PyTuple_GET_ITEM(init, 0),
                                              PyTuple_GET_ITEM(init, 1)) < 0)
        goto fail;

    rc = pp_thread_start(&self->completer, ppy__completer_main, self);
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        goto fail;
    }
    self->completer_tid = self->completer.handle;
    self->completer_started = 1;
    rc = pp_thread_start(&self->caller, ppy__caller_main, self);
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        goto fail;
    }
    self->caller_tid = self->caller.handle;
    self->caller_started = 1;
    for (i = 0; i < n; i++) {
        ppy_worker *w = &self->workers[i];
        w->pool = self;
        w->index = i;
        if (ppy__create_interpreter(w) < 0)
            goto fail;
        pp_word_add(&self->live, 1);
        rc = pp_thread_start(&w->thread, ppy__worker_main, w);
        if (rc != 0) {
            /* Nobody will end that interpreter: do it here. */
            ppy__discard_interpreter(w);
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

/* submit(future, fn, args, kwargs) -> Task */
static PyObject *
pool_submit(ppy_pool *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *future, *fn, *fargs, *fkwargs;
    ppy_state *st = self->st;
    ppy_task *t;
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
    if ((t = ppy__task_new(self, future, (uint32_t)id, TASK_PENDING)) == NULL)
        return NULL;
    if ((t->fn_id == FN_PICKLED && ppy_encode(st, fn, &t->in, "the callable") < 0) ||
        ppy_encode_call(st, fn, fargs, fkwargs, &t->in) < 0) {
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
cancel_pending(ppy_pool *self)
{
    pp_qnode *chain = pp_queue_take_all(&self->tasks), *next;

    for (; chain; chain = next) {
        ppy_task *t = pp_container_of(chain, ppy_task, item.node);
        next = chain->next;
        if (pp_word_cas(&t->state, TASK_PENDING, TASK_CANCELLED) && t->future) {
            PyObject *r = PyObject_CallMethodNoArgs(t->future, self->s_cancel);
            if (r == NULL)
                PyErr_WriteUnraisable(t->future);
            Py_XDECREF(r);
        }
        if (ppy__task_materialize(t) < 0)
            PyErr_WriteUnraisable(NULL);
        Py_DECREF(t);                /* the pipeline's reference */
    }
}

/* The calling thread is one of the pool's own (the completion thread or
 * the main-call thread), which cannot wait for the pool to end. */
static int
on_own_thread(ppy_pool *self)
{
    return (self->completer_started &&
            pthread_equal(pthread_self(), self->completer_tid)) ||
           (self->caller_started && pthread_equal(pthread_self(), self->caller_tid));
}

/* Joins the worker threads (told to end: the task queue is closed), then
 * the completion and main-call threads, which serve the workers until
 * they have ended. */
static void
join_threads(ppy_pool *self)
{
    int i;

    Py_BEGIN_ALLOW_THREADS
    for (i = 0; i < self->nstarted; i++)
        pp_thread_join(&self->workers[i].thread);
    pp_queue_close(&self->done);
    pp_queue_close(&self->calls);
    if (self->completer_started)
        pp_thread_join(&self->completer);
    if (self->caller_started)
        pp_thread_join(&self->caller);
    Py_END_ALLOW_THREADS
    self->joined = 1;
}

static int
pool_join(ppy_pool *self)
{
    int64_t n;

    if (self->joined)
        return 0;
    if (on_own_thread(self)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "shutdown(wait=True) cannot run inside a Future callback "
                        "or a call_from_main_thread() function (it would wait "
                        "for itself); use wait=False there");
        return -1;
    }
    while ((n = pp_word_get(&self->live)) > 0) {
        if (ppy_wait_word(&self->live, (uint32_t)n, 0, -1) < 0)
            return -1;
    }
    join_threads(self);
    return 0;
}

static PyObject *
pool_shutdown(ppy_pool *self, PyObject *args, PyObject *kwargs)
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
/* A worker still starting may be waiting for a call the main-call thread
 * runs (3.12 imports extension modules in main first). */
static int
check_starting(void *pool)
{
    ppy_pool *self = pool;
    int i;

    for (i = 0; i < self->nworkers; i++) {
        if (ppy__check_wait_on_worker(&self->workers[i], 0) < 0)
            return -1;
    }
    return 0;
}

/* Waits until every worker has started.  Returns 1, 0 on timeout, or -1
 * with an exception set. */
static int
wait_ready(ppy_pool *self, long timeout_ns)
{
    uint64_t start = pp_now_ns();
    int64_t n;

    while ((n = pp_word_get(&self->ready)) < self->nworkers) {
        int64_t left = ppy_time_left(start, timeout_ns);
        if (left == 0)
            return 0;
        if (ppy_wait_word_checked(&self->ready, (uint32_t)n, 0, left,
                                  check_starting, self) < 0)
            return -1;
    }
    return 1;
}

static PyObject *
pool_wait_ready(ppy_pool *self, PyObject *args)
{
    PyObject *timeout_obj = Py_None;
    int64_t timeout_ns;
    int r;

    if (!PyArg_ParseTuple(args, "|O:wait_ready", &timeout_obj) ||
        ppy_timeout_ns(timeout_obj, "timeout", PPY_TIMEOUT_NONE, &timeout_ns) < 0)
        return NULL;
    r = wait_ready(self, (long)timeout_ns);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static int
pool_traverse(ppy_pool *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->module);
    Py_VISIT(self->classify);
    Py_VISIT(self->fn_ids);
    return 0;
}

static int
pool_clear(ppy_pool *self)
{
    Py_CLEAR(self->classify);
    Py_CLEAR(self->fn_ids);
    return 0;
}

static void
pool_dealloc(ppy_pool *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    uint32_t i;
    int n;

    PyObject_GC_UnTrack(self);
    if (self->queues_ready && !self->joined) {
        if (on_own_thread(self))
            return;                  /* cannot join ourselves: leak it */
        self->shut = 1;
        pp_queue_close(&self->tasks);
        join_threads(self);
    }
    if (self->queues_ready) {
        pp_queue_destroy(&self->tasks);
        pp_queue_destroy(&self->done);
        pp_queue_destroy(&self->calls);
        pthread_mutex_destroy(&self->fn_mu);
        for (n = 0; n < self->nworkers; n++)
            pthread_mutex_destroy(&self->workers[n].lt_mu);
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
                ppy_lthread_free(self->workers[n].lt);
        }
        PyMem_RawFree(self->workers);
    }
    pp_buf_free(&self->config);
    pp_buf_free(&self->init);
    free(self->broken_tb);
    pool_clear(self);
    Py_CLEAR(self->module);
    Py_CLEAR(self->s_set_result);
    Py_CLEAR(self->s_set_exception);
    Py_CLEAR(self->s_cancel);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *
pool_get_nworkers(ppy_pool *self, void *c)
{
    (void)c;
    return PyLong_FromLong(self->nworkers);
}

static PyObject *
pool_get_pending(ppy_pool *self, void *c)
{
    (void)c;
    return PyLong_FromSize_t(pp_queue_len(&self->tasks));
}

static PyObject *
pool_get_broken(ppy_pool *self, void *c)
{
    (void)c;
    if (pp_word_get(&self->broken) != POOL_BROKEN)
        Py_RETURN_NONE;
    return PyUnicode_FromString(self->broken_tb);
}

static PyObject *
pool_get_joined(ppy_pool *self, void *c)
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
    {"broken", (getter)pool_get_broken, NULL,
     "None, or the traceback of the initializer that failed in a worker", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot pool_slots[] = {
    {Py_tp_new, pool_new},
    {Py_tp_dealloc, pool_dealloc},
    {Py_tp_traverse, pool_traverse},
    {Py_tp_clear, pool_clear},
    {Py_tp_methods, pool_methods},
    {Py_tp_getset, pool_getset},
    {Py_tp_doc, "Pool(nworkers, config, classify, spin_us=50, initializer=None): own-GIL "
                "worker interpreters (internal; use pyparallel.Executor)"},
    {0, NULL}
};

PyType_Spec ppy_pool_spec = {
    .name = "pyparallel._pyparallel.Pool",
    .basicsize = sizeof(ppy_pool),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = pool_slots,
};

/* ---- hooks for the I/O layer (ppy_io.h) -------------------------------- */

int
ppy_pool_nworkers(PyObject *pool)
{
    return ((ppy_pool *)pool)->nworkers;
}

ppy_lthread *
ppy_pool_lthread(PyObject *pool_obj, int i)
{
    ppy_pool *pool = (ppy_pool *)pool_obj;
    ppy_worker *w;
    ppy_lthread *lt;
    int ended;

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
    if (wait_ready(pool, -1) < 0)
        return NULL;
    w = &pool->workers[i];
    if (w->init_error != NULL) {
        PyErr_Format(ppy_exc(pool->st->WorkerInitError, PyExc_RuntimeError),
                     "pyparallel worker %d failed to start, so it cannot run "
                     "I/O:\n%s", i, w->init_error);
        return NULL;
    }
    /* The worker thread reads w->lt as it ends: starting a loop thread and
     * ending the worker are serialised by lt_mu (taken with the GIL
     * released: the starter waits for a thread that needs no main GIL, and
     * another main thread may be waiting for the lock). */
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&w->lt_mu);
    Py_END_ALLOW_THREADS
    if (w->ending)
        lt = NULL;
    else if ((lt = w->lt) == NULL && (lt = ppy_lthread_start(w, i, w->interp, w->st)) != NULL)
        w->lt = lt;
    ended = w->ending;
    pthread_mutex_unlock(&w->lt_mu);
    if (ended) {
        PyErr_SetString(PyExc_RuntimeError,
                        "pyparallel's workers have shut down (interpreter exit "
                        "or pyparallel.shutdown()); no more I/O can start");
        return NULL;
    }
    if (lt == NULL)
        return NULL;
    if (pp_word_get(&lt->started) != 1) {
        PyErr_Format(PyExc_RuntimeError,
                     "the I/O loop of pyparallel worker %d failed to start "
                     "(its error was printed)", i);
        return NULL;
    }
    return lt;
}

int64_t
ppy_pool_fn_id(PyObject *pool, PyObject *fn)
{
    int64_t id = fn_lookup((ppy_pool *)pool, fn);

    return id == FN_PICKLED ? -2 : id;
}
