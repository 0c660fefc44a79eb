/* maincall.c -- call_from_main_thread(): a worker runs a call in main.
 *
 * The worker encodes (fn, args, kwargs) into a ppy_maincall and pushes it
 * on the pool's calls queue.  The main-call thread, a C thread holding a
 * main-interpreter thread state, runs the calls one at a time in order:
 * it decodes each in the main interpreter, calls it, and -- when the
 * worker waits -- encodes the result or the packed exception back and
 * publishes done.  It is not the completion thread, so a call that blocks
 * never stops Futures from completing.
 *
 * A call may itself wait on the workers (Server.stats(), timer(), a
 * Future's result()).  While it does, the calls queued behind it run
 * (ppy_pump, wait.c), so a worker waiting on one of those is not held up.
 * The one wait that can never end is on the very thread that waits for
 * the running call -- a loop callback calling
 * call_from_main_thread_and_wait(f) where f waits on that loop -- and that
 * wait fails with RuntimeError at once instead (ppy__check_wait_*).
 *
 * pyparallel's own quick calls (a worker on 3.12 importing an extension
 * module in main first) go to the completion thread instead, so that a
 * user's call that blocks does not hold up a worker's imports.
 *
 * A SystemExit or KeyboardInterrupt raised by a call goes to the main
 * thread, as a signal handler's would (ppy_raise_in_main); a call that
 * was waited for raises it in the worker too.
 */
#include "pool_internal.h"

#include <stdlib.h>

/* The pool whose main-call thread this is (NULL on every other thread). */
static _Thread_local ppy_pool *caller_pool;

static int *
in_main_counter(ppy_maincall *mc)
{
    if (!mc->wait || mc->worker == NULL)
        return NULL;
    return mc->origin == ORIGIN_LOOP ? &mc->worker->loop_in_main
         : mc->origin == ORIGIN_TASK ? &mc->worker->task_in_main : NULL;
}

/* Runs one call_from_main_thread request.  Main GIL held.
 *
 * Who frees mc: this function when nobody waits; the waiting worker
 * otherwise, the moment done is published -- so from then on mc is not
 * ours to read, and what we still need of it (wait, worker) is copied
 * first. */
void
ppy__run_maincall(ppy_pool *pool, ppy_maincall *mc)
{
    ppy_state *st = pool->st;
    pp_reader rd = {mc->in.data, mc->in.data + mc->in.len};
    PyObject *call = ppy_decode(st, &rd), *res = NULL, *exc, *pack;
    int *waiting = caller_pool ? in_main_counter(mc) : NULL;
    const int wait = mc->wait;

    if (waiting)
        ++*waiting;            /* that thread waits until we are done */
    if (call && PyTuple_Check(call) && PyTuple_GET_SIZE(call) == 3) {
        PyObject *kw = PyTuple_GET_ITEM(call, 2);
        res = PyObject_Call(PyTuple_GET_ITEM(call, 0), PyTuple_GET_ITEM(call, 1),
                            kw == Py_None ? NULL : kw);
    } else if (call) {
        PyErr_SetString(PyExc_SystemError, "malformed main-thread call");
    }
    if (waiting)
        --*waiting;
    pp_buf_free(&mc->in);
    Py_XDECREF(call);
    if (res != NULL && wait && ppy_encode(st, res, &mc->out, "the result") < 0)
        Py_CLEAR(res);
    if (res != NULL) {
        Py_DECREF(res);
        if (!wait)
            free(mc);
        else
            pp_word_set(&mc->done, 1);   /* the worker owns mc from here on */
        return;
    }
    exc = PyErr_GetRaisedException();
    if (wait) {
        mc->failed = 1;
        pack = st->errors_module
            ? PyObject_GetAttrString(st->errors_module, "pack_exception") : NULL;
        PyErr_Clear();
        ppy_pack_exception(st, pack, exc, &mc->out, "builtins.RuntimeError",
                           "the main-thread call failed and its exception "
                           "could not be sent back");
        Py_XDECREF(pack);
        pp_word_set(&mc->done, 1);     /* the worker owns mc from here on */
    } else {
        if (!ppy_is_exit_exception(exc)) {
            PySys_WriteStderr("pyparallel: a call_from_main_thread() call "
                              "from worker %d raised:\n",
                              mc->worker ? mc->worker->index : -1);
            PyErr_DisplayException(exc);
        }
        free(mc);
    }
    if (ppy_is_exit_exception(exc)) {
        PyErr_SetRaisedException(exc);
        ppy_raise_in_main();
    } else {
        Py_XDECREF(exc);
    }
}

