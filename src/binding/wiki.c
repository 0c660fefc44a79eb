/* wiki.c -- the wiki index (src/engine/pp_wiki.h) for Python: a builder
 * the main interpreter feeds a dump through, and lookups any interpreter
 * runs on the finished image.
 *
 * The image is one bytes object.  The main interpreter checks it once
 * (wiki_open: every offset and the order, O(n)) and records its address in
 * a process-wide table; a lookup, in any interpreter, finds the bytes in
 * that table in a few compares and reads the image by pointer.  Bytes that
 * were never checked are refused, so a lookup never trusts unchecked
 * offsets.  The table holds a reference to each image; a frozen one (the
 * one workers read) stays open for good, an unfrozen one in main until
 * wiki_close().
 *
 *   WikiBuilder()                  .feed(buf, eof=False) -> bytes consumed
 *                                  .finish(dump_size, dump_mtime_ns,
 *                                          source_size, source_mtime_ns)
 *                                  -> the image (bytes)
 *   wiki_open(image)               check and record it (main interpreter)
 *   wiki_close(image)              forget an unfrozen one (main interpreter)
 *   wiki_find(image, title)        entry index or -1
 *   wiki_page(image, i)            (title, start, length, redirect or -1)
 *   wiki_offsets(image, prefix, limit)  ([[title, start, end], ...], total)
 *   wiki_search(image, q, limit)   ([title, ...], total), case-insensitive
 *   wiki_info(image)               {"titles": ..., "bytes": ..., ...}
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdatomic.h>

#include "pp_buf.h"
#include "pp_wiki.h"
#include "ppy_binding.h"

/* ---- folding: str.lower() for titles that are not ASCII ------------------ */

static long
fold_title(void *arg, const char *s, size_t n, char *out, size_t cap)
{
    size_t i;
    PyObject *u, *low;
    const char *f;
    Py_ssize_t fl;

    (void)arg;
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            break;
    if (i == n)
        return pp_wiki_fold_ascii(NULL, s, n, out, cap);
    u = PyUnicode_DecodeUTF8(s, (Py_ssize_t)n, "surrogateescape");
    low = u ? PyObject_CallMethod(u, "lower", NULL) : NULL;
    Py_XDECREF(u);
    f = low ? PyUnicode_AsUTF8AndSize(low, &fl) : NULL;
    if (f == NULL || (size_t)fl > cap) {
        Py_XDECREF(low);
        PyErr_Clear();                  /* undecodable: fold the bytes */
        return pp_wiki_fold_ascii(NULL, s, n, out, cap);
    }
    memcpy(out, f, (size_t)fl);
    Py_DECREF(low);
    return (long)fl;
}

/* ---- the builder ------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    pp_wiki_builder *b;
    pp_wiki_scanner sc;
    int done;
} wiki_builder;

static PyObject *
builder_new(PyTypeObject *tp, PyObject *args, PyObject *kwargs)
{
    wiki_builder *self;

    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "WikiBuilder() takes no arguments");
        return NULL;
    }
    self = (wiki_builder *)tp->tp_alloc(tp, 0);
    if (self == NULL)
        return NULL;
    self->b = pp_wiki_builder_new();
    if (self->b == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    pp_wiki_scanner_init(&self->sc, pp_wiki_builder_add, self->b);
    return (PyObject *)self;
}

static void
builder_dealloc(wiki_builder *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    pp_wiki_builder_free(self->b);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *
scan_error(wiki_builder *self)
{
    const char *why = pp_wiki_builder_error(self->b);

    self->done = 1;
    PyErr_Format(PyExc_ValueError, "%s", why[0] ? why : self->sc.err);
    return NULL;
}

static PyObject *
builder_feed(wiki_builder *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"data", "eof", NULL};
    Py_buffer view;
    int eof = 0;
    size_t used;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*|p:feed", kw, &view, &eof))
        return NULL;
    if (self->done) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "this WikiBuilder has finished or failed");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    used = pp_wiki_scan(&self->sc, view.buf, (size_t)view.len, eof);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (used == (size_t)-1)
        return scan_error(self);
    return PyLong_FromSize_t(used);
}

static PyObject *
builder_finish(wiki_builder *self, PyObject *args)
{
    pp_wiki_header h;
    unsigned long long ds, dm, ss, sm;
    char err[256];
    size_t size;
    void *img;
    PyObject *out;

    if (!PyArg_ParseTuple(args, "KKKK:finish", &ds, &dm, &ss, &sm))
        return NULL;
    if (self->done) {
        PyErr_SetString(PyExc_ValueError, "this WikiBuilder has finished or failed");
        return NULL;
    }
    self->done = 1;
    memset(&h, 0, sizeof h);
    h.dump_size = ds;
    h.dump_mtime_ns = dm;
    h.source_size = ss;
    h.source_mtime_ns = sm;
    img = pp_wiki_builder_finish(self->b, &h, fold_title, NULL, &size, err, sizeof err);
    if (img == NULL) {
        PyErr_Format(PyExc_ValueError, "%s", err);
        return NULL;
    }
    out = PyBytes_FromStringAndSize(img, (Py_ssize_t)size);
    free(img);
    return out;
}

static PyObject *
builder_get_pages(wiki_builder *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->sc.pages);
}

static PyObject *
builder_get_pos(wiki_builder *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->sc.pos);
}

/* ---- fragments: a worker scans its piece of a multistream dump ---------- */

