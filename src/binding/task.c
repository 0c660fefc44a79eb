/* task.c -- the Task type: one submitted call.
 *
 * A Task carries a call's encoded arguments to a worker and its encoded
 * result (or packed exception) back, with a state word PENDING -> RUNNING ->
 * DONE (or CANCELLED) that callers wait on.  Its Future is completed in the
 * main interpreter by whoever sees DONE first: a caller already blocked in
 * Future.result(), or the completion thread.
 */
#include "pool_internal.h"

#include <string.h>

/* A new Task for future in the given state (main GIL).  New reference. */
ppy_task *
ppy__task_new(ppy_pool *pool, PyObject *future, uint32_t fn_id, uint32_t state)
{
    ppy_task *t = PyObject_GC_New(ppy_task, pool->st->task_type);

    if (t == NULL)
        return NULL;
    t->item.node.next = NULL;
    t->item.kind = ITEM_TASK;
    pp_word_init(&t->state, state);
    atomic_init(&t->waiting, 0);
    atomic_init(&t->runner, -1);
    t->loop_worker = -1;
    t->fn_id = fn_id;
    t->failed = 0;
    t->materialized = 0;
    memset(&t->in, 0, sizeof t->in);
    memset(&t->out, 0, sizeof t->out);
    t->future = Py_NewRef(future);
    t->pool = (ppy_pool *)Py_NewRef(pool);
    PyObject_GC_Track(t);
    return t;
}

/* Completes the task's Future if the worker has finished it and nobody did
 * yet.  Main GIL held.  A failing callback is reported as unraisable, like
 * concurrent.futures does; only a signal handler's exception (Ctrl-C in the
 * main thread, while set_result() ran Python code) is kept: returns -1 with
 * it set, else 0. */
int
ppy__task_materialize(ppy_task *t)
{
    uint32_t s = pp_word_get(&t->state);
    PyObject *fut, *val, *exc, *r = NULL;
    ppy_state *st = t->pool->st;
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
    val = ppy_decode(st, &rd);
    if (val != NULL && t->failed) {
        exc = ppy_rebuild_exception(st, val);
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
        PyErr_Format(ppy_exc(st->TransferError, PyExc_TypeError),
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

/* ---- the Task type ---------------------------------------------------- */

static int
check_task(void *t)
{
    return ppy__check_wait_on_task(t);
}

/* wait(timeout=None) -> bool: True once the task is finished or cancelled,
 * its Future then complete. */
static PyObject *
task_wait(ppy_task *t, PyObject *args)
{
    PyObject *timeout_obj = Py_None;
    int64_t timeout_ns;
    uint64_t start = pp_now_ns();
    long spin = t->pool->spin_ns;
    uint32_t s;

    if (!PyArg_ParseTuple(args, "|O:wait", &timeout_obj) ||
        ppy_timeout_ns(timeout_obj, "timeout", PPY_TIMEOUT_NONE, &timeout_ns) < 0)
        return NULL;
    for (;;) {
        int64_t left;
        int64_t seen;

        s = pp_word_get(&t->state);
        if (s == TASK_DONE || s == TASK_CANCELLED) {
            if (ppy__task_materialize(t) < 0)
                return NULL;
            Py_RETURN_TRUE;
        }
        if ((left = ppy_time_left(start, timeout_ns)) == 0)
            Py_RETURN_FALSE;
        atomic_fetch_add(&t->waiting, 1);
        seen = ppy_wait_word_checked(&t->state, s, spin, left, check_task, t);
        atomic_fetch_sub(&t->waiting, 1);
        if (seen < 0)
            return NULL;
        spin = 0;
    }
}

/* try_cancel() -> bool: True if the task will never run. */
static PyObject *
task_try_cancel(ppy_task *t, PyObject *unused)
{
    (void)unused;
    if (pp_word_cas(&t->state, TASK_PENDING, TASK_CANCELLED))
        Py_RETURN_TRUE;
    return PyBool_FromLong(pp_word_get(&t->state) == TASK_CANCELLED);
}

static PyObject *
task_get_running(ppy_task *t, void *c)
{
    (void)c;
    return PyBool_FromLong(pp_word_get(&t->state) == TASK_RUNNING);
}

static int
task_traverse(ppy_task *t, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(t));
    Py_VISIT(t->future);
    return 0;
}

static int
task_clear(ppy_task *t)
{
    Py_CLEAR(t->future);
    return 0;
}

static void
task_dealloc(ppy_task *t)
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

PyType_Spec ppy_task_spec = {
    .name = "pyparallel._pyparallel.Task",
    .basicsize = sizeof(ppy_task),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = task_slots,
};

PyObject *
ppy_pool_task_new(PyObject *pool_obj, PyObject *future, int worker)
{
    ppy_pool *pool = (ppy_pool *)pool_obj;
    ppy_task *t = ppy__task_new(pool, future, FN_PICKLED, TASK_RUNNING);

    if (t == NULL)
        return NULL;
    t->loop_worker = worker;
    Py_INCREF(t);                    /* the pipeline's reference */
    return (PyObject *)t;
}
