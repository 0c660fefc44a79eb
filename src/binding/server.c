/* server.c -- listening servers: one accepting endpoint per worker.
 *
 * The life of a server:
 *
 *   main        binds the listeners: one SO_REUSEPORT socket per worker
 *               (the kernel spreads connections over them), or one socket
 *               that every worker accepts from (reuse_port=False, and Unix
 *               sockets); then sends each worker's loop thread a start
 *               command and waits for all of them;
 *   worker      resolves the protocol class in its own interpreter, makes a
 *               connection group (the server's limits) and starts an
 *               acceptor on its listener; connections are then accepted,
 *               served and closed on that worker alone;
 *   close       main sends each worker a close command: the acceptor stops,
 *               every connection is aborted (connection_lost runs), and once
 *               the worker's last connection is gone its endpoint is reaped
 *               and the server's count of live workers drops; main waits for
 *               zero, then closes the listeners.
 *
 * What main and the workers share is a ppy_srv_shared, reference-counted
 * (main's Server object holds one, each worker endpoint one), so either
 * side may finish first.
 */
#include "ppy_io.h"
#include "ppy_http.h"
#include "pp_http_static.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct ppy_srv_shared {
    atomic_int refs;
    pp_word live;                /* worker endpoints not yet reaped */
    pp_conn_config cfg;
    int kind;                    /* SRV_* */
    int native;                  /* kind == SRV_ECHO */
    pp_http_config hcfg;         /* SRV_HTTP */
    char *spec;                  /* SRV_HTTP: the app, "module:name" */
    char *server_name;
    int interface, debug, port;
    int log_fd;                   /* access log (-1: none) */
    pp_http_log_format *log_format;
    int threads;                  /* handler threads per worker (1: none) */
    pp_http_static **statics;     /* --static mounts, shared by the workers */
    size_t nstatics;
    int64_t proto_id;
    PyObject *shared;            /* frozen (checked), or NULL; the Server
                                    object holds the reference */
    atomic_size_t conns;         /* open across workers (max_connections) */
    size_t max_conns;
} ppy_srv_shared;

enum { SRV_PROTOCOL = 0, SRV_ECHO = 1, SRV_HTTP = 2 };

static void
shared_release(ppy_srv_shared *sh)
{
    if (atomic_fetch_sub(&sh->refs, 1) == 1) {
        size_t i;
        if (sh->log_fd > 2)
            close(sh->log_fd);
        pp_http_log_format_free(sh->log_format);
        for (i = 0; i < sh->nstatics; i++)
            pp_http_static_free(sh->statics[i]);
        free(sh->statics);
        free(sh->spec);
        free(sh->server_name);
        free(sh);
    }
}

/* ---- the worker side ------------------------------------------------------- */

typedef struct ppy_wsrv {
    ppy_endpoint ep;              /* first: connections' data points here */
    ppy_srv_shared *sh;
    pp_conn_group group;
    pp_acceptor acc;
    pp_pending reap;
    int closing;
    ppy_http_site *site;          /* SRV_HTTP */
} ppy_wsrv;

static void
http_group_init(ppy_wsrv *ws, ppy_srv_shared *sh, pp_loop *loop)
{
    pp_http_group *g = &ws->site->group;

    pp_http_group_init(g, &ws->group, &sh->hcfg, &ppy_http_handler, ws->site);
    if (sh->log_fd >= 0)
        pp_http_group_set_log(g, loop, sh->log_fd, sh->log_format);
    pp_http_group_set_static(g, sh->statics, sh->nstatics);
}

static void
site_free(ppy_wsrv *ws)
{
    if (ws->site) {
        ppy_http_site_clear(ws->site);     /* answers what its threads held */
        pp_http_group_flush(&ws->site->group);
        free(ws->site);
        ws->site = NULL;
    }
}

static void
wsrv_reap(pp_loop *loop, pp_pending *p)
{
    ppy_wsrv *ws = p->data;
    ppy_srv_shared *sh = ws->sh;
    int rc;

    (void)loop;
    /* Reaped once closing and empty, its acceptor stopped: the group
     * cannot be busy.  If it is (a bug), connections still point into ws:
     * keep it; the next connection to close queues this reap again. */
    if ((rc = pp_conn_group_destroy(&ws->group)) < 0) {
        ppy_io_report(ws->ep.lt->index, "a closed server's connection group "
                      "is still busy; keeping it", rc);
        return;
    }
    pp_link_remove(&ws->ep.link);
    ppy_endpoint_clear(&ws->ep);
    site_free(ws);
    free(ws);
    pp_word_add(&sh->live, -1);
    shared_release(sh);
}

