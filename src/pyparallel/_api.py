"""The work API: Future, Executor, and the module-level default executor."""

import atexit
import concurrent.futures as _cf
import itertools
import os
import sys
import threading
import types

from . import _errors
from . import _pyparallel as _pp
from . import _worker
from ._errors import TransferError

__all__ = ["Future", "Executor", "submit", "map", "configure", "shutdown"]


class Future(_cf.Future):
    """A concurrent.futures.Future whose task runs in a worker interpreter.

    result() and exception() wait on the task itself (spinning briefly, then
    sleeping on a futex), so a caller that is already waiting gets its result
    without a trip through the completion thread."""

    _task = None

    def cancel(self):
        task = self._task
        if task is not None and not task.try_cancel():
            return False
        return super().cancel()

    def running(self):
        task = self._task
        return (task is not None and task.running) or super().running()

    def _wait_task(self, timeout):
        task = self._task
        if task is not None and not self.done() and not task.wait(timeout):
            raise TimeoutError()

    def result(self, timeout=None):
        self._wait_task(timeout)
        return super().result(timeout)

    def exception(self, timeout=None):
        self._wait_task(timeout)
        return super().exception(timeout)


def _classify(fn):
    """How workers find fn: (module, qualname), or None to pickle it.

    Raises TransferError for callables no worker could ever find."""
    if not isinstance(fn, (types.FunctionType, types.BuiltinFunctionType, type)):
        return None
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    if "<lambda>" in qualname or "<locals>" in qualname:
        what = "a lambda" if "<lambda>" in qualname else "a nested function or closure"
        raise TransferError(
            f"cannot run {fn!r} in a worker: workers import callables by "
            f"module and qualified name, and {what} has none. Define it at "
            f"the top level of a module (or of your main script).")
    obj = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if obj is not fn:
        raise TransferError(
            f"cannot run {fn!r} in a worker: it is not reachable as "
            f"{module}.{qualname}, which is how workers find it. Define it at "
            f"the top level of a module and do not rebind its name.")
    if module == "__main__":
        main = sys.modules["__main__"]
        if not getattr(main, "__file__", None) and getattr(main, "__spec__", None) is None:
            raise TransferError(
                f"cannot run {fn!r} in a worker: it was defined in an "
                f"interactive session (or python -c), which workers cannot "
                f"import. Put it in a module file and import it.")
    return (module, qualname)


def _worker_config():
    main = sys.modules.get("__main__")
    # Workers run main's script as __mp_main__: objects of its classes come
    # back named so, and must unpickle here as main's own.
    if main is not None:
        sys.modules.setdefault("__mp_main__", main)
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    return {
        "sys_path": [p for p in sys.path if isinstance(p, str)],
        "main_path": os.path.abspath(path) if path else None,
        "main_name": getattr(spec, "name", None),
    }


# Pools whose workers may still run; the exit hook joins them.
_live_pools = set()
_live_lock = threading.Lock()


def _check_workers(n, name="max_workers"):
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an int, not {type(n).__name__}")
    if n <= 0:
        raise ValueError(f"{name} must be greater than 0")
    return n


