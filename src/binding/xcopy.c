/* xcopy.c -- the value codec that carries arguments and results between
 * interpreters.
 *
 * An object belongs to the interpreter whose allocator made it, so values
 * cross as bytes: the sender encodes into a malloc'd pp_buf, the receiver
 * builds its own objects from them.  Builtin values are encoded here in C;
 * frozen objects (which belong to nobody and never change) travel as their
 * address; anything else goes through the sender's pickle and the
 * receiver's unpickle.
 *
 * Format: one tag byte per value, then its payload.  Lengths and counts are
 * unsigned LEB128 varints; fixed-width numbers are in native byte order
 * (both ends are the same process).
 */
#include "ppy_binding.h"

#include <string.h>

enum {
    T_NONE = 'N', T_TRUE = 'T', T_FALSE = 'F',
    T_INT = 'i',          /* int64 */
    T_BIGINT = 'I',       /* varint n, n bytes of "0x.." / "-0x.." text */
    T_FLOAT = 'f', T_COMPLEX = 'c',
    T_ASCII = 'a',        /* varint n, n bytes */
    T_STR = 'u',          /* kind byte, varint length, length*kind bytes */
    T_BYTES = 'b', T_BYTEARRAY = 'B',
    T_TUPLE = 't', T_LIST = 'l', T_DICT = 'd', T_SET = 's', T_FROZENSET = 'z',
    T_FROZEN = 'P',       /* the address of a frozen object */
    T_PICKLE = 'p',       /* varint n, n bytes of pickle */
};

static int
put_varint(pp_buf *b, uint64_t v)
{
    unsigned char tmp[10];
    size_t n = 0;

    do {
        tmp[n] = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v)
            tmp[n] |= 0x80;
        n++;
    } while (v);
    return pp_buf_put(b, tmp, n);
}

static int
get_varint(pp_reader *r, uint64_t *out)
{
    uint64_t v = 0;
    unsigned shift = 0;
    unsigned char c;

    do {
        if (r->p >= r->end || shift > 63)
            return -1;
        c = *r->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        shift += 7;
    } while (c & 0x80);
    *out = v;
    return 0;
}

static int
put_tagged_bytes(pp_buf *b, int tag, const void *p, size_t n)
{
    if (pp_buf_put_u8(b, (uint8_t)tag) < 0 || put_varint(b, n) < 0 ||
        pp_buf_put(b, p, n) < 0)
        return -1;
    return 0;
}

static int
load_pickle(ppy_state *st)
{
    PyObject *mod;

    if (st->pickle_dumps)
        return 0;
    if ((mod = PyImport_ImportModule("pickle")) == NULL)
        return -1;
    st->pickle_dumps = PyObject_GetAttrString(mod, "dumps");
    /* pyparallel._errors.loads knows how values from workers are named. */
    st->pickle_loads = PyObject_GetAttrString(
        st->errors_module ? st->errors_module : mod, "loads");
    st->pickle_protocol = PyObject_GetAttrString(mod, "HIGHEST_PROTOCOL");
    Py_DECREF(mod);
    if (!st->pickle_dumps || !st->pickle_loads || !st->pickle_protocol) {
        Py_CLEAR(st->pickle_dumps);
        Py_CLEAR(st->pickle_loads);
        Py_CLEAR(st->pickle_protocol);
        return -1;
    }
    return 0;
}

typedef struct {
    ppy_state *st;
    pp_buf *out;
    ppy_path path;
} enc_ctx;

static int enc(enc_ctx *c, PyObject *o, int depth);

static int
no_memory(void)
{
    PyErr_NoMemory();
    return -1;
}

static int
enc_pickle(enc_ctx *c, PyObject *o)
{
    PyObject *data, *exc;
    int rc;

    if (load_pickle(c->st) < 0)
        return -1;
    data = PyObject_CallFunctionObjArgs(c->st->pickle_dumps, o,
                                        c->st->pickle_protocol, NULL);
    if (data == NULL) {
        exc = PyErr_GetRaisedException();
        PyErr_Format(ppy_exc(c->st->TransferError, PyExc_TypeError),
                     "cannot send an instance of %s to another interpreter: "
                     "pyparallel copies builtin values and passes frozen "
                     "ones by pointer; anything else must pickle, and this "
                     "does not (%s: %S). Pass plain data, or freeze() it",
                     Py_TYPE(o)->tp_name, exc ? Py_TYPE(exc)->tp_name : "?", exc);
        Py_XDECREF(exc);
        return -1;
    }
    rc = put_tagged_bytes(c->out, T_PICKLE, PyBytes_AS_STRING(data),
                          (size_t)PyBytes_GET_SIZE(data));
    Py_DECREF(data);
    return rc < 0 ? no_memory() : 0;
}