static void
wsrv_conn_closed(ppy_endpoint *ep)
{
    ppy_wsrv *ws = (ppy_wsrv *)ep;

    if (ws->closing && ws->group.count == 0)
        pp_pending_add(ep->lt->loop, &ws->reap, wsrv_reap);
}

static void
wsrv_close(ppy_endpoint *ep)
{
    ppy_wsrv *ws = (ppy_wsrv *)ep;

    if (ws->closing)
        return;
    ws->closing = 1;
    pp_acceptor_stop(&ws->acc);
    pp_conn_group_close_all(&ws->group);
    if (ws->group.count == 0)
        pp_pending_add(ws->ep.lt->loop, &ws->reap, wsrv_reap);
}

typedef struct {
    ppy_cmd base;
    ppy_srv_shared *sh;
    int fd;
    ppy_wsrv *ws;                 /* out */
} start_cmd;

static void
start_proc(ppy_lthread *lt, ppy_cmd *cmd)
{
    start_cmd *sc = (start_cmd *)cmd;
    ppy_srv_shared *sh = sc->sh;
    ppy_wsrv *ws = calloc(1, sizeof(*ws));
    PyObject *cls;
    int rc;

    if (ws == NULL) {
        cmd->rc = -ENOMEM;
        return;
    }
    ws->ep.kind = PPY_KIND_ENDPOINT;
    ws->ep.lt = lt;
    ws->ep.native = sh->native;
    ws->ep.shared = Py_NewRef(sh->shared ? sh->shared : Py_None);
    ws->ep.on_conn_closed = wsrv_conn_closed;
    ws->ep.close = wsrv_close;
    ws->ep.live = &sh->conns;
    ws->ep.max_live = sh->max_conns;
    ws->reap.data = ws;
    if (sh->kind == SRV_PROTOCOL) {
        cls = ppy_worker_callable(lt->worker, (uint32_t)sh->proto_id);
        if (cls == NULL || ppy_endpoint_set_protocol(&ws->ep, cls) < 0) {
            Py_XDECREF(cls);
            cmd->rc = -EINVAL;
            cmd->error = ppy_exception_text();
            ppy_endpoint_clear(&ws->ep);
            free(ws);
            return;
        }
        Py_DECREF(cls);
    }
    if (sh->kind == SRV_HTTP) {
        if ((ws->site = calloc(1, sizeof(*ws->site))) == NULL) {
            cmd->rc = -ENOMEM;
            ppy_endpoint_clear(&ws->ep);
            free(ws);
            return;
        }
        ws->site->ep = &ws->ep;
        if (ppy_http_site_init(ws->site, lt, sh->spec, sh->interface,
                               sh->shared, sh->debug, sh->port) < 0 ||
            (sh->threads > 1 && ppy_http_threads_start(ws->site, sh->threads) < 0)) {
            cmd->rc = -EINVAL;
            cmd->error = ppy_exception_text();
            site_free(ws);
            ppy_endpoint_clear(&ws->ep);
            free(ws);
            return;
        }
    }
    if ((rc = pp_conn_group_init(&ws->group, lt->loop, &sh->cfg)) < 0 ||
        (ws->site && (http_group_init(ws, sh, lt->loop), 0)) ||
        (rc = pp_acceptor_start(&ws->acc, &ws->group, sc->fd,
                                sh->kind == SRV_HTTP ? &pp_http_conn_handler
                                : sh->native ? &ppy_native_echo_handler
                                             : &ppy_proto_handler,
                                sh->kind == SRV_HTTP ? (void *)&ws->site->group
                                                     : (void *)&ws->ep)) < 0) {
        cmd->rc = rc;
        /* No connection and no acceptor: it cannot be busy.  If it is (a
         * bug), leak ws rather than free what the group points into. */
        if ((rc = pp_conn_group_destroy(&ws->group)) < 0) {
            ppy_io_report(lt->index, "a server's connection group that never "
                          "started is busy; leaking it", rc);
            return;
        }
        ppy_endpoint_clear(&ws->ep);
        site_free(ws);
        free(ws);
        return;
    }
    atomic_fetch_add(&sh->refs, 1);
    pp_word_add(&sh->live, 1);
    ws->sh = sh;
    pp_link_append(&lt->endpoints, &ws->ep.link);
    sc->ws = ws;
}

/* Closes ws, or whatever endpoint `start` made: a start whose outcome main
 * never saw (Ctrl-C while server() waited for it).  It was posted to the
 * same loop thread before this command, so it has run by now. */
typedef struct {
    ppy_cmd base;
    ppy_wsrv *ws;
    start_cmd *start;            /* a reference, or NULL */
} close_cmd;