static void
run_one(void *ctx, pp_qnode *node)
{
    ppy__run_maincall(ctx, pp_container_of(node, ppy_maincall, item.node));
}

void
ppy__caller_main(void *arg)
{
    ppy_pool *pool = arg;
    PyThreadState *ts = PyThreadState_New(pool->main_interp);
    ppy_pump pump = {&pool->calls, NULL, run_one, pool, 0};

    caller_pool = pool;
    ppy_pump_set(&pump);
    while (ppy_pump_serve(&pump, ts))
        ;
    ppy_pump_set(NULL);
    caller_pool = NULL;
    PyEval_RestoreThread(ts);
    PyThreadState_Clear(ts);
    PyThreadState_DeleteCurrent();
}

/* ---- waits the main-call thread must not start ------------------------ */

int
ppy_check_wait_on_loop(struct ppy_worker *w)
{
    return ppy__check_wait_on_worker(w, 1);
}

static int
deadlock(ppy_worker *w, int loop)
{
    PyErr_Format(PyExc_RuntimeError,
                 "this would wait for pyparallel worker %d's %s, which is "
                 "itself waiting for the function that makes this call "
                 "(through call_from_main_thread_and_wait()): neither could "
                 "ever go on.  From a worker, use call_from_main_thread() "
                 "(it does not wait) to run code that waits on that worker.",
                 w->index, loop ? "I/O loop (a server, client or timer "
                 "callback is running there)" : "task");
    return -1;
}

int
ppy__check_wait_on_worker(ppy_worker *w, int loop)
{
    if (caller_pool == NULL || w == NULL)
        return 0;
    if (loop ? w->loop_in_main > 0 : w->task_in_main > 0)
        return deadlock(w, loop);
    return 0;
}

int
ppy__check_wait_on_task(ppy_task *t)
{
    ppy_pool *pool = t->pool;
    int runner, i;

    if (caller_pool == NULL)
        return 0;
    if (t->loop_worker >= 0)
        return ppy__check_wait_on_worker(&pool->workers[t->loop_worker], 1);
    if ((runner = atomic_load(&t->runner)) >= 0)
        return ppy__check_wait_on_worker(&pool->workers[runner], 0);
    /* Not started: any worker may take it, unless every one is waiting. */
    for (i = 0; i < pool->nworkers; i++) {
        if (pool->workers[i].task_in_main == 0)
            return 0;
    }
    return deadlock(&pool->workers[0], 0);
}

PyObject *
ppy_call_from_main(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames, int wait, int internal)
{
    ppy_state *st = ppy_state_of(module);
    PyObject *fn, *fargs = NULL, *fkwargs = NULL, *call = NULL, *res = NULL;
    ppy_maincall *mc;
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
    mc->worker = st->worker;
    mc->origin = ppy_lthread_current != NULL ? ORIGIN_LOOP
               : pthread_equal(pthread_self(), st->worker->thread.handle)
               ? ORIGIN_TASK : ORIGIN_OTHER;
    pp_word_init(&mc->done, 0);
    if (ppy_encode(st, call, &mc->in, "call_from_main_thread()") < 0) {
        pp_buf_free(&mc->in);
        free(mc);
        goto done;
    }
    if (pp_queue_push(internal ? &st->worker->pool->done
                               : &st->worker->pool->calls, &mc->item.node) < 0) {
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
    /* The main-call thread always answers (a call that would wait on this
     * thread fails there instead of waiting), and lives until this worker
     * has ended. */
    Py_BEGIN_ALLOW_THREADS
    pp_word_wait(&mc->done, 0, st->worker->pool->spin_ns, -1);
    Py_END_ALLOW_THREADS
    rd.p = mc->out.data;
    rd.end = mc->out.data + mc->out.len;
    res = ppy_decode(st, &rd);
    if (res != NULL && mc->failed) {
        PyObject *exc = ppy_rebuild_exception(st, res);
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
