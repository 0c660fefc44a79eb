/* worker.c -- a worker: one OS thread owning one own-GIL interpreter.
 *
 * The main thread creates each interpreter (one at a time: concurrent
 * creation has crashed CPython) and starts the worker's thread.  The
 * worker makes a thread state of its own, imports pyparallel in its
 * interpreter, then pops tasks (spinning briefly before sleeping), resolves
 * each callable once by name, decodes the arguments, calls, and encodes the
 * result or the exception.  When the pool shuts down it stops its loop
 * thread, then ends its own interpreter with its own thread state,
 * serialised by a process-wide lock.  Worker threads start with every
 * signal blocked, so Ctrl-C always reaches the main thread.
 */
#include "pool_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Ending interpreters concurrently is not something CPython promises. */
static pthread_mutex_t end_interp_mu = PTHREAD_MUTEX_INITIALIZER;

/* Start-up inside the worker's interpreter.  Returns 0 or -1. */
static int
worker_init(ppy_worker *w)
{
    ppy_state tmp_state;
    pp_reader rd = {w->pool->config.data, w->pool->config.data + w->pool->config.len};
    PyObject *config, *path, *wmod = NULL, *r;

    /* The configuration holds builtin values only: no pickle, no state. */
    memset(&tmp_state, 0, sizeof tmp_state);
    tmp_state.worker_id = w->index;
    config = ppy_decode(&tmp_state, &rd);
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
    w->st = ppy_state_of(w->module);
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
    w->broken_error = PyObject_GetAttrString(wmod, "broken_error");
    w->fini = PyObject_GetAttrString(wmod, "fini");
    w->fns = PyList_New(0);
    if (!w->resolve || !w->pack_exception || !w->broken_error || !w->fini ||
        !w->fns)
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
worker_fn(ppy_worker *w, uint32_t id)
{
    ppy_pool *pool = w->pool;
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
report_exception(ppy_worker *w, ppy_task *t)
{
    static ppy_state bare = {.worker_id = 0};  /* no pickle: builtins only */
    PyObject *exc = PyErr_GetRaisedException();

    t->failed = 1;
    ppy_pack_exception(w->st ? w->st : &bare, w->pack_exception, exc, &t->out,
                       w->init_error ? "pyparallel._errors.WorkerInitError"
                                     : "builtins.SystemError", NULL);
    Py_XDECREF(exc);
}

/* Decodes and makes the call encoded in `in` (as submit() encodes it: the
 * callable by fn_id, or pickled first; then args and kwargs).  New
 * reference, or NULL with an exception set.  Worker GIL held. */
static PyObject *
call_encoded(ppy_worker *w, uint32_t fn_id, const pp_buf *in)
{
    pp_reader rd = {in->data, in->data + in->len};
    PyObject *fn, *args = NULL, *kwargs = NULL, *res = NULL;

    fn = fn_id == FN_PICKLED ? ppy_decode(w->st, &rd) : worker_fn(w, fn_id);
    if (fn != NULL && (args = ppy_decode(w->st, &rd)) != NULL &&
        (kwargs = ppy_decode(w->st, &rd)) != NULL)
        res = PyObject_Call(fn, args, kwargs == Py_None ? NULL : kwargs);
    Py_XDECREF(fn);
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    return res;
}

/* The pool's initializer failed in some worker: raises the BrokenPool that
 * every task gets from then on, with that worker's traceback. */
static void
raise_broken(ppy_worker *w)
{
    PyObject *exc = PyObject_CallFunction(w->broken_error, "s",
                                          w->pool->broken_tb);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
}

/* Hands a finished (or cancelled) task, and the pipeline's reference, to
 * the completion thread; lazily when a caller is waiting on it and so
 * completes its Future itself.  The done queue closes only once every
 * worker and loop thread has ended, so this cannot fail; if it did, the
 * Future could never complete, and that is said loudly. */
static void
hand_to_completion(ppy_pool *pool, ppy_task *t, int lazy)
{
    int rc = lazy ? pp_queue_push_lazy(&pool->done, &t->item.node, LAZY_BATCH)
                  : pp_queue_push(&pool->done, &t->item.node);

    if (rc < 0)
        fprintf(stderr, "pyparallel: internal error: a finished task could "
                "not be handed to the completion thread (its queue is "
                "closed); its Future will never complete\n");
}

/* Runs one task.  The worker's GIL is held. */
static void
run_task(ppy_worker *w, ppy_task *t)
{
    PyObject *res = NULL;

    if (w->init_error != NULL) {
        PyErr_Format(ppy_exc(w->st ? w->st->WorkerInitError : NULL,
                            PyExc_RuntimeError),
                     "pyparallel worker %d failed to start, so it cannot run "
                     "tasks:\n%s", w->index, w->init_error);
    } else if (pp_word_get(&w->pool->broken) == POOL_BROKEN) {
        raise_broken(w);
    } else {
        res = call_encoded(w, t->fn_id, &t->in);
    }
    pp_buf_free(&t->in);
    t->out.len = 0;
    if (res == NULL || ppy_encode(w->st, res, &t->out, "the result") < 0)
        report_exception(w, t);
    Py_XDECREF(res);
}

/* Runs the pool's initializer, once, before the worker's first task.  If
 * it raises, the first worker to fail marks the pool broken with its
 * traceback. */
static void
run_initializer(ppy_worker *w)
{
    ppy_pool *pool = w->pool;
    PyObject *res = call_encoded(w, pool->init_fn_id, &pool->init);
    char *tb;

    if (res != NULL) {
        Py_DECREF(res);
        return;
    }
    tb = ppy_exception_text();
    if (pp_word_cas(&pool->broken, POOL_OK, POOL_BREAKING)) {
        pool->broken_tb = tb;
        pp_word_set(&pool->broken, POOL_BROKEN);
    } else {
        free(tb);
    }
}

void
ppy__worker_main(void *arg)
{
    ppy_worker *w = arg;
    ppy_lthread *lt;
    ppy_pool *pool = w->pool;
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
        w->init_error = ppy_exception_text();
    else if (pool->has_init)
        run_initializer(w);
    PyEval_SaveThread();
    /* Ready: I/O may start in this interpreter from now on, after the
     * initializer too. */
    pp_word_add(&pool->ready, 1);

    /* An idle worker spins a little before sleeping (the queue lets fewer
     * workers than CPUs spin at once, so a submitter always has a CPU):
     * on an idle 2-vCPU VM this took a trivial round trip from 86 us to
     * 6 us, because waking a sleeping thread means waking a halted vCPU. */
    while ((node = pp_queue_pop_claimed(&pool->tasks, pool->spin_ns, claimed)) != NULL) {
        ppy_task *t = pp_container_of(node, ppy_task, item.node);

        claimed = 0;
        atomic_store(&t->runner, w->index);   /* before RUNNING shows */
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
        hand_to_completion(pool, t, atomic_load(&t->waiting));
    }

    /* The loop thread goes first: it closes its connections (running their
     * connection_lost) and deletes its thread state, and Py_EndInterpreter
     * wants to be the interpreter's last thread. */
    pthread_mutex_lock(&w->lt_mu);
    w->ending = 1;                    /* no loop thread starts after this */
    lt = w->lt;
    pthread_mutex_unlock(&w->lt_mu);
    if (lt)
        ppy_lthread_stop_join(lt);    /* freed with the pool */
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
    Py_CLEAR(w->broken_error);
    if (w->st) {
        w->st->worker = NULL;
        w->st = NULL;
    }
    Py_CLEAR(w->module);
    ppy_static_type_fini_interp(&PPY_FrozenMap_Type);
    pthread_mutex_lock(&end_interp_mu);
    Py_EndInterpreter(w->ts);
    pthread_mutex_unlock(&end_interp_mu);
    w->ts = NULL;
    pp_word_add(&pool->live, -1);
}

/* Creates one own-GIL interpreter from the main thread.  Returns 0, or -1
 * with an exception set. */
int
ppy__create_interpreter(ppy_worker *w)
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

void
ppy__discard_interpreter(ppy_worker *w)
{
    PyThreadState *save = PyThreadState_Swap(w->boot_ts);

    pthread_mutex_lock(&end_interp_mu);
    Py_EndInterpreter(w->boot_ts);
    pthread_mutex_unlock(&end_interp_mu);
    PyThreadState_Swap(save);
    w->boot_ts = NULL;
}

PyObject *
ppy_worker_callable(struct ppy_worker *w, uint32_t id)
{
    return worker_fn(w, id);
}

void
ppy_task_finish(struct ppy_worker *w, PyObject *task, PyObject *value)
{
    ppy_task *t = (ppy_task *)task;

    t->out.len = 0;
    if (value == NULL || ppy_encode(w->st, value, &t->out, "the result") < 0)
        report_exception(w, t);
    pp_word_set(&t->state, TASK_DONE);
    hand_to_completion(w->pool, t, 0);
}