static void
close_proc(ppy_lthread *lt, ppy_cmd *cmd)
{
    close_cmd *cc = (close_cmd *)cmd;
    ppy_wsrv *ws = cc->ws ? cc->ws : cc->start ? cc->start->ws : NULL;

    (void)lt;
    if (ws)
        wsrv_close(&ws->ep);
}

static void
close_free(ppy_cmd *cmd)
{
    close_cmd *cc = (close_cmd *)cmd;

    if (cc->start)
        ppy_cmd_release(&cc->start->base);
    free(cc);
}

typedef struct {
    ppy_cmd base;
    ppy_wsrv *ws;
    pp_conn_stats stats;
    pp_http_stats http;
    uint64_t count, errors, line_scanned;
} stats_cmd;

static void
stats_proc(ppy_lthread *lt, ppy_cmd *cmd)
{
    stats_cmd *sc = (stats_cmd *)cmd;

    (void)lt;
    sc->stats = sc->ws->group.stats;
    sc->count = sc->ws->group.count;
    sc->errors = sc->ws->ep.errors;
    sc->line_scanned = sc->ws->ep.line_scanned;
    if (sc->ws->site)
        sc->http = sc->ws->site->group.stats;
}

/* Graceful drain: stop accepting; idle connections close now, busy ones
 * after their answers (Connection: close). */
static void
drain_proc(ppy_lthread *lt, ppy_cmd *cmd)
{
    ppy_wsrv *ws = ((stats_cmd *)cmd)->ws;

    (void)lt;
    if (ws->closing)
        return;
    pp_acceptor_stop(&ws->acc);
    if (ws->site)
        pp_http_group_drain(&ws->site->group);
    else
        pp_conn_group_close_all(&ws->group);
}

/* ---- the Server type (main interpreter) --------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *pool;
    PyObject *shared;            /* a reference to shared=, or NULL */
    ppy_srv_shared *sh;
    int nworkers;
    ppy_lthread **lts;            /* per worker */
    ppy_wsrv **ws;                /* per worker, NULL where not started */
    start_cmd **starts;          /* per worker: a start posted but not seen
                                    through (Ctrl-C), with a reference */
    int *fds;                    /* listeners */
    int nfds;
    int port;
    char *unix_path;             /* a socket file to remove at close */
    int closed;
} ppy_server;

static PyObject *
listen_error(int rc, const char *host, int port, const char *unix_path)
{
    const char *hint = rc == -EADDRINUSE ? " (held by another server: pick another "
                                           "port, or port=0 for any free one)"
                     : rc == -EACCES ? " (ports below 1024 need privileges)" : "";
    char where[400];
    PyObject *exc;

    if (unix_path)
        snprintf(where, sizeof where, "cannot listen on Unix socket %s%s",
                 unix_path, hint);
    else
        snprintf(where, sizeof where, "cannot listen on %s:%d%s", host, port, hint);
    if ((exc = ppy_error_from_code(rc, where)) != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static int server_shutdown(ppy_server *self, int64_t timeout_ns);

/* http['static']: a list of (prefix, directory) pairs, opened here, once. */
static int
static_mounts(ppy_srv_shared *sh, PyObject *list)
{
    Py_ssize_t i, n;

    if (!PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, "http['static'] must be a list of (prefix, directory)");
        return -1;
    }
    n = PyList_GET_SIZE(list);
    if (n == 0)
        return 0;
    if ((sh->statics = calloc((size_t)n, sizeof(*sh->statics))) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(list, i), *dir = NULL;
        const char *prefix;
        int rc;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            (prefix = PyUnicode_AsUTF8(PyTuple_GET_ITEM(pair, 0))) == NULL ||
            !PyUnicode_FSConverter(PyTuple_GET_ITEM(pair, 1), &dir)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "a static mount is (prefix, directory)");
            return -1;
        }
        rc = pp_http_static_new(&sh->statics[i], prefix, PyBytes_AS_STRING(dir));
        if (rc == -EINVAL)
            PyErr_Format(PyExc_ValueError, "static prefix %R must start with '/' and "
                         "hold no '?' or '%%'", PyTuple_GET_ITEM(pair, 0));
        else if (rc < 0) {
            errno = -rc;
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, PyTuple_GET_ITEM(pair, 1));
        }
        Py_DECREF(dir);
        if (rc < 0)
            return -1;
        sh->nstatics++;
    }
    return 0;
}

/* Reads an HTTP server's settings from the dict the Python layer built
 * (pyparallel._http): every key is required there, checked here again. */