/* A page as a worker hands it to main: this header, then the title, then
 * the redirect target (redirect_len UINT32_MAX: none). */
typedef struct {
    uint64_t start, length;
    uint32_t title_len, redirect_len;
} packed_page;

static int
pack_page(void *arg, const pp_wiki_page *p)
{
    pp_buf *out = arg;
    packed_page h;

    h.start = p->start;
    h.length = p->length;
    h.title_len = (uint32_t)p->title_len;
    h.redirect_len = p->redirect ? (uint32_t)p->redirect_len : UINT32_MAX;
    if (pp_buf_put(out, &h, sizeof h) < 0 || pp_buf_put(out, p->title, p->title_len) < 0 ||
        (p->redirect && pp_buf_put(out, p->redirect, p->redirect_len) < 0))
        return -1;
    return 0;
}

static PyObject *
wiki_scan_fragment(PyObject *module, PyObject *obj)
{
    Py_buffer view;
    pp_wiki_scanner sc;
    pp_buf out = PP_BUF_INIT;
    size_t head, tail;
    int rc;
    PyObject *res;

    (void)module;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    pp_wiki_scanner_init(&sc, pack_page, &out);
    Py_BEGIN_ALLOW_THREADS
    rc = pp_wiki_scan_fragment(&sc, view.buf, (size_t)view.len, &head, &tail);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (rc < 0) {
        pp_buf_free(&out);
        PyErr_SetString(PyExc_ValueError, sc.err[0] ? sc.err : "out of memory");
        return NULL;
    }
    res = Py_BuildValue("(y#nn)", out.data ? (const char *)out.data : "", (Py_ssize_t)out.len,
                        (Py_ssize_t)head, (Py_ssize_t)tail);
    pp_buf_free(&out);
    return res;
}

static PyObject *
builder_add_pages(wiki_builder *self, PyObject *args)
{
    Py_buffer view;
    unsigned long long base;
    const char *p, *end;
    int bad = 0;

    if (!PyArg_ParseTuple(args, "y*K:add_pages", &view, &base))
        return NULL;
    if (self->done) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "this WikiBuilder has finished or failed");
        return NULL;
    }
    p = view.buf;
    end = p + view.len;
    while (p < end && !bad) {
        packed_page h;
        pp_wiki_page page;
        size_t rlen;
        if ((size_t)(end - p) < sizeof h) {
            bad = 1;
            break;
        }
        memcpy(&h, p, sizeof h);
        p += sizeof h;
        rlen = h.redirect_len == UINT32_MAX ? 0 : h.redirect_len;
        if (h.title_len > PP_WIKI_TITLE_MAX || rlen > PP_WIKI_TITLE_MAX ||
            (size_t)(end - p) < h.title_len + rlen) {
            bad = 1;
            break;
        }
        page.start = base + h.start;
        page.length = h.length;
        page.title = p;
        page.title_len = h.title_len;
        page.redirect = h.redirect_len == UINT32_MAX ? NULL : p + h.title_len;
        page.redirect_len = rlen;
        p += h.title_len + rlen;
        if (pp_wiki_builder_add(self->b, &page) < 0) {
            PyBuffer_Release(&view);
            return scan_error(self);
        }
        self->sc.pages++;
    }
    PyBuffer_Release(&view);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "add_pages: not pages packed by wiki_scan_fragment()");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