static int
enc_items(enc_ctx *c, int tag, PyObject *o, int depth)
{
    Py_ssize_t i, n = Py_SIZE(o);

    if (pp_buf_put_u8(c->out, (uint8_t)tag) < 0 || put_varint(c->out, (uint64_t)n) < 0)
        return no_memory();
    for (i = 0; i < n; i++) {
        PyObject *item;
        int rc;

        /* A list may change under us if pickling an item runs Python. */
        if (tag == T_LIST && i >= PyList_GET_SIZE(o)) {
            PyErr_SetString(PyExc_RuntimeError,
                            "list changed size while it was being sent");
            return -1;
        }
        item = Py_NewRef(tag == T_LIST ? PyList_GET_ITEM(o, i)
                                       : PyTuple_GET_ITEM(o, i));
        rc = enc(c, item, depth + 1);
        Py_DECREF(item);
        if (rc < 0) {
            PyObject *idx = PyLong_FromSsize_t(i);
            if (idx) {
                ppy_path_push(&c->path, '[', idx);
                Py_DECREF(idx);
            }
            return -1;
        }
    }
    return 0;
}

static int
enc_dict(enc_ctx *c, PyObject *o, int depth)
{
    PyObject *items = PyDict_Items(o);
    Py_ssize_t i, n;

    /* Encode from a snapshot: pickling a value may run Python code. */
    if (items == NULL)
        return -1;
    n = PyList_GET_SIZE(items);
    if (pp_buf_put_u8(c->out, T_DICT) < 0 || put_varint(c->out, (uint64_t)n) < 0) {
        Py_DECREF(items);
        return no_memory();
    }
    for (i = 0; i < n; i++) {
        PyObject *kv = PyList_GET_ITEM(items, i);
        if (enc(c, PyTuple_GET_ITEM(kv, 0), depth + 1) < 0 ||
            enc(c, PyTuple_GET_ITEM(kv, 1), depth + 1) < 0) {
            ppy_path_push(&c->path, '[', PyTuple_GET_ITEM(kv, 0));
            Py_DECREF(items);
            return -1;
        }
    }
    Py_DECREF(items);
    return 0;
}

static int
enc(enc_ctx *c, PyObject *o, int depth)
{
    PyTypeObject *t = Py_TYPE(o);
    pp_buf *b = c->out;

    if (ppy_is_frozen(o)) {
        if (pp_buf_put_u8(b, T_FROZEN) < 0 || pp_buf_put(b, &o, sizeof o) < 0)
            return no_memory();
        return 0;
    }
    if (o == Py_None)
        return pp_buf_put_u8(b, T_NONE) < 0 ? no_memory() : 0;
    if (o == Py_True)
        return pp_buf_put_u8(b, T_TRUE) < 0 ? no_memory() : 0;
    if (o == Py_False)
        return pp_buf_put_u8(b, T_FALSE) < 0 ? no_memory() : 0;
    if (depth > PPY_MAX_DEPTH) {
        PyErr_Format(ppy_exc(c->st->TransferError, PyExc_TypeError),
                     "value is nested more than %d levels deep (or contains "
                     "a reference cycle)", PPY_MAX_DEPTH);
        return -1;
    }
    if (t == &PyLong_Type) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (!overflow) {
            int64_t v64 = v;
            if (pp_buf_put_u8(b, T_INT) < 0 || pp_buf_put(b, &v64, 8) < 0)
                return no_memory();
            return 0;
        } else {
            PyObject *hex = PyNumber_ToBase(o, 16);
            Py_ssize_t n;
            const char *s;
            int rc;
            if (hex == NULL)
                return -1;
            s = PyUnicode_AsUTF8AndSize(hex, &n);
            rc = s ? put_tagged_bytes(b, T_BIGINT, s, (size_t)n) : -1;
            Py_DECREF(hex);
            if (s == NULL)
                return -1;
            return rc < 0 ? no_memory() : 0;
        }
    }
    if (t == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(o);
        if (pp_buf_put_u8(b, T_FLOAT) < 0 || pp_buf_put(b, &d, sizeof d) < 0)
            return no_memory();
        return 0;
    }
    if (t == &PyComplex_Type) {
        Py_complex z = ((PyComplexObject *)o)->cval;
        if (pp_buf_put_u8(b, T_COMPLEX) < 0 || pp_buf_put(b, &z, sizeof z) < 0)
            return no_memory();
        return 0;
    }
    if (t == &PyUnicode_Type) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(o);
        int kind = PyUnicode_KIND(o);
        if (PyUnicode_IS_ASCII(o))
            return put_tagged_bytes(b, T_ASCII, PyUnicode_DATA(o), (size_t)n) < 0
                ? no_memory() : 0;
        if (pp_buf_put_u8(b, T_STR) < 0 || pp_buf_put_u8(b, (uint8_t)kind) < 0 ||
            put_varint(b, (uint64_t)n) < 0 ||
            pp_buf_put(b, PyUnicode_DATA(o), (size_t)n * (size_t)kind) < 0)
            return no_memory();
        return 0;
    }
    if (t == &PyBytes_Type)
        return put_tagged_bytes(b, T_BYTES, PyBytes_AS_STRING(o),
                                (size_t)PyBytes_GET_SIZE(o)) < 0 ? no_memory() : 0;
    if (t == &PyByteArray_Type)
        return put_tagged_bytes(b, T_BYTEARRAY, PyByteArray_AS_STRING(o),
                                (size_t)PyByteArray_GET_SIZE(o)) < 0 ? no_memory() : 0;
    if (t == &PyTuple_Type)
        return enc_items(c, T_TUPLE, o, depth);
    if (t == &PyList_Type)
        return enc_items(c, T_LIST, o, depth);
    if (t == &PyDict_Type)
        return enc_dict(c, o, depth);
    if (t == &PySet_Type || t == &PyFrozenSet_Type) {
        /* A set travels as its items, tagged as a set. */
        PyObject *items = PySequence_Tuple(o);
        size_t at = b->len;
        int rc;
        if (items == NULL)
            return -1;
        rc = enc_items(c, T_TUPLE, items, depth);
        Py_DECREF(items);
        if (rc == 0)
            b->data[at] = (unsigned char)(t == &PySet_Type ? T_SET : T_FROZENSET);
        return rc;
    }
    return enc_pickle(c, o);
}

