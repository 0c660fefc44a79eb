/* wait.c -- blocking waits in the binding that let Ctrl-C through.
 *
 * Every wait on another thread releases the GIL and sleeps on a pp_word in
 * slices, running signal handlers between them, so that Ctrl-C reaches a
 * main thread blocked in pyparallel.
 */
#include "ppy_binding.h"
#include "pp_sync.h"

#include <math.h>

/* Waits give Ctrl-C a chance this often. */
#define SIGNAL_SLICE_NS 50000000L

/* Waits on a word while it holds expected, with the GIL released, in slices
 * that let signal handlers run.  timeout_ns < 0: no limit.  Returns the
 * value seen, or -1 with an exception set (KeyboardInterrupt). */
int64_t
ppy_wait_word(pp_word *w, uint32_t expected, long spin_ns, long timeout_ns)
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

/* 2**63 as a double: the first value that does not fit an int64_t. */
#define TWO_POW_63 9223372036854775808.0
#define NS_PER_S 1000000000LL

int
ppy_timeout_ns(PyObject *obj, const char *name, int flags, int64_t *out)
{
    const char *none = (flags & PPY_TIMEOUT_NONE) ? " or None" : "";
    int64_t forever = (flags & PPY_TIMEOUT_CLAMP) ? INT64_MAX : -1;
    PyNumberMethods *nb = Py_TYPE(obj)->tp_as_number;
    double d;

    if (obj == Py_None && (flags & PPY_TIMEOUT_NONE)) {
        *out = forever;
        return 0;
    }
    if (PyLong_Check(obj)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);

        if (v == -1 && PyErr_Occurred())
            return -1;
        if (overflow < 0 || (overflow == 0 && v < 0))
            goto negative;
        *out = (overflow > 0 || v > INT64_MAX / NS_PER_S) ? forever
                                                          : v * NS_PER_S;
        return 0;
    }
    if (!PyFloat_Check(obj) &&
        (nb == NULL || (nb->nb_float == NULL && nb->nb_index == NULL))) {
        PyErr_Format(PyExc_TypeError, "%s must be a number of seconds%s, not "
                     "%.100s", name, none, Py_TYPE(obj)->tp_name);
        return -1;
    }
    d = PyFloat_AsDouble(obj);
    if (d == -1.0 && PyErr_Occurred())
        return -1;
    if (isnan(d) || d < 0)
        goto negative;
    d = ceil(d * 1e9);           /* inf stays inf */
    *out = d >= TWO_POW_63 ? forever : (int64_t)d;
    return 0;
negative:
    PyErr_Format(PyExc_ValueError, "%s must be a non-negative number of "
                 "seconds%s, not %R", name, none, obj);
    return -1;
}