builder_skip(wiki_builder *self, PyObject *arg)
{
    unsigned long long to = PyLong_AsUnsignedLongLong(arg);

    if (to == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (self->done) {
        PyErr_SetString(PyExc_ValueError, "this WikiBuilder has finished or failed");
        return NULL;
    }
    if (pp_wiki_scan_skip(&self->sc, to) < 0)
        return scan_error(self);
    Py_RETURN_NONE;
}

static PyMethodDef builder_methods[] = {
    {"add_pages", (PyCFunction)builder_add_pages, METH_VARARGS,
     "add_pages(packed, base)\n--\n\nAdd the pages a worker's wiki_scan_fragment() "
     "found, at dump offset base + their own."},
    {"skip", (PyCFunction)builder_skip, METH_O,
     "skip(pos)\n--\n\nMove the scan, between pages, to dump offset pos (the "
     "bytes before it were scanned by a worker)."},
    {"feed", (PyCFunction)(void (*)(void))builder_feed, METH_VARARGS | METH_KEYWORDS,
     "feed(data, eof=False)\n--\n\nScan the dump's next bytes; returns how many "
     "were consumed (pass the rest again, with more).  ValueError names the "
     "byte offset of a malformed or truncated dump."},
    {"finish", (PyCFunction)builder_finish, METH_VARARGS,
     "finish(dump_size, dump_mtime_ns, source_size, source_mtime_ns)\n--\n\n"
     "The index image, as bytes."},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef builder_getset[] = {
    {"pages", (getter)builder_get_pages, NULL, "pages scanned so far", NULL},
    {"pos", (getter)builder_get_pos, NULL, "dump bytes consumed so far", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot builder_slots[] = {
    {Py_tp_new, builder_new},
    {Py_tp_dealloc, builder_dealloc},
    {Py_tp_methods, builder_methods},
    {Py_tp_getset, builder_getset},
    {Py_tp_doc, "WikiBuilder()\n--\n\nScans a MediaWiki XML export and builds its index."},
    {0, NULL}
};

PyType_Spec ppy_wiki_builder_spec = {
    .name = "pyparallel._pyparallel.WikiBuilder",
    .basicsize = sizeof(wiki_builder),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = builder_slots,
};

/* ---- checked images ------------------------------------------------------ */

#define MAX_IMAGES 1024

/* A slot is live while data is set; data is published after ix (release)
 * and read before it (acquire).  Frozen images stay for good (workers may
 * read them); the main interpreter's own, unfrozen ones are released with
 * wiki_close(), their slot then reused. */
typedef struct {
    _Atomic(const char *) data;
    size_t len;
    pp_wiki_index ix;
    PyObject *owner;                    /* strong reference (main's) */
} checked;

static checked images[MAX_IMAGES];
static atomic_size_t n_images;          /* slots ever used */
static pthread_mutex_t images_lock = PTHREAD_MUTEX_INITIALIZER;

static checked *
slot_of(PyObject *obj)
{
    size_t i, n = atomic_load_explicit(&n_images, memory_order_acquire);
    const char *data = PyBytes_AS_STRING(obj);

    for (i = 0; i < n; i++)
        if (atomic_load_explicit(&images[i].data, memory_order_acquire) == data &&
            images[i].len == (size_t)PyBytes_GET_SIZE(obj))
            return &images[i];
    return NULL;
}

/* The view of a checked image, or NULL with ValueError/TypeError set. */
static const pp_wiki_index *
index_of(PyObject *obj)
{
    checked *c;

    if (!PyBytes_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "a wiki index is bytes, not %.100s", Py_TYPE(obj)->tp_name);
        return NULL;
    }
    if ((c = slot_of(obj)) != NULL)
        return &c->ix;
    PyErr_SetString(PyExc_ValueError,
                    "these bytes are not an open wiki index: pass them to "
                    "wiki_open() in the main interpreter first");
    return NULL;
}

static int
in_main(const char *what)
{
    if (PyInterpreterState_Get() == PyInterpreterState_Main())
        return 1;
    PyErr_Format(PyExc_RuntimeError, "%s runs in the main interpreter; workers "
                 "read an index it opened", what);
    return 0;
}

static PyObject *
wiki_open(PyObject *module, PyObject *obj)
{
    pp_wiki_index ix;
    char err[256];
    size_t i, n;

    (void)module;
    if (!PyBytes_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "a wiki index is bytes, not %.100s", Py_TYPE(obj)->tp_name);
        return NULL;
    }
    if (slot_of(obj) != NULL)
        Py_RETURN_NONE;
    if (!in_main("wiki_open()"))
        return NULL;
    if (pp_wiki_index_open(&ix, PyBytes_AS_STRING(obj), (size_t)PyBytes_GET_SIZE(obj),
                           err, sizeof err) < 0) {
        PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    pthread_mutex_lock(&images_lock);
    n = atomic_load_explicit(&n_images, memory_order_relaxed);
    for (i = 0; i < n; i++)
        if (atomic_load_explicit(&images[i].data, memory_order_relaxed) == NULL)
            break;
    if (i == MAX_IMAGES) {
        pthread_mutex_unlock(&images_lock);
        PyErr_SetString(PyExc_RuntimeError, "more than 1024 wiki indexes open in one "
                        "process: wiki_close() the ones no longer used");
        return NULL;
    }
    images[i].owner = Py_NewRef(obj);
    images[i].len = (size_t)PyBytes_GET_SIZE(obj);
    images[i].ix = ix;
    atomic_store_explicit(&images[i].data, PyBytes_AS_STRING(obj), memory_order_release);
    if (i == n)
        atomic_store_explicit(&n_images, n + 1, memory_order_release);
    pthread_mutex_unlock(&images_lock);
    Py_RETURN_NONE;
}

static PyObject *
wiki_close(PyObject *module, PyObject *obj)
{
    checked *c;
    PyObject *owner;

    (void)module;
    if (index_of(obj) == NULL || !in_main("wiki_close()"))
        return NULL;
    if (ppy_is_shareable(obj)) {
        PyErr_SetString(PyExc_ValueError, "a frozen wiki index stays open: workers may "
                        "be reading it");
        return NULL;
    }
    pthread_mutex_lock(&images_lock);
    c = slot_of(obj);
    owner = c ? c->owner : NULL;
    if (c) {
        atomic_store_explicit(&c->data, NULL, memory_order_release);
        c->owner = NULL;
    }
    pthread_mutex_unlock(&images_lock);
    Py_XDECREF(owner);
    Py_RETURN_NONE;
}

/* UTF-8 of a str key; *ok = 0 (no error set) when it has no UTF-8 form
 * (lone surrogates: it names no title). */
static const char *
key_of(PyObject *s, Py_ssize_t *len, int *ok)
{
    const char *k;

    *ok = 1;
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError, "a title is str, not %.100s", Py_TYPE(s)->tp_name);
        return NULL;
    }
    k = PyUnicode_AsUTF8AndSize(s, len);
    if (k == NULL && PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        PyErr_Clear();
        *ok = 0;
    }
    return k;
}

static PyObject *
wiki_find(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const pp_wiki_index *ix;
    const char *k;
    Py_ssize_t len;
    int ok;

    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "wiki_find(index, title)");
        return NULL;
    }
    if ((ix = index_of(args[0])) == NULL)
        return NULL;
    k = key_of(args[1], &len, &ok);
    if (k == NULL)
        return ok ? NULL : PyLong_FromLong(-1);
    return PyLong_FromLong(pp_wiki_find(ix, k, (size_t)len));
}

