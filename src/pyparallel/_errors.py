"""Exceptions of pyparallel, and how exceptions cross between interpreters.

An exception raised in a worker is pickled there (with its formatted
traceback as text) and rebuilt in the main interpreter; the worker's
traceback is attached as ``__cause__`` (a :class:`RemoteTraceback`), the way
``concurrent.futures.ProcessPoolExecutor`` does it.
"""

import concurrent.futures as _cf
import io
import pickle
import sys
import traceback

__all__ = [
    "PyParallelError", "FreezeError", "TransferError", "WorkerError",
    "WorkerImportError", "WorkerInitError", "BrokenPool", "RemoteTraceback",
]


class PyParallelError(Exception):
    """Base class of pyparallel's own errors."""


class FreezeError(PyParallelError, TypeError):
    """freeze() met a value it cannot freeze; the message names where."""


class TransferError(PyParallelError, TypeError):
    """A value could not be sent to, or back from, a worker interpreter."""


class WorkerError(PyParallelError):
    """A worker raised an exception that could not be sent back as itself.

    ``remote_type`` holds the qualified name of the original type."""

    remote_type = None


class WorkerImportError(PyParallelError, ImportError):
    """A worker could not import what a task needs (a module that refuses
    sub-interpreters, or a callable it cannot find)."""


class WorkerInitError(PyParallelError, RuntimeError):
    """A worker failed while starting, so it cannot run tasks."""


class BrokenPool(PyParallelError, _cf.BrokenExecutor):
    """A worker's initializer raised: the pool cannot run tasks any more
    (the concurrent.futures.BrokenExecutor of pyparallel).  The worker's
    traceback is attached as ``__cause__``."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, as text."""

    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return self.tb


if sys.version_info < (3, 13):
    class _Unpickler(pickle.Unpickler):
        # 3.12 workers cannot load _datetime and use the pure-Python
        # datetime, whose classes pickle as _pydatetime.X: they are
        # datetime.X here.
        def find_class(self, module, name):
            if module == "_pydatetime":
                module = "datetime"
            return super().find_class(module, name)

    def loads(data):
        """pickle.loads for values coming from another interpreter."""
        return _Unpickler(io.BytesIO(data)).load()
else:
    loads = pickle.loads


_SUBINTERPRETER_HINTS = ("subinterpreter", "sub-interpreter")


def explain(exc):
    """Return a clearer exception for the common failures of worker code."""
    if isinstance(exc, ImportError) and not isinstance(exc, WorkerImportError):
        text = str(exc)
        if any(h in text for h in _SUBINTERPRETER_HINTS):
            name = exc.name
            if not name and text.startswith("module "):
                name = text.split()[1]
            new = WorkerImportError(
                f"{name or 'a module'} cannot be imported in a pyparallel "
                f"worker: it does not support sub-interpreters with their own "
                f"GIL (PEP 684) ({text}). Use it only in the main interpreter "
                f"(call it through pyparallel.call_from_main_thread_and_wait, "
                f"or pass its results to tasks as plain data), or run that work "
                f"in a concurrent.futures.ProcessPoolExecutor.",
                name=name)
            new.__cause__ = exc
            if name:
                worker = sys.modules.get("pyparallel._worker")
                if worker is not None:
                    worker.refused(name, str(new))
            return new
    return exc


def pack_exception(exc):
    """(pickled exception or None, type name, message, traceback text)."""
    exc = explain(exc)
    try:
        tb = "".join(traceback.format_exception(exc))
    except Exception:  # a broken __str__ must not hide the original error
        tb = ""
    try:
        data = pickle.dumps(exc, pickle.HIGHEST_PROTOCOL)
        pickle.loads(data)  # some exceptions pickle but do not unpickle
    except Exception:
        data = None
    cls = type(exc)
    try:
        message = str(exc)
    except Exception:
        message = "<exception str() failed>"
    return (data, f"{cls.__module__}.{cls.__qualname__}", message, tb)


def broken_pool(tb):
    """The BrokenPool for a pool whose initializer failed with traceback tb."""
    exc = BrokenPool("a pyparallel worker's initializer raised, so the pool "
                     "cannot run tasks (see the worker's traceback above); "
                     "fix the initializer and start a new executor")
    exc.__cause__ = RemoteTraceback(tb)
    return exc


def rebuild(data, type_name, message, tb):
    """The exception to raise on the receiving side of pack_exception()."""
    exc = None
    if data is not None:
        try:
            exc = loads(data)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        own = globals().get(type_name.rpartition(".")[2]) if type_name.startswith(__name__ + ".") else None
        if isinstance(own, type) and issubclass(own, PyParallelError):
            exc = own(message)
        else:
            exc = WorkerError(f"{type_name}: {message}")
            exc.remote_type = type_name
    if tb:
        exc.__cause__ = RemoteTraceback(tb)
    return exc
