/* timer.c -- pyparallel.timer(): callables run by a worker's loop on time.
 *
 * The main interpreter's Timer object and the loop thread's ppy_wtimer share
 * a small reference-counted record of counters.  Starting and cancelling
 * are commands; main waits for each, so that timer() reports a callable the
 * worker cannot import, and no call starts after cancel() has returned.
 */
#include "ppy_io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct ppy_timer_shared {
    atomic_int refs;
    atomic_int active;
    atomic_ullong fired;
    atomic_ullong errors;
    struct ppy_wtimer *wt;        /* loop thread only */
} ppy_timer_shared;

static void
tshared_release(ppy_timer_shared *sh)
{
    if (atomic_fetch_sub(&sh->refs, 1) == 1)
        free(sh);
}

typedef struct ppy_wtimer {
    pp_timer timer;
    ppy_lthread *lt;
    ppy_timer_shared *sh;
    PyObject *fn, *args, *kwargs;
    pp_link link;                /* in lt->timers */
} ppy_wtimer;

static void
wtimer_free(ppy_wtimer *wt)
{
    pp_timer_stop(wt->lt->loop, &wt->timer);
    pp_link_remove(&wt->link);
    atomic_store(&wt->sh->active, 0);
    wt->sh->wt = NULL;
    tshared_release(wt->sh);
    Py_CLEAR(wt->fn);
    Py_CLEAR(wt->args);
    Py_CLEAR(wt->kwargs);
    free(wt);
}

static void
wtimer_fire(pp_loop *loop, pp_timer *timer)
{
    ppy_wtimer *wt = timer->data;
    PyObject *r;

    (void)loop;
    atomic_fetch_add(&wt->sh->fired, 1);
    r = PyObject_Call(wt->fn, wt->args, wt->kwargs == Py_None ? NULL : wt->kwargs);
    if (r == NULL) {
        char what[256];
        PyObject *name = PyObject_GetAttrString(wt->fn, "__qualname__");
        const char *s = name && PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
        PyObject *exc = PyErr_GetRaisedException();

        PyErr_Clear();
        snprintf(what, sizeof what, "timer callback %s()", s ? s : "?");
        Py_XDECREF(name);
        atomic_fetch_add(&wt->sh->errors, 1);
        PyErr_SetRaisedException(exc);
        ppy_lthread_log_error(wt->lt, what, NULL);
    }
    Py_XDECREF(r);
    /* A one-shot timer is done; a periodic one was re-armed by the loop. */
    if (wt->timer.period == 0)
        wtimer_free(wt);
}

void
ppy_timer_close_all(ppy_lthread *lt)
{
    while (!pp_link_empty(&lt->timers))
        wtimer_free(pp_container_of(lt->timers.next, ppy_wtimer, link));
}

typedef struct {
    ppy_cmd base;
    ppy_timer_shared *sh;
    int64_t fn_id;               /* -2: the callable is pickled in `in` */
    pp_buf in;
    uint64_t delay_ns, period_ns;
} start_cmd;

static void
start_free(ppy_cmd *cmd)
{
    pp_buf_free(&((start_cmd *)cmd)->in);
    tshared_release(((start_cmd *)cmd)->sh);
    free(cmd);
}

static void
start_proc(ppy_lthread *lt, ppy_cmd *cmd)
{
    start_cmd *sc = (start_cmd *)cmd;
    pp_reader rd = {sc->in.data, sc->in.data + sc->in.len};
    ppy_wtimer *wt = calloc(1, sizeof(*wt));

    if (wt == NULL) {
        cmd->rc = -ENOMEM;
        return;
    }
    wt->lt = lt;
    wt->fn = sc->fn_id >= 0 ? ppy_worker_callable(lt->worker, (uint32_t)sc->fn_id)
                            : ppy_decode(lt->st, &rd);
    if (wt->fn == NULL || (wt->args = ppy_decode(lt->st, &rd)) == NULL ||
        (wt->kwargs = ppy_decode(lt->st, &rd)) == NULL) {
        cmd->error = ppy_exception_text();
        Py_CLEAR(wt->fn);
        Py_CLEAR(wt->args);
        free(wt);
        return;
    }
    if ((cmd->rc = pp_timer_start(lt->loop, &wt->timer, sc->delay_ns,
                                  sc->period_ns, wtimer_fire, wt)) < 0) {
        Py_CLEAR(wt->fn);
        Py_CLEAR(wt->args);
        Py_CLEAR(wt->kwargs);
        free(wt);
        return;
    }
    wt->sh = sc->sh;
    atomic_fetch_add(&wt->sh->refs, 1);
    atomic_store(&wt->sh->active, 1);
    wt->sh->wt = wt;
    pp_link_append(&lt->timers, &wt->link);
}