int
ppy_encode(ppy_state *st, PyObject *obj, pp_buf *out, const char *root)
{
    enc_ctx c = {st, out, {NULL}};
    int rc = enc(&c, obj, 0);

    if (rc < 0)
        ppy_path_reraise(&c.path, root, ppy_exc(st->TransferError, PyExc_TypeError));
    ppy_path_clear(&c.path);
    return rc;
}

/* ---- decoding --------------------------------------------------------- */

static PyObject *
corrupt(void)
{
    PyErr_SetString(PyExc_SystemError,
                    "pyparallel: corrupt value stream between interpreters");
    return NULL;
}

static PyObject *
dec_items(ppy_state *st, pp_reader *r, int tag)
{
    uint64_t n;
    Py_ssize_t i;
    PyObject *res, *item;

    if (get_varint(r, &n) < 0 || n > (uint64_t)(r->end - r->p))
        return corrupt();
    if (tag == T_TUPLE || tag == T_SET || tag == T_FROZENSET) {
        if ((res = PyTuple_New((Py_ssize_t)n)) == NULL)
            return NULL;
        for (i = 0; i < (Py_ssize_t)n; i++) {
            if ((item = ppy_decode(st, r)) == NULL) {
                Py_DECREF(res);
                return NULL;
            }
            PyTuple_SET_ITEM(res, i, item);
        }
        if (tag == T_SET)
            Py_SETREF(res, PySet_New(res));
        else if (tag == T_FROZENSET)
            Py_SETREF(res, PyFrozenSet_New(res));
        return res;
    }
    if ((res = PyList_New((Py_ssize_t)n)) == NULL)
        return NULL;
    for (i = 0; i < (Py_ssize_t)n; i++) {
        if ((item = ppy_decode(st, r)) == NULL) {
            Py_DECREF(res);
            return NULL;
        }
        PyList_SET_ITEM(res, i, item);
    }
    return res;
}

static PyObject *
dec_dict(ppy_state *st, pp_reader *r)
{
    uint64_t n, i;
    PyObject *res, *k, *v;

    if (get_varint(r, &n) < 0 || n > (uint64_t)(r->end - r->p))
        return corrupt();
    if ((res = _PyDict_NewPresized((Py_ssize_t)n)) == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        k = ppy_decode(st, r);
        v = k ? ppy_decode(st, r) : NULL;
        if (v == NULL || PyDict_SetItem(res, k, v) < 0) {
            Py_XDECREF(k);
            Py_XDECREF(v);
            Py_DECREF(res);
            return NULL;
        }
        Py_DECREF(k);
        Py_DECREF(v);
    }
    return res;
}

