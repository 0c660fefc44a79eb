"""Code that runs inside each worker interpreter.

The C runtime imports this module in every worker at start-up, calls
init() with main's configuration, then resolve() once per callable.
"""

import importlib
import os
import pickle
import sys
import types

from . import _errors
from ._errors import WorkerImportError

pack_exception = _errors.pack_exception
broken_error = _errors.broken_pool

_main_path = None
_main_name = None
_main_ready = False


class _Refuser:
    """A meta path finder that refuses, with a clear error, the extension
    modules a worker cannot load -- before CPython's import machinery sees
    them again.  On 3.12.1, a second attempt to import a module that was
    once refused in a sub-interpreter aborts the process, and some modules
    crash it when the interpreter that loaded them ends."""

    def __init__(self):
        self.reasons = {}

    def refuse(self, name, reason):
        self.reasons.setdefault(name, reason)

    def find_spec(self, name, path=None, target=None):
        reason = self.reasons.get(name)
        if reason is not None:
            raise WorkerImportError(reason, name=name)
        return None


_refuser = _Refuser()


class _MainImportsFirst:
    """CPython 3.12 only: an extension module is imported by the main
    interpreter before a worker tries it.  On 3.12.1, when a sub-interpreter
    is refused a single-phase extension module first, a later import of that
    module by the main interpreter corrupts memory ("double free or
    corruption"); in the other order the refusal is clean."""

    def __init__(self):
        self.seen = set()

    def find_spec(self, name, path=None, target=None):
        if name in self.seen or name in sys.modules:
            return None
        self.seen.add(name)
        from importlib.machinery import ExtensionFileLoader, PathFinder
        spec = PathFinder.find_spec(name, path)
        if spec is not None and isinstance(spec.loader, ExtensionFileLoader):
            from . import _pyparallel
            _pyparallel._call_in_main(_import_in_main, name)
        return None            # the usual finders take it from here


def _import_in_main(name):
    # Runs in the main interpreter; whether it works there is its own
    # business: the worker's import reports its own outcome.
    try:
        importlib.import_module(name)
    except Exception:
        pass


def refused(name, message):
    """Remember that name cannot be imported here (called by _errors)."""
    _refuser.refuse(name, message)


def init(config):
    global _main_path, _main_name
    _main_path = config.get("main_path")
    _main_name = config.get("main_name")
    if sys.version_info < (3, 13):
        # asyncio falls back to its pure-Python implementation without the
        # _asyncio accelerator, whose 3.12 version crashes at interpreter end.
        sys.modules["_asyncio"] = None
        # zoneinfo's accelerator needs _datetime, which 3.12 refuses here;
        # zoneinfo then uses its pure-Python implementation.
        sys.modules["_zoneinfo"] = None
        _refuser.refuse(
            "_ssl", "ssl cannot be used in a pyparallel worker on CPython "
            "3.12: a CPython 3.12 bug corrupts memory when an interpreter "
            "that imported _ssl ends. Use CPython 3.13, or do this work in "
            "the main interpreter.")
        sys.meta_path.insert(0, _MainImportsFirst())
    sys.meta_path.insert(0, _refuser)


def fini():
    """Runs in the worker just before its interpreter ends."""
    # threading.current_thread() in a worker thread made a dummy Thread
    # whose cleanup object lives in a thread-local; drop it while the
    # threading module still works (3.13 otherwise prints an ignored
    # TypeError from _DeleteDummyThreadOnDel.__del__ at interpreter end).
    threading = sys.modules.get("threading")
    info = getattr(threading, "_thread_local_info", None)
    if info is not None:
        try:
            del info._track_dummy_thread_ref
        except AttributeError:
            pass


def _load_main():
    """Re-import main's script as __mp_main__, as multiprocessing's spawn
    does: its `if __name__ == "__main__":` block does not run again."""
    global _main_ready
    if _main_ready:
        return sys.modules["__main__"]
    import runpy
    current = sys.modules["__main__"]
    if _main_name and not (_main_name == "__main__" or _main_name.endswith(".__main__")):
        content = runpy.run_module(_main_name, run_name="__mp_main__", alter_sys=False)
    elif _main_path and os.path.exists(_main_path):
        content = runpy.run_path(_main_path, run_name="__mp_main__")
    else:
        raise WorkerImportError(
            "workers cannot import functions defined in __main__ here: the "
            "main program is not a file (an interactive session, python -c, "
            "or a notebook). Move the function into a module and import it.")
    module = types.ModuleType("__mp_main__")
    module.__dict__.update(content)
    module.__dict__["__pyparallel_previous_main__"] = current
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module
    _main_ready = True
    return module


def _import(modname):
    try:
        return importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name != modname.split(".")[0] and exc.name != modname:
            raise
        # main's sys.path may have grown since this worker started.
        from . import _pyparallel
        path = _pyparallel._call_in_main(_main_sys_path)
        if path == sys.path:
            raise
        sys.path[:] = path
        importlib.invalidate_caches()
        return importlib.import_module(modname)


def _main_sys_path():
    # Runs in the main interpreter.
    return [p for p in sys.path if isinstance(p, str)]


def resolve(modname, qualname):
    """Find a callable by module and qualified name."""
    try:
        if modname == "__main__":
            obj = _load_main()
        else:
            obj = _import(modname)
    except ImportError as exc:
        raise _errors.explain(exc) from None
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise WorkerImportError(
                f"worker cannot find {modname}.{qualname}: the module imported "
                f"in the worker has no such attribute. Workers import callables "
                f"by name, so define it at the top level of the module (not "
                f"only under `if __name__ == '__main__':`).",
                name=modname) from None
    return obj


_chunk_fns = {}


def run_chunk(fn, chunk):
    """Runs fn over a chunk of argument tuples (Executor.map's chunksize).
    fn is a callable, or (module, qualname) to resolve here."""
    if type(fn) is tuple:
        f = _chunk_fns.get(fn)
        if f is None:
            f = _chunk_fns[fn] = resolve(*fn)
        fn = f
    return [fn(*args) for args in chunk]


def loads(data):
    """pickle.loads for values from main: objects of main's __main__ module
    need main's script imported here first (as __mp_main__)."""
    data = bytes(data)
    if not _main_ready and b"__main__" in data:
        _load_main()
    return pickle.loads(data)


def log_callback_error(what, transport, exc):
    """Logs an exception that escaped a protocol or timer callback in this
    worker (logger "pyparallel"; with no logging set up, Python's last-resort
    handler prints it to stderr with its traceback)."""
    import logging
    from . import _pyparallel
    where = f" on {transport!r}" if transport is not None else ""
    logging.getLogger("pyparallel").error(
        "exception in %s%s (worker %s)", what, where, _pyparallel.worker_id(),
        exc_info=(type(exc), exc, exc.__traceback__))