typedef struct {
    ppy_cmd base;
    ppy_timer_shared *sh;
} cancel_cmd;

static void
cancel_proc(ppy_lthread *lt, ppy_cmd *cmd)
{
    cancel_cmd *cc = (cancel_cmd *)cmd;

    (void)lt;
    if (cc->sh->wt)
        wtimer_free(cc->sh->wt);
}

static void
cancel_free(ppy_cmd *cmd)
{
    tshared_release(((cancel_cmd *)cmd)->sh);
    free(cmd);
}

/* ---- the Timer type (main interpreter) --------------------------------------- */

typedef struct {
    PyObject_HEAD
    ppy_lthread *lt;
    ppy_timer_shared *sh;
    PyObject *pool;
    int worker;
} ppy_timer_obj;

/* Posts a cancel of self's timer (commands run in order, so it also stops
 * one whose start is still queued).  Returns the command, with a reference
 * for the caller, or NULL when the loop thread has gone (it cancelled its
 * timers itself) or memory ran out (with MemoryError set). */
static cancel_cmd *
post_cancel(ppy_timer_obj *self)
{
    cancel_cmd *cc = calloc(1, sizeof(*cc));

    if (cc == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    ppy_cmd_init(&cc->base, cancel_proc);
    cc->base.free = cancel_free;
    cc->sh = self->sh;
    atomic_fetch_add(&self->sh->refs, 1);
    if (ppy_cmd_post(self->lt, &cc->base) < 0) {
        ppy_cmd_release(&cc->base);
        return NULL;
    }
    return cc;
}

/* Timer(pool, worker, delay, period, fn, args, kwargs): delay and period in
 * seconds, period None for a one-shot timer. */
static PyObject *
timer_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"pool", "worker", "delay", "period", "fn", "args",
                             "kwargs", NULL};
    ppy_state *st = PyType_GetModuleState(type);
    PyObject *pool, *fn, *fargs, *fkwargs, *delay_obj, *period_obj;
    int64_t delay_ns, period_ns = 0;
    int worker;
    ppy_timer_obj *self;
    start_cmd *sc;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OiOOOO!O:Timer", kwlist,
                                     &pool, &worker, &delay_obj, &period_obj,
                                     &fn, &PyTuple_Type, &fargs, &fkwargs))
        return NULL;
    /* Huge values clamp to 2**63 - 1 ns: "not before then", never early
     * (the engine's deadlines saturate). */
    if (ppy_timeout_ns(delay_obj, "delay", PPY_TIMEOUT_CLAMP, &delay_ns) < 0)
        return NULL;
    if (period_obj != Py_None) {
        if (ppy_timeout_ns(period_obj, "period",
                           PPY_TIMEOUT_NONE | PPY_TIMEOUT_CLAMP, &period_ns) < 0)
            return NULL;
        if (period_ns == 0) {
            PyErr_Format(PyExc_ValueError, "period must be a positive number "
                         "of seconds or None, not %R", period_obj);
            return NULL;
        }
    }
    self = (ppy_timer_obj *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->pool = Py_NewRef(pool);
    self->worker = worker;
    if ((self->lt = ppy_pool_lthread(pool, worker)) == NULL)
        goto fail;
    if ((self->sh = calloc(1, sizeof(*self->sh))) == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    atomic_init(&self->sh->refs, 1);    /* ours */
    if ((sc = calloc(1, sizeof(*sc))) == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    atomic_fetch_add(&self->sh->refs, 1);   /* the start command's */
    ppy_cmd_init(&sc->base, start_proc);
    sc->base.free = start_free;
    sc->sh = self->sh;
    sc->delay_ns = (uint64_t)delay_ns;
    sc->period_ns = (uint64_t)period_ns;
    if ((sc->fn_id = ppy_pool_fn_id(pool, fn)) == -1 ||
        (sc->fn_id == -2 && ppy_encode(st, fn, &sc->in, "the callable") < 0) ||
        ppy_encode_call(st, fn, fargs, fkwargs, &sc->in) < 0) {
        ppy_cmd_release(&sc->base);
        goto fail;
    }
    if (ppy_cmd_call(self->lt, &sc->base) < 0) {
        /* Not waited for (Ctrl-C, or a wait that could never end): the
         * start may still run, so a cancel goes after it. */
        if (pp_word_get(&sc->base.done) == 0) {
            PyObject *exc = PyErr_GetRaisedException();
            cancel_cmd *cc = post_cancel(self);
            if (cc)
                ppy_cmd_release(&cc->base);
            PyErr_Clear();
            PyErr_SetRaisedException(exc);
        }
        ppy_cmd_release(&sc->base);
        goto fail;
    }
    if (sc->base.error) {
        PyErr_Format(PyExc_RuntimeError,
                     "worker %d could not set up the timer's call:\n%s",
                     worker, sc->base.error);
        ppy_cmd_release(&sc->base);
        goto fail;
    }
    if (sc->base.rc < 0) {
        errno = -sc->base.rc;
        PyErr_SetFromErrno(PyExc_OSError);
        ppy_cmd_release(&sc->base);
        goto fail;
    }
    ppy_cmd_release(&sc->base);
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static PyObject *
timer_cancel(ppy_timer_obj *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout = Py_None;
    int64_t timeout_ns;
    cancel_cmd *cc;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:cancel", kwlist, &timeout) ||
        ppy_timeout_ns(timeout, "timeout", PPY_TIMEOUT_NONE, &timeout_ns) < 0)
        return NULL;
    if (self->sh == NULL || !atomic_load(&self->sh->active))
        Py_RETURN_NONE;
    if ((cc = post_cancel(self)) == NULL) {
        /* A loop thread already gone has cancelled every timer itself. */
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    rc = ppy_cmd_wait_for(&cc->base, timeout_ns, "Timer.cancel()");
    ppy_cmd_release(&cc->base);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
timer_get_active(ppy_timer_obj *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->sh && atomic_load(&self->sh->active));
}

static PyObject *
timer_get_fired(ppy_timer_obj *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->sh ? atomic_load(&self->sh->fired) : 0);
}

static PyObject *
timer_get_errors(ppy_timer_obj *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->sh ? atomic_load(&self->sh->errors) : 0);
}

static PyObject *
timer_get_worker(ppy_timer_obj *self, void *c)
{
    (void)c;
    return PyLong_FromLong(self->worker);
}

static int
timer_traverse(ppy_timer_obj *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->pool);
    return 0;
}