static PyObject *
title_str(const pp_wiki_index *ix, size_t i)
{
    size_t tl;
    const char *t = pp_wiki_title(ix, i, &tl);

    return PyUnicode_DecodeUTF8(t, (Py_ssize_t)tl, "surrogateescape");
}

static PyObject *
wiki_page(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const pp_wiki_index *ix;
    Py_ssize_t i;
    const pp_wiki_entry *e;
    PyObject *t;

    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "wiki_page(index, i)");
        return NULL;
    }
    if ((ix = index_of(args[0])) == NULL)
        return NULL;
    i = PyLong_AsSsize_t(args[1]);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0 || (size_t)i >= ix->n) {
        PyErr_SetString(PyExc_IndexError, "no such entry in the wiki index");
        return NULL;
    }
    e = &ix->entry[i];
    if ((t = title_str(ix, (size_t)i)) == NULL)
        return NULL;
    return Py_BuildValue("(NKIl)", t, (unsigned long long)e->start, e->length,
                         e->redirect == PP_WIKI_NO_REDIRECT ? -1L : (long)e->redirect);
}

static int
limit_of(PyObject *o, size_t *limit)
{
    Py_ssize_t l = PyLong_AsSsize_t(o);

    if (l == -1 && PyErr_Occurred())
        return -1;
    if (l < 0) {
        PyErr_SetString(PyExc_ValueError, "limit must be >= 0");
        return -1;
    }
    *limit = (size_t)l;
    return 0;
}