def _chunks(size, iterables):
    it = zip(*iterables)
    while True:
        chunk = tuple(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


def _check_initializer(initializer, initargs):
    if initializer is None:
        return None
    if not callable(initializer):
        raise TypeError("initializer must be a callable")
    _classify(initializer)       # TransferError now for lambdas and closures
    return (initializer, tuple(initargs))


class Executor(_cf.Executor):
    """A concurrent.futures.Executor whose workers are own-GIL interpreters.

    Executor(max_workers=None, initializer=None, initargs=()): max_workers
    defaults to the number of CPUs this process may run on.  Workers start
    on the first submit(); each calls initializer(*initargs) once, before
    its first task.  If an initializer raises, the pool is broken: pending
    and later tasks fail with BrokenPool (a concurrent.futures
    BrokenExecutor), carrying the worker's traceback."""

    def __init__(self, max_workers=None, initializer=None, initargs=(), *,
                 spin_us=50):
        if max_workers is None:
            max_workers = _pp.cpu_count()
        self._max_workers = _check_workers(max_workers)
        self._init = _check_initializer(initializer, initargs)
        self._spin_us = int(spin_us)
        self._pool = None
        self._lock = threading.Lock()
        self._shutdown = False

    @property
    def max_workers(self):
        return self._max_workers

    def _get_pool(self):
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._shutdown:
                    raise RuntimeError("cannot schedule new futures after shutdown")
                if self._pool is None:
                    if not _pp._is_main_interpreter():
                        raise RuntimeError(
                            "worker pools are created by the main interpreter only")
                    self._pool = _pp.Pool(self._max_workers, _worker_config(),
                                          _classify, self._spin_us, self._init)
                    with _live_lock:
                        _live_pools.add(self._pool)
                pool = self._pool
        return pool

    def submit(self, fn, /, *args, **kwargs):
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if not callable(fn):
            raise TypeError(f"submit() needs a callable, not {type(fn).__name__}")
        pool = self._get_pool()
        if self._init is not None and pool.broken is not None:
            raise _errors.broken_pool(pool.broken)
        fut = Future()
        fut._task = pool.submit(fut, fn, args, kwargs or None)
        return fut

    submit.__doc__ = _cf.Executor.submit.__doc__

    def map(self, fn, *iterables, timeout=None, chunksize=None):
        """Like concurrent.futures.Executor.map.  chunksize=None picks a size
        that gives each worker about four chunks when the inputs have a
        length, else 1."""
        if chunksize is None:
            try:
                n = min((len(it) for it in iterables), default=0)
            except TypeError:
                n = 0
            chunksize = max(1, n // (self._max_workers * 4)) if n else 1
        elif isinstance(chunksize, bool) or not isinstance(chunksize, int):
            raise TypeError("chunksize must be an int")
        elif chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        # By name when possible (a clear error now for lambdas and closures).
        ref = _classify(fn) or fn
        results = super().map(_worker.run_chunk, itertools.repeat(ref),
                              _chunks(chunksize, iterables), timeout=timeout)
        return itertools.chain.from_iterable(results)

    def shutdown(self, wait=True, *, cancel_futures=False):
        with self._lock:
            self._shutdown = True
            pool = self._pool
        if pool is not None:
            pool.shutdown(wait, cancel_futures)
            if pool.joined:
                with _live_lock:
                    _live_pools.discard(pool)

    shutdown.__doc__ = _cf.Executor.shutdown.__doc__

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None and not getattr(self, "_shutdown", True):
            pool.shutdown(False)


# ---- the default executor behind pyparallel.submit / map ----------------

_default = None
_default_workers = None
_default_init = None
_default_stopped = False
_default_lock = threading.Lock()


def configure(workers=None, safety=None, initializer=None, initargs=()):
    """Set up the default executor used by pyparallel.submit(), map() and
    the I/O API.

    workers: how many worker interpreters (default: the CPUs this process may
    run on).  safety=True turns on the safety-proof mode (frozen memory is
    write-protected); it must come before any worker starts, like the
    PYPARALLEL_SAFETY=1 environment variable.  initializer(*initargs) runs
    once in each worker before its first task (as for Executor).  Raises
    RuntimeError while the default executor is running: call shutdown()
    first."""
    global _default, _default_workers, _default_init, _default_stopped
    with _default_lock:
        if _default is not None and _default._pool is not None and not _default._shutdown:
            raise RuntimeError(
                "pyparallel is already running with "
                f"{_default.max_workers} workers: call pyparallel.shutdown() "
                "before configure()")
        if workers is not None:
            _check_workers(workers, "workers")
        init = _check_initializer(initializer, initargs)
        if safety:
            _pp.enable_safety()
        _default_workers = workers
        _default_init = init
        _default = None
        _default_stopped = False


def _executor():
    global _default
    ex = _default
    if ex is None:
        with _default_lock:
            if _default_stopped:
                raise RuntimeError(
                    "pyparallel was shut down: call pyparallel.configure() to "
                    "start new workers")
            if _default is None:
                _default = Executor(_default_workers)
                _default._init = _default_init
            ex = _default
    return ex


def submit(fn, /, *args, **kwargs):
    """Run fn(*args, **kwargs) in a worker; returns a concurrent.futures.Future."""
    ex = _default if _default is not None else _executor()
    if ex._shutdown:
        raise RuntimeError("pyparallel was shut down: call pyparallel.configure() "
                           "to start new workers")
    return ex.submit(fn, *args, **kwargs)


def map(fn, *iterables, chunksize=None, timeout=None):
    """Like the builtin map, run by the workers; results come in order."""
    return _executor().map(fn, *iterables, timeout=timeout, chunksize=chunksize)


def shutdown(wait=True, cancel_futures=False):
    """Stop the default executor's workers (see Executor.shutdown)."""
    global _default_stopped
    with _default_lock:
        ex = _default
        _default_stopped = True
    if ex is not None:
        ex.shutdown(wait, cancel_futures=cancel_futures)


def _at_exit():
    # Every submitted task runs before the interpreter exits, as with the
    # concurrent.futures executors: a script that submits and ends still
    # gets its work done.  A Ctrl-C while waiting leaves at once (a running
    # task cannot be interrupted, and an interpreter that is still running
    # cannot be ended).
    with _live_lock:
        pools = list(_live_pools)
    try:
        pending = sum(pool.pending for pool in pools)
        if pending and isinstance(getattr(sys, "last_value", None), KeyboardInterrupt):
            sys.stderr.write("pyparallel: running the %d submitted task(s) not "
                             "yet started before exiting; Ctrl-C again to exit "
                             "at once\n" % pending)
            sys.stderr.flush()
        for pool in pools:
            pool.shutdown(True, False)
        # Only this thread is left to touch frozen data; finalisation
        # rewrites interned strings, so lift the safety-mode protection.
        _pp._exit_unprotect()
    except KeyboardInterrupt:
        try:
            sys.stdout.flush()
            sys.stderr.write("pyparallel: interrupted while waiting for running "
                             "tasks to finish; exiting without waiting\n")
            sys.stderr.flush()
        finally:
            os._exit(130)


if _pp._is_main_interpreter():
    atexit.register(_at_exit)