static int
http_config(ppy_srv_shared *sh, PyObject *d)
{
    static const struct { const char *key; int timeout; size_t off; } nums[] = {
        {"max_line", 0, offsetof(pp_http_config, max_line)},
        {"max_head", 0, offsetof(pp_http_config, max_head)},
        {"max_headers", 0, offsetof(pp_http_config, max_headers)},
        {"max_body", 0, offsetof(pp_http_config, max_body)},
        {"body_spill", 0, offsetof(pp_http_config, body_spill)},
        {"head_timeout", 1, offsetof(pp_http_config, head_timeout_ns)},
        {"body_timeout", 1, offsetof(pp_http_config, body_timeout_ns)},
        {"keepalive_timeout", 1, offsetof(pp_http_config, keepalive_timeout_ns)},
        {"send_timeout", 1, offsetof(pp_http_config, send_timeout_ns)},
    };
    PyObject *v;
    const char *str;
    size_t i;

    pp_http_config_default(&sh->hcfg);
    for (i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        char *field = (char *)&sh->hcfg + nums[i].off;
        if ((v = PyDict_GetItemString(d, nums[i].key)) == NULL)
            continue;
        if (nums[i].timeout) {
            int64_t ns;
            if (ppy_timeout_ns(v, nums[i].key, PPY_TIMEOUT_NONE, &ns) < 0)
                return -1;
            *(uint64_t *)field = ns < 0 ? 0 : (uint64_t)ns;
        } else {
            long long n = PyLong_AsLongLong(v);
            if (n <= 0) {
                if (!PyErr_Occurred())
                    PyErr_Format(PyExc_ValueError, "%s must be a positive int, not %R",
                                 nums[i].key, v);
                return -1;
            }
            if (nums[i].off == offsetof(pp_http_config, max_headers) ||
                nums[i].off == offsetof(pp_http_config, max_line) ||
                nums[i].off == offsetof(pp_http_config, max_head) ||
                nums[i].off == offsetof(pp_http_config, body_spill))
                *(size_t *)field = (size_t)n;
            else
                *(uint64_t *)field = (uint64_t)n;
        }
    }
    if ((v = PyDict_GetItemString(d, "max_pipeline")) != NULL) {
        long n = PyLong_AsLong(v);
        if (n <= 0 || n > 1024) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "max_pipeline must be 1..1024");
            return -1;
        }
        sh->hcfg.max_pipeline = (unsigned)n;
    }
    if ((v = PyDict_GetItemString(d, "app")) == NULL || !PyUnicode_Check(v) ||
        (str = PyUnicode_AsUTF8(v)) == NULL || (sh->spec = strdup(str)) == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "http['app'] must be a str");
        return -1;
    }
    if ((v = PyDict_GetItemString(d, "server")) != NULL && PyUnicode_Check(v) &&
        (str = PyUnicode_AsUTF8(v)) != NULL) {
        if (strpbrk(str, "\r\n") || (sh->server_name = strdup(str)) == NULL) {
            PyErr_SetString(PyExc_ValueError, "the Server header must be one line");
            return -1;
        }
        sh->hcfg.server = sh->server_name;
    }
    v = PyDict_GetItemString(d, "interface");
    sh->interface = v && PyUnicode_Check(v) &&
                    PyUnicode_CompareWithASCIIString(v, "wsgi") == 0
                    ? PPY_HTTP_WSGI : PPY_HTTP_NATIVE;
    sh->log_fd = -1;
    if ((v = PyDict_GetItemString(d, "access_log")) != NULL && v != Py_None) {
        PyObject *fmt = PyDict_GetItemString(d, "access_log_format");
        const char *spec = fmt && PyUnicode_Check(fmt) ? PyUnicode_AsUTF8(fmt) : NULL, *bad;
        int rc;
        if (!PyUnicode_Check(v) || (str = PyUnicode_AsUTF8(v)) == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "access_log must be a path or '-'");
            return -1;
        }
        if (PyErr_Occurred())
            return -1;
        if ((rc = pp_http_log_format_new(&sh->log_format, spec, &bad)) < 0) {
            if (rc == -EINVAL)
                PyErr_Format(PyExc_ValueError, "access log format %R: unknown directive at "
                             "'%.10s' (known: %%h %%l %%u %%t %%r %%m %%U %%q %%H %%s %%b %%B "
                             "%%D %%T %%{Header}i %%%%, or 'common' / 'combined')", fmt, bad);
            else
                PyErr_NoMemory();
            return -1;
        }
        if (strcmp(str, "-") == 0)
            sh->log_fd = 1;
        else if ((sh->log_fd = open(str, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) < 0) {
            PyErr_SetFromErrnoWithFilename(PyExc_OSError, str);
            return -1;
        }
    }
    if ((v = PyDict_GetItemString(d, "static")) != NULL && static_mounts(sh, v) < 0)
        return -1;
    sh->threads = 1;
    if ((v = PyDict_GetItemString(d, "threads")) != NULL) {
        long n = PyLong_AsLong(v);
        if (n < 1 || n > 1024) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "threads must be 1..1024");
            return -1;
        }
        sh->threads = (int)n;
    }
    v = PyDict_GetItemString(d, "debug");
    sh->debug = v && PyObject_IsTrue(v) == 1;
    /* A slow reader is dropped by the connection's idle timeout. */
    sh->cfg.idle_timeout_ns = sh->hcfg.send_timeout_ns;
    return 0;
}

