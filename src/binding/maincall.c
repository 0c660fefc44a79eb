/* maincall.c -- call_from_main_thread(): a worker runs a call in main.
 *
 * The worker encodes (fn, args, kwargs) into a ppy_maincall and pushes it
 * on the pool's done queue; the completion thread decodes it in the main
 * interpreter, calls it, and -- when the worker waits -- encodes the result
 * or the packed exception back and publishes done.
 */
#include "pool_internal.h"

#include <stdlib.h>

/* Runs one call_from_main_thread request.  Main GIL held. */
void
ppy__run_maincall(ppy_pool *pool, ppy_maincall *mc)
{
    ppy_state *st = pool->st;
    pp_reader rd = {mc->in.data, mc->in.data + mc->in.len};
    PyObject *call = ppy_decode(st, &rd), *res = NULL, *fn = NULL;

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
    if (res == NULL || ppy_encode(st, res, &mc->out, "the result") < 0) {
        PyObject *exc = PyErr_GetRaisedException(), *packed = NULL, *pack;
        mc->failed = 1;
        mc->out.len = 0;
        pack = st->errors_module
            ? PyObject_GetAttrString(st->errors_module, "pack_exception") : NULL;
        if (pack)
            packed = PyObject_CallOneArg(pack, exc);
        if (packed == NULL || ppy_encode(st, packed, &mc->out, "exception") < 0) {
            PyErr_Clear();
            mc->out.len = 0;
            Py_XDECREF(packed);
            packed = Py_BuildValue("(Osss)", Py_None, "RuntimeError",
                                   "the main-thread call failed and its "
                                   "exception could not be sent back", "");
            if (packed == NULL || ppy_encode(st, packed, &mc->out, "exception") < 0)
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

PyObject *
ppy_call_from_main(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames, int wait)
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
    pp_word_init(&mc->done, 0);
    if (ppy_encode(st, call, &mc->in, "call_from_main_thread()") < 0) {
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