static void
timer_dealloc(ppy_timer_obj *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    /* A timer keeps running when its object is dropped (like a thread);
     * the loop thread holds its own reference to the record. */
    PyObject_GC_UnTrack(self);
    if (self->sh)
        tshared_release(self->sh);
    Py_CLEAR(self->pool);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef timer_methods[] = {
    {"cancel", (PyCFunction)(void (*)(void))timer_cancel, METH_VARARGS | METH_KEYWORDS,
     "cancel(timeout=None): no call starts after this returns; TimeoutError "
     "if the worker's loop does not answer within timeout seconds (the "
     "cancel still happens later)"},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef timer_getset[] = {
    {"active", (getter)timer_get_active, NULL,
     "not yet fired (one-shot) and not cancelled", NULL},
    {"fired", (getter)timer_get_fired, NULL, "calls made so far", NULL},
    {"errors", (getter)timer_get_errors, NULL, "calls that raised", NULL},
    {"worker", (getter)timer_get_worker, NULL, "the worker that runs it", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot timer_slots[] = {
    {Py_tp_new, timer_new},
    {Py_tp_dealloc, timer_dealloc},
    {Py_tp_traverse, timer_traverse},
    {Py_tp_methods, timer_methods},
    {Py_tp_getset, timer_getset},
    {Py_tp_doc, "A callable run by a worker's loop on time (internal; use "
                "pyparallel.timer())."},
    {0, NULL}
};

PyType_Spec ppy_timer_spec = {
    .name = "pyparallel._pyparallel.Timer",
    .basicsize = sizeof(ppy_timer_obj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = timer_slots,
};