/* The arguments of wiki_offsets() and wiki_search(): (image, prefix,
 * limit).  *key is NULL (no error) for a prefix with no UTF-8 form, which
 * starts no title.  Returns 0, or -1 with an exception set. */
static int
prefix_args(PyObject *const *args, Py_ssize_t nargs, const char *usage,
            const pp_wiki_index **ix, const char **key, Py_ssize_t *len, size_t *limit)
{
    int ok;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    if ((*ix = index_of(args[0])) == NULL || limit_of(args[2], limit) < 0)
        return -1;
    *key = key_of(args[1], len, &ok);
    return *key == NULL && ok ? -1 : 0;
}

static PyObject *
wiki_offsets(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const pp_wiki_index *ix;
    const char *k;
    Py_ssize_t len;
    size_t lo = 0, hi = 0, limit, i;
    PyObject *list;

    (void)module;
    if (prefix_args(args, nargs, "wiki_offsets(index, prefix, limit)", &ix, &k, &len, &limit) < 0)
        return NULL;
    if (k != NULL)
        pp_wiki_prefix(ix, k, (size_t)len, &lo, &hi);
    if (hi - lo < limit)
        limit = hi - lo;
    if ((list = PyList_New((Py_ssize_t)limit)) == NULL)
        return NULL;
    for (i = 0; i < limit; i++) {
        const pp_wiki_entry *e = &ix->entry[lo + i];
        PyObject *t = title_str(ix, lo + i), *row;
        row = t ? Py_BuildValue("[NKK]", t, (unsigned long long)e->start,
                                (unsigned long long)(e->start + e->length)) : NULL;
        if (row == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, row);
    }
    return Py_BuildValue("(Nn)", list, (Py_ssize_t)(hi - lo));
}

static PyObject *
wiki_search(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const pp_wiki_index *ix;
    const char *k;
    Py_ssize_t len;
    size_t lo = 0, hi = 0, limit, i;
    long fl;
    char folded[4 * PP_WIKI_TITLE_MAX + 4];
    PyObject *list;

    (void)module;
    if (prefix_args(args, nargs, "wiki_search(index, q, limit)", &ix, &k, &len, &limit) < 0)
        return NULL;
    if (k != NULL && (size_t)len <= PP_WIKI_TITLE_MAX) {
        fl = fold_title(NULL, k, (size_t)len, folded, sizeof folded);
        if (fl >= 0)
            pp_wiki_fold_prefix(ix, folded, (size_t)fl, &lo, &hi);
    }
    if (hi - lo < limit)
        limit = hi - lo;
    if ((list = PyList_New((Py_ssize_t)limit)) == NULL)
        return NULL;
    for (i = 0; i < limit; i++) {
        PyObject *t = title_str(ix, ix->fold_entry[lo + i]);
        if (t == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, t);
    }
    return Py_BuildValue("(Nn)", list, (Py_ssize_t)(hi - lo));
}

static PyObject *
wiki_info(PyObject *module, PyObject *obj)
{
    const pp_wiki_index *ix;
    const pp_wiki_header *h;

    (void)module;
    if ((ix = index_of(obj)) == NULL)
        return NULL;
    h = ix->h;
    return Py_BuildValue(
        "{sKsKsKsKsKsK}",
        "titles", (unsigned long long)h->n, "pages", (unsigned long long)h->pages,
        "redirects", (unsigned long long)h->redirects,
        "duplicates", (unsigned long long)h->duplicates,
        "bytes", (unsigned long long)h->image_size,
        "dump_size", (unsigned long long)h->dump_size);
}

