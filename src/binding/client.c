/* client.c -- outgoing connections driven by a protocol class.
 *
 * The life of a client:
 *
 *   main      pyparallel.client() names the protocol for the workers, makes
 *             a Task for the Future it returns, and posts a connect command
 *             to a worker's loop thread;
 *   worker    resolves the protocol, starts a non-blocking connect and opens
 *             a connection on the loop's client group; from then on it is
 *             served exactly like an accepted connection (protocol.c);
 *   end       when the connection is gone -- or the connect failed -- the
 *             Task is completed with connection_lost's return value, or
 *             with the exception (connect error, or a callback's exception
 *             when there was no exception_handler), and the completion
 *             thread hands it to the Future.
 */
#include "ppy_io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct ppy_client {
    ppy_endpoint ep;              /* first: the connection's data */
    pp_conn *c;
    int closing;
} ppy_client;

static void
client_finish(ppy_client *cl)
{
    ppy_endpoint *ep = &cl->ep;
    PyObject *task = ep->task;

    ep->task = NULL;
    if (task) {
        if (ep->failure) {
            PyErr_SetRaisedException(Py_NewRef(ep->failure));
            ppy_task_finish(ep->lt->worker, task, NULL);
        } else {
            ppy_task_finish(ep->lt->worker, task, ep->result ? ep->result : Py_None);
        }
        /* The Task belongs to the main interpreter: only its C fields were
         * touched here, and the pipeline's reference is dropped by the
         * completion thread. */
    }
    if (pp_link_linked(&ep->link))
        pp_link_remove(&ep->link);
    ppy_endpoint_clear(ep);
    free(cl);
}

static void
client_conn_closed(ppy_endpoint *ep)
{
    client_finish((ppy_client *)ep);
}

static void
client_close(ppy_endpoint *ep)
{
    ppy_client *cl = (ppy_client *)ep;

    if (cl->closing)
        return;
    cl->closing = 1;
    if (cl->c)
        pp_conn_abort(cl->c);
}

void
ppy_client_fini(ppy_lthread *lt)
{
    int rc;

    /* Called once every client endpoint is gone, so no connection is
     * left; if one is (a bug), the group stays allocated. */
    if (lt->clients_ready) {
        if ((rc = pp_conn_group_destroy(&lt->clients)) < 0)
            ppy_io_report(lt->index, "the client connection group is still "
                          "busy at the end; leaking it", rc);
        else
            lt->clients_ready = 0;
    }
}

typedef struct {
    ppy_cmd base;
    PyObject *task;              /* main's; touched only through ppy_task_* */
    int64_t proto_id;
    PyObject *shared;            /* a reference to the frozen shared=, or
                                    NULL */
    char *host;                  /* or the Unix path */
    int port;                    /* -1: Unix */
    size_t write_high, write_low;
} connect_cmd;

/* May run on the loop thread, which holds its worker's GIL, not main's:
 * dropping the reference to the frozen (immortal) shared= writes nothing. */
static void
connect_free(ppy_cmd *cmd)
{
    Py_XDECREF(((connect_cmd *)cmd)->shared);
    free(((connect_cmd *)cmd)->host);
    free(cmd);
}