static PyObject *
server_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"pool", "host", "port", "protocol", "unix",
                             "backlog", "shared", "max_connections",
                             "idle_timeout", "reuse_port", "write_high",
                             "write_low", "read_limit", "native", "http", NULL};
    PyObject *pool, *protocol;
    const char *host = NULL, *unix_path = NULL;
    int port = 0, backlog = PP_NET_BACKLOG, reuse_port = 1, native = 0;
    long long max_conns = 0;
    PyObject *idle_obj = Py_None;
    int64_t idle_ns;
    Py_ssize_t write_high = 65536, write_low = 16384, read_limit = 1 << 20;
    PyObject *shared = Py_None, *http = Py_None;
    ppy_server *self;
    ppy_srv_shared *sh;
    int i, n, rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OziOz|iOLOpnnniO:Server",
                                     kwlist, &pool, &host, &port, &protocol,
                                     &unix_path, &backlog, &shared, &max_conns,
                                     &idle_obj, &reuse_port, &write_high,
                                     &write_low, &read_limit, &native, &http))
        return NULL;
    if (native < SRV_PROTOCOL || native > SRV_HTTP ||
        (native == SRV_HTTP) != (http != Py_None && PyDict_Check(http))) {
        PyErr_SetString(PyExc_ValueError, "ServerCore: kind 2 (HTTP) goes with an http= dict");
        return NULL;
    }
    if (write_high <= 0 || write_low < 0 || write_low > write_high ||
        read_limit <= 0 || max_conns < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "need write_high > 0, 0 <= write_low <= write_high, "
                        "read_limit > 0, max_connections >= 0");
        return NULL;
    }
    if (ppy_check_shared(shared) < 0)
        return NULL;
    /* None, inf or past 292 years: no idle timeout (0 for the engine). */
    if (ppy_timeout_ns(idle_obj, "idle_timeout", PPY_TIMEOUT_NONE, &idle_ns) < 0)
        return NULL;
    if (idle_ns == 0) {
        PyErr_Format(PyExc_ValueError, "idle_timeout must be a positive number "
                     "of seconds or None, not %R", idle_obj);
        return NULL;
    }
    self = (ppy_server *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->pool = Py_NewRef(pool);
    self->shared = shared == Py_None ? NULL : Py_NewRef(shared);
    n = self->nworkers = ppy_pool_nworkers(pool);
    self->lts = calloc((size_t)n, sizeof(*self->lts));
    self->ws = calloc((size_t)n, sizeof(*self->ws));
    self->starts = calloc((size_t)n, sizeof(*self->starts));
    self->fds = malloc((size_t)n * sizeof(int));
    self->sh = sh = calloc(1, sizeof(*sh));
    if (!self->lts || !self->ws || !self->starts || !self->fds || !sh) {
        PyErr_NoMemory();
        goto fail;
    }
    atomic_init(&sh->refs, 1);
    pp_word_init(&sh->live, 0);
    sh->kind = native;
    sh->native = native == SRV_ECHO;
    /* Frozen, hence immortal: the workers' own references (Py_NewRef in
     * start_proc) write nothing to it. */
    sh->shared = self->shared;
    pp_conn_config_default(&sh->cfg);
    sh->cfg.write_high = (size_t)write_high;
    sh->cfg.write_low = (size_t)write_low;
    sh->cfg.read_max = (size_t)read_limit;
    sh->cfg.idle_timeout_ns = idle_ns < 0 ? 0 : (uint64_t)idle_ns;
    sh->cfg.max_conns = max_conns ? (size_t)((max_conns + n - 1) / n) : 0;
    sh->max_conns = (size_t)max_conns;
    atomic_init(&sh->conns, 0);
    if (native == SRV_HTTP) {
        if (http_config(sh, http) < 0)
            goto fail;
        /* Room for a whole head and a read behind it, unconsumed. */
        if (sh->cfg.read_max < sh->hcfg.max_head + PP_CONN_READ_SIZE)
            sh->cfg.read_max = sh->hcfg.max_head + PP_CONN_READ_SIZE;
    }
    if (native == SRV_PROTOCOL && (sh->proto_id = ppy_pool_fn_id(pool, protocol)) < 0) {
        if (sh->proto_id == -2)
            PyErr_Format(PyExc_TypeError,
                         "protocol %R cannot be found by workers: define the "
                         "class at the top level of a module or of the main "
                         "script", protocol);
        goto fail;
    }
    for (i = 0; i < n; i++) {
        if ((self->lts[i] = ppy_pool_lthread(pool, i)) == NULL)
            goto fail;
    }

    /* Listeners. */
    if (unix_path) {
        rc = pp_net_listen_unix(unix_path, backlog, PP_NET_UNLINK);
        if (rc < 0) {
            listen_error(rc, "", 0, unix_path);
            goto fail;
        }
        self->fds[self->nfds++] = rc;
        self->port = -1;
        if (unix_path[0] != '@' && (self->unix_path = strdup(unix_path)) == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
    } else {
        int want = reuse_port ? n : 1;
        if (reuse_port && port != 0) {
            /* SO_REUSEPORT would let these sockets join another server's
             * group on the port (same user), silently splitting its
             * traffic with it: a plain bind first says "in use". */
            rc = pp_net_listen_tcp(host, port, backlog, PP_NET_BIND_ONLY);
            if (rc < 0) {
                listen_error(rc, host ? host : "127.0.0.1", port, NULL);
                goto fail;
            }
            close(rc);
        }
        for (i = 0; i < want; i++) {
            rc = pp_net_listen_tcp(host, i == 0 ? port : self->port, backlog,
                                   reuse_port ? PP_NET_REUSEPORT : 0);
            if (rc < 0) {
                listen_error(rc, host ? host : "127.0.0.1",
                             i == 0 ? port : self->port, NULL);
                goto fail;
            }
            self->fds[self->nfds++] = rc;
            if (i == 0)
                self->port = pp_net_local_port(rc);
        }
    }

    sh->port = self->port;

    /* One endpoint per worker. */
    for (i = 0; i < n; i++) {
        start_cmd *sc = calloc(1, sizeof(*sc));
        if (sc == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        ppy_cmd_init(&sc->base, start_proc);
        sc->sh = sh;
        sc->fd = self->fds[self->nfds == 1 ? 0 : i];
        if (ppy_cmd_call(self->lts[i], &sc->base) < 0) {
            /* Not posted (the loop thread has stopped), or interrupted
             * (Ctrl-C) while the loop thread may still run it: then the
             * close below refers to this command, and runs after it. */
            if (pp_word_get(&sc->base.done)) {
                self->ws[i] = sc->ws;
                ppy_cmd_release(&sc->base);
            } else {
                self->starts[i] = sc;
            }
            goto fail;
        }
        self->ws[i] = sc->ws;
        if (sc->base.error || sc->base.rc < 0) {
            if (sc->base.error)
                PyErr_Format(PyExc_RuntimeError,
                             "worker %d could not set up the protocol:\n%s",
                             i, sc->base.error);
            else {
                errno = -sc->base.rc;
                PyErr_SetFromErrno(PyExc_OSError);
            }
            ppy_cmd_release(&sc->base);
            goto fail;
        }
        ppy_cmd_release(&sc->base);
    }
    return (PyObject *)self;
fail:
    {
        PyObject *exc = PyErr_GetRaisedException();
        (void)server_shutdown(self, -1);
        PyErr_Clear();
        PyErr_SetRaisedException(exc);
    }
    Py_DECREF(self);
    return NULL;
}

/* A wait for every worker's loop must not start on a thread one of those
 * loops waits for (see maincall.c). */
static int
check_loops(void *server)
{
    ppy_server *self = server;
    int i;

    for (i = 0; i < self->nworkers; i++) {
        if (self->lts[i] && ppy_check_wait_on_loop(self->lts[i]->worker) < 0)
            return -1;
    }
    return 0;
}

/* Waits while *w == expected -- for the workers' loops -- up to the
 * deadline (timeout_ns < 0: none) counted from start.  Returns 0 once it
 * changed, 1 on timeout, -1 with an exception set (Ctrl-C, or a wait that
 * could never end: check_loops). */
static int
wait_change(ppy_server *self, pp_word *w, uint32_t expected, uint64_t start,
            int64_t timeout_ns)
{
    int64_t left = ppy_time_left(start, timeout_ns);

    if (left == 0)
        return 1;
    return ppy_wait_word_checked(w, expected, 0, left, check_loops, self) < 0
           ? -1 : 0;
}

/* Closes every worker's endpoint, waits (timeout_ns < 0: for ever) until
 * each is reaped, then closes the listeners.  Returns 0, 1 on timeout, or
 * -1 with an exception set (Ctrl-C). */
static int
server_shutdown(ppy_server *self, int64_t timeout_ns)
{
    int i, rc;
    uint64_t start = pp_now_ns();

    if (self->closed == 2)
        return 0;
    if (self->closed == 0) {
        self->closed = 1;
        for (i = 0; self->ws && self->starts && i < self->nworkers; i++) {
            close_cmd *cc;
            if (self->ws[i] == NULL && self->starts[i] == NULL)
                continue;
            if ((cc = calloc(1, sizeof(*cc))) == NULL)
                return PyErr_NoMemory(), -1;
            ppy_cmd_init(&cc->base, close_proc);
            cc->base.free = close_free;
            cc->ws = self->ws[i];
            self->ws[i] = NULL;
            if (self->starts[i]) {
                cc->start = self->starts[i];
                atomic_fetch_add(&cc->start->base.refs, 1);
            }
            /* Not posted: that loop thread has stopped, and it closed
             * every endpoint it had (a start that ran included). */
            (void)ppy_cmd_post(self->lts[i], &cc->base);
            ppy_cmd_release(&cc->base);
        }
    }
    /* A start main stopped waiting for may still be running, and it uses
     * a listener: the listeners stay open until it is done.  (Its endpoint,
     * if it made one, counts in live from then on, until the close above
     * has run after it.) */
    for (i = 0; self->starts && i < self->nworkers; i++) {
        start_cmd *sc = self->starts[i];
        while (sc && pp_word_get(&sc->base.done) == 0) {
            if ((rc = wait_change(self, &sc->base.done, 0, start, timeout_ns)) != 0)
                return rc;
        }
        if (sc) {
            self->starts[i] = NULL;
            ppy_cmd_release(&sc->base);
        }
    }
    if (self->sh) {
        uint32_t live;
        while ((live = pp_word_get(&self->sh->live)) > 0) {
            if ((rc = wait_change(self, &self->sh->live, live, start, timeout_ns)) != 0)
                return rc;
        }
    }
    for (i = 0; i < self->nfds; i++)
        close(self->fds[i]);
    self->nfds = 0;
    if (self->unix_path) {
        unlink(self->unix_path);
        free(self->unix_path);
        self->unix_path = NULL;
    }
    self->closed = 2;
    return 0;
}

static PyObject *
server_close(ppy_server *self, PyObject *args)
{
    PyObject *timeout = Py_None;
    int64_t timeout_ns;
    int rc;

    if (!PyArg_ParseTuple(args, "|O:close", &timeout) ||
        ppy_timeout_ns(timeout, "timeout", PPY_TIMEOUT_NONE, &timeout_ns) < 0)
        return NULL;
    rc = server_shutdown(self, timeout_ns);
    if (rc < 0)
        return NULL;
    return PyBool_FromLong(rc == 0);
}

static PyObject *
server_stats(ppy_server *self, PyObject *args, PyObject *kwargs)
{
#define NSTATS 11
    uint64_t sum[NSTATS] = {0};
    static const char *names[NSTATS] = {"connections", "accepted", "closed",
                                   "callback_errors", "bytes_read",
                                   "bytes_written", "line_bytes_scanned",
                                   "requests", "responses", "rejected",
                                   "timeouts"};
    PyObject *res = NULL, *per, *w, *timeout = Py_None;
    int64_t timeout_ns;
    uint64_t start = pp_now_ns();
    int i, k;

    static char *kwlist[] = {"timeout", NULL};

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:stats", kwlist, &timeout) ||
        ppy_timeout_ns(timeout, "timeout", PPY_TIMEOUT_NONE, &timeout_ns) < 0 ||
        (per = PyList_New(0)) == NULL)
        return NULL;
    for (i = 0; i < self->nworkers && !self->closed; i++) {
        uint64_t v[NSTATS];
        stats_cmd *sc;
        if (self->ws[i] == NULL)
            continue;
        if ((sc = calloc(1, sizeof(*sc))) == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        ppy_cmd_init(&sc->base, stats_proc);
        sc->ws = self->ws[i];
        if (ppy_cmd_post(self->lts[i], &sc->base) < 0) {
            ppy_cmd_release(&sc->base);
            continue;            /* that worker has shut down */
        }
        if (ppy_cmd_wait_for(&sc->base, ppy_time_left(start, timeout_ns),
                             "Server.stats()") < 0) {
            ppy_cmd_release(&sc->base);
            goto done;
        }
        v[0] = sc->count;
        v[1] = sc->stats.accepted;
        v[2] = sc->stats.closed;
        v[3] = sc->errors;
        v[4] = sc->stats.bytes_read;
        v[5] = sc->stats.bytes_written;
        v[6] = sc->line_scanned;
        v[7] = sc->http.requests;
        v[8] = sc->http.responses;
        v[9] = sc->http.rejected;
        v[10] = sc->http.timeouts;
        ppy_cmd_release(&sc->base);
        w = Py_BuildValue("{sisKsKsK}", "worker", i,
                          "connections", (unsigned long long)v[0],
                          "accepted", (unsigned long long)v[1],
                          "requests", (unsigned long long)v[7]);
        if (w == NULL || PyList_Append(per, w) < 0) {
            Py_XDECREF(w);
            goto done;
        }
        Py_DECREF(w);
        for (k = 0; k < NSTATS; k++)
            sum[k] += v[k];
    }
    if ((res = PyDict_New()) == NULL)
        goto done;
    for (k = 0; k < NSTATS; k++) {
        PyObject *n = PyLong_FromUnsignedLongLong(sum[k]);
        if (n == NULL || PyDict_SetItemString(res, names[k], n) < 0) {
            Py_XDECREF(n);
            Py_CLEAR(res);
            goto done;
        }
        Py_DECREF(n);
    }
    if (PyDict_SetItemString(res, "workers", per) < 0)
        Py_CLEAR(res);
done:
    Py_DECREF(per);
    return res;
}

/* drain(): every worker stops accepting and drains (see drain_proc);
 * then close() waits for the connections, or cuts them at its timeout. */
static PyObject *
server_drain(ppy_server *self, PyObject *unused)
{
    int i;

    (void)unused;
    for (i = 0; i < self->nworkers && !self->closed; i++) {
        stats_cmd *sc;
        if (self->ws[i] == NULL)
            continue;
        if ((sc = calloc(1, sizeof(*sc))) == NULL)
            return PyErr_NoMemory();
        ppy_cmd_init(&sc->base, drain_proc);
        sc->ws = self->ws[i];
        (void)ppy_cmd_post(self->lts[i], &sc->base);
        ppy_cmd_release(&sc->base);
    }
    Py_RETURN_NONE;
}

/* The open connections across workers (a drain's progress). */
static PyObject *
server_get_port(ppy_server *self, void *c)
{
    (void)c;
    if (self->port < 0)
        Py_RETURN_NONE;
    return PyLong_FromLong(self->port);
}

static PyObject *
server_get_closed(ppy_server *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->closed != 0);
}

static int
server_traverse(ppy_server *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->pool);
    Py_VISIT(self->shared);
    return 0;
}