static PyObject *
wiki_header(PyObject *module, PyObject *obj)
{
    /* The dump fields of an image's header, unchecked: enough to tell
     * whether a saved index is stale before checking it whole. */
    Py_buffer v;
    pp_wiki_header h;

    (void)module;
    if (PyObject_GetBuffer(obj, &v, PyBUF_SIMPLE) < 0)
        return NULL;
    if ((size_t)v.len < sizeof h || memcmp(v.buf, PP_WIKI_MAGIC, 8) != 0) {
        PyBuffer_Release(&v);
        Py_RETURN_NONE;
    }
    memcpy(&h, v.buf, sizeof h);
    PyBuffer_Release(&v);
    return Py_BuildValue("{sKsKsKsKsK}", "image_size", (unsigned long long)h.image_size,
                         "dump_size", (unsigned long long)h.dump_size,
                         "dump_mtime_ns", (unsigned long long)h.dump_mtime_ns,
                         "source_size", (unsigned long long)h.source_size,
                         "source_mtime_ns", (unsigned long long)h.source_mtime_ns);
}

/* ---- requests served, per worker ---------------------------------------- */

/* One counter per worker (the main interpreter last), each on its own
 * cache line: a worker only ever adds to its own. */
#define MAX_COUNTED 256

static struct {
    _Alignas(64) atomic_uint_least64_t n;
} served[MAX_COUNTED + 1];
static atomic_int counted_max = -1;

static PyObject *
wiki_request(PyObject *module, PyObject *unused)
{
    int w = ppy_state_of(module)->worker_id, m;

    (void)unused;
    if (w < 0 || w >= MAX_COUNTED)
        w = MAX_COUNTED;
    else if (w > (m = atomic_load_explicit(&counted_max, memory_order_relaxed)))
        while (w > m && !atomic_compare_exchange_weak(&counted_max, &m, w))
            ;
    atomic_fetch_add_explicit(&served[w].n, 1, memory_order_relaxed);
    Py_RETURN_NONE;
}

static PyObject *
wiki_requests(PyObject *module, PyObject *unused)
{
    int i, m = atomic_load_explicit(&counted_max, memory_order_relaxed);
    PyObject *list = PyList_New(0);

    (void)module;
    (void)unused;
    for (i = 0; list && i <= m; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(
            (unsigned long long)atomic_load_explicit(&served[i].n, memory_order_relaxed));
        if (v == NULL || PyList_Append(list, v) < 0)
            Py_CLEAR(list);
        Py_XDECREF(v);
    }
    return list;
}

PyMethodDef ppy_wiki_methods[] = {
    {"wiki_request", wiki_request, METH_NOARGS,
     "wiki_request()\n--\n\nCount one request served by this worker."},
    {"wiki_requests", wiki_requests, METH_NOARGS,
     "wiki_requests()\n--\n\nRequests counted so far, per worker (index = worker id)."},
    {"wiki_open", wiki_open, METH_O,
     "wiki_open(image, /)\n--\n\nCheck a wiki index image whole and record it "
     "for lookups (main interpreter)."},
    {"wiki_close", wiki_close, METH_O,
     "wiki_close(image, /)\n--\n\nForget an unfrozen image wiki_open() recorded, "
     "letting it be freed (main interpreter)."},
    {"wiki_find", (PyCFunction)(void (*)(void))wiki_find, METH_FASTCALL,
     "wiki_find(image, title, /)\n--\n\nThe entry of title, or -1."},
    {"wiki_page", (PyCFunction)(void (*)(void))wiki_page, METH_FASTCALL,
     "wiki_page(image, i, /)\n--\n\n(title, start, length, redirect entry or -1)."},
    {"wiki_offsets", (PyCFunction)(void (*)(void))wiki_offsets, METH_FASTCALL,
     "wiki_offsets(image, prefix, limit, /)\n--\n\n([[title, start, end], ...], "
     "matches): titles starting with prefix, in order."},
    {"wiki_search", (PyCFunction)(void (*)(void))wiki_search, METH_FASTCALL,
     "wiki_search(image, q, limit, /)\n--\n\n([title, ...], matches): titles "
     "starting with q, ignoring case."},
    {"wiki_info", wiki_info, METH_O, "wiki_info(image, /)\n--\n\nThe index's counts and sizes."},
    {"wiki_header", wiki_header, METH_O, NULL},
    {"wiki_scan_fragment", wiki_scan_fragment, METH_O,
     "wiki_scan_fragment(data, /)\n--\n\n(packed pages, head, tail): the "
     "pages wholly inside a piece of a dump; see pp_wiki_scan_fragment."},
    {NULL, NULL, 0, NULL}
};