PyObject *
ppy_decode(ppy_state *st, pp_reader *r)
{
    unsigned char tag;
    uint64_t n;
    const unsigned char *p;

    if (pp_read(r, &tag, 1) < 0)
        return corrupt();
    switch (tag) {
    case T_NONE:
        Py_RETURN_NONE;
    case T_TRUE:
        Py_RETURN_TRUE;
    case T_FALSE:
        Py_RETURN_FALSE;
    case T_INT: {
        int64_t v;
        if (pp_read(r, &v, 8) < 0)
            return corrupt();
        return PyLong_FromLongLong(v);
    }
    case T_BIGINT: {
        PyObject *res;
        char *text;
        if (get_varint(r, &n) < 0 || (p = pp_read_view(r, n)) == NULL)
            return corrupt();
        if ((text = PyMem_Malloc(n + 1)) == NULL)
            return PyErr_NoMemory();
        memcpy(text, p, n);
        text[n] = '\0';
        res = PyLong_FromString(text, NULL, 0);
        PyMem_Free(text);
        return res;
    }
    case T_FLOAT: {
        double d;
        if (pp_read(r, &d, sizeof d) < 0)
            return corrupt();
        return PyFloat_FromDouble(d);
    }
    case T_COMPLEX: {
        Py_complex z;
        if (pp_read(r, &z, sizeof z) < 0)
            return corrupt();
        return PyComplex_FromCComplex(z);
    }
    case T_ASCII:
        if (get_varint(r, &n) < 0 || (p = pp_read_view(r, n)) == NULL)
            return corrupt();
        return PyUnicode_DecodeASCII((const char *)p, (Py_ssize_t)n, NULL);
    case T_STR: {
        unsigned char kind;
        if (pp_read(r, &kind, 1) < 0 || (kind != 1 && kind != 2 && kind != 4) ||
            get_varint(r, &n) < 0 || n > (uint64_t)(r->end - r->p) / kind ||
            (p = pp_read_view(r, n * kind)) == NULL)
            return corrupt();
        return PyUnicode_FromKindAndData(kind, p, (Py_ssize_t)n);
    }
    case T_BYTES:
    case T_BYTEARRAY:
        if (get_varint(r, &n) < 0 || (p = pp_read_view(r, n)) == NULL)
            return corrupt();
        if (tag == T_BYTES)
            return PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
        return PyByteArray_FromStringAndSize((const char *)p, (Py_ssize_t)n);
    case T_TUPLE:
    case T_LIST:
    case T_SET:
    case T_FROZENSET:
        return dec_items(st, r, tag);
    case T_DICT:
        return dec_dict(st, r);
    case T_FROZEN: {
        PyObject *o;
        if (pp_read(r, &o, sizeof o) < 0 || !ppy_is_frozen(o))
            return corrupt();
        return Py_NewRef(o);
    }
    case T_PICKLE: {
        PyObject *data, *res;
        if (get_varint(r, &n) < 0 || (p = pp_read_view(r, n)) == NULL)
            return corrupt();
        if (load_pickle(st) < 0)
            return NULL;
        data = PyMemoryView_FromMemory((char *)p, (Py_ssize_t)n, PyBUF_READ);
        if (data == NULL)
            return NULL;
        res = PyObject_CallOneArg(st->pickle_loads, data);
        Py_DECREF(data);
        return res;
    }
    default:
        return corrupt();
    }
}

int
ppy_encode_call(ppy_state *st, PyObject *fn, PyObject *args, PyObject *kwargs,
               pp_buf *out)
{
    Py_ssize_t i, n = PyTuple_GET_SIZE(args), pos = 0;
    PyObject *name, *key, *value;
    const char *qn;
    char root[256];
    int rc = 0;

    name = PyObject_GetAttrString(fn, "__qualname__");
    if (name == NULL) {
        PyErr_Clear();
        name = PyObject_Repr(fn);
        if (name == NULL)
            return -1;
    }
    qn = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : "callable";
    if (qn == NULL) {
        PyErr_Clear();
        qn = "callable";
    }
    if (pp_buf_put_u8(out, T_TUPLE) < 0 || put_varint(out, (uint64_t)n) < 0)
        rc = no_memory();
    for (i = 0; rc == 0 && i < n; i++) {
        snprintf(root, sizeof root, "argument %zd of %.150s()", i, qn);
        rc = ppy_encode(st, PyTuple_GET_ITEM(args, i), out, root);
    }
    if (rc == 0 && (kwargs == NULL || kwargs == Py_None ||
                    PyDict_GET_SIZE(kwargs) == 0)) {
        rc = pp_buf_put_u8(out, T_NONE) < 0 ? no_memory() : 0;
    } else if (rc == 0) {
        if (pp_buf_put_u8(out, T_DICT) < 0 ||
            put_varint(out, (uint64_t)PyDict_GET_SIZE(kwargs)) < 0)
            rc = no_memory();
        while (rc == 0 && PyDict_Next(kwargs, &pos, &key, &value)) {
            const char *k = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : "?";
            if (k == NULL) {
                PyErr_Clear();
                k = "?";
            }
            snprintf(root, sizeof root, "argument %.40s= of %.150s()", k, qn);
            rc = ppy_encode(st, key, out, root);
            if (rc == 0)
                rc = ppy_encode(st, value, out, root);
        }
    }
    Py_DECREF(name);
    return rc;
}