static void
server_dealloc(ppy_server *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    PyObject_GC_UnTrack(self);
    if (self->closed != 2 && self->lts) {
        /* Dropped without close(): close it rather than leak connections. */
        PyObject *exc = PyErr_GetRaisedException();
        if (server_shutdown(self, -1) < 0)
            PyErr_WriteUnraisable((PyObject *)self);
        PyErr_SetRaisedException(exc);
    }
    if (self->sh)
        shared_release(self->sh);
    for (int i = 0; self->starts && i < self->nworkers; i++) {
        /* Left by an interrupted shutdown (whose listeners stay open). */
        if (self->starts[i])
            ppy_cmd_release(&self->starts[i]->base);
    }
    free(self->starts);
    free(self->lts);
    free(self->ws);
    free(self->fds);
    free(self->unix_path);
    Py_CLEAR(self->shared);
    Py_CLEAR(self->pool);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef server_methods[] = {
    {"close", (PyCFunction)server_close, METH_VARARGS,
     "close(timeout=None) -> bool: stop accepting, close every connection "
     "(connection_lost runs for each) and wait; False on timeout"},
    {"drain", (PyCFunction)server_drain, METH_NOARGS,
     "drain(): stop accepting; idle connections close now, the others "
     "after the answers in flight (HTTP: with Connection: close)"},
    {"stats", (PyCFunction)(void (*)(void))server_stats, METH_VARARGS | METH_KEYWORDS,
     "stats(timeout=None) -> dict: counters summed over workers, and "
     "'workers': each worker's connections and accepted; TimeoutError if a "
     "worker's loop does not answer within timeout seconds"},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef server_getset[] = {
    {"port", (getter)server_get_port, NULL, "the bound TCP port", NULL},
    {"closed", (getter)server_get_closed, NULL, "close() has been called", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot server_slots[] = {
    {Py_tp_new, server_new},
    {Py_tp_dealloc, server_dealloc},
    {Py_tp_traverse, server_traverse},
    {Py_tp_methods, server_methods},
    {Py_tp_getset, server_getset},
    {Py_tp_doc, "The C side of pyparallel.Server (internal; use "
                "pyparallel.server())."},
    {0, NULL}
};

PyType_Spec ppy_server_spec = {
    .name = "pyparallel._pyparallel.ServerCore",
    .basicsize = sizeof(ppy_server),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = server_slots,
};