static void
connect_proc(ppy_lthread *lt, ppy_cmd *cmd)
{
    connect_cmd *cc = (connect_cmd *)cmd;
    ppy_client *cl = calloc(1, sizeof(*cl));
    PyObject *cls = NULL;
    int fd, rc;

    if (cl == NULL) {
        PyErr_NoMemory();
        ppy_task_finish(lt->worker, cc->task, NULL);
        return;
    }
    cl->ep.kind = PPY_KIND_ENDPOINT;
    cl->ep.lt = lt;
    cl->ep.shared = Py_NewRef(cc->shared ? cc->shared : Py_None);
    cl->ep.task = cc->task;
    cl->ep.on_conn_closed = client_conn_closed;
    cl->ep.close = client_close;
    cc->task = NULL;
    cls = ppy_worker_callable(lt->worker, (uint32_t)cc->proto_id);
    if (cls == NULL || ppy_endpoint_set_protocol(&cl->ep, cls) < 0) {
        Py_XDECREF(cls);
        cl->ep.failure = PyErr_GetRaisedException();
        client_finish(cl);
        return;
    }
    Py_DECREF(cls);
    if (!lt->clients_ready) {
        if ((rc = pp_conn_group_init(&lt->clients, lt->loop, NULL)) < 0)
            goto fail;
        lt->clients_ready = 1;
    }
    fd = cc->port < 0 ? pp_net_connect_unix(cc->host, 0)
                      : pp_net_connect_tcp(cc->host, cc->port, 0);
    if ((rc = fd) < 0)
        goto fail;
    pp_link_append(&lt->endpoints, &cl->ep.link);
    rc = pp_conn_open(&lt->clients, fd, PP_CONN_CONNECTING, &ppy_proto_handler,
                      &cl->ep, &cl->c);
    if (rc < 0) {
        close(fd);
        goto fail;
    }
    pp_conn_set_water(cl->c, cc->write_high, cc->write_low);
    return;
fail:
    cl->ep.failure = ppy_error_from_code(rc, NULL);
    if (cl->ep.failure == NULL)
        cl->ep.failure = PyErr_GetRaisedException();
    client_finish(cl);
}

/* _connect(pool, worker, host, port, unix, protocol, shared, future,
 *          write_high, write_low) -> Task */
PyObject *
ppy_client_connect(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"pool", "worker", "host", "port", "unix",
                             "protocol", "shared", "future", "write_high",
                             "write_low", NULL};
    PyObject *pool, *protocol, *shared, *future, *task;
    const char *host = NULL, *unix_path = NULL;
    int worker, port = 0;
    Py_ssize_t high = 65536, low = 16384;
    connect_cmd *cc;
    ppy_lthread *lt;
    int64_t id;

    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OizizOOO|nn:_connect",
                                     kwlist, &pool, &worker, &host, &port,
                                     &unix_path, &protocol, &shared, &future,
                                     &high, &low))
        return NULL;
    if (high <= 0 || low < 0 || low > high) {
        PyErr_SetString(PyExc_ValueError,
                        "need write_high > 0 and 0 <= write_low <= write_high");
        return NULL;
    }
    if (ppy_check_shared(shared) < 0)
        return NULL;
    if ((id = ppy_pool_fn_id(pool, protocol)) < 0) {
        if (id == -2)
            PyErr_Format(PyExc_TypeError,
                         "protocol %R cannot be found by workers: define the "
                         "class at the top level of a module or of the main "
                         "script", protocol);
        return NULL;
    }
    if ((lt = ppy_pool_lthread(pool, worker)) == NULL)
        return NULL;
    if ((cc = calloc(1, sizeof(*cc))) == NULL)
        return PyErr_NoMemory();
    ppy_cmd_init(&cc->base, connect_proc);
    cc->base.free = connect_free;
    cc->proto_id = id;
    cc->shared = shared == Py_None ? NULL : Py_NewRef(shared);
    cc->port = unix_path ? -1 : port;
    cc->host = strdup(unix_path ? unix_path : host ? host : "127.0.0.1");
    cc->write_high = (size_t)high;
    cc->write_low = (size_t)low;
    if (cc->host == NULL) {
        ppy_cmd_release(&cc->base);
        return PyErr_NoMemory();
    }
    if ((task = ppy_pool_task_new(pool, future, worker)) == NULL) {
        ppy_cmd_release(&cc->base);
        return NULL;
    }
    cc->task = task;             /* the pipeline's reference travels */
    if (ppy_cmd_post(lt, &cc->base) < 0) {
        ppy_cmd_release(&cc->base);
        Py_DECREF(task);         /* the pipeline's */
        Py_DECREF(task);
        PyErr_SetString(PyExc_RuntimeError,
                        "pyparallel's workers have shut down; no more I/O can "
                        "start");
        return NULL;
    }
    ppy_cmd_release(&cc->base);
    return task;
}
