"""pyparallel: PyParallel for modern CPython.

Python callables run in parallel on worker threads, each owning a
sub-interpreter with its own GIL (PEP 684).  Data built by the main
interpreter is frozen -- deeply immutable and immortal (PEP 683) -- and every
worker reads it by pointer, with no copies and no reference-count writes.

    import pyparallel

    words = pyparallel.freeze({"apple": 3, "pear": 5})

    def count(words, key):          # at module top level
        return words[key]

    print(pyparallel.submit(count, words, "pear").result())
"""

import os as _os

from . import _pyparallel
from . import _errors
from ._errors import (BrokenPool, FreezeError, PyParallelError,
                      RemoteTraceback, TransferError, WorkerError,
                      WorkerImportError, WorkerInitError)

_pyparallel._init(_errors)

from ._api import Executor, Future, configure, map, shutdown, submit  # noqa: E402
from ._io import Server, client, run, server, stop, timer  # noqa: E402
from ._pyparallel import (FrozenMap, call_from_main_thread,  # noqa: E402
                          call_from_main_thread_and_wait, cpu_count, freeze,
                          is_frozen, is_parallel_context, worker_id)

__all__ = [
    "freeze", "is_frozen", "FrozenMap",
    "submit", "map", "Executor", "Future", "configure", "shutdown",
    "server", "client", "timer", "run", "stop", "Server",
    "call_from_main_thread", "call_from_main_thread_and_wait",
    "is_parallel_context", "worker_id", "cpu_count", "safety_enabled",
    "PyParallelError", "FreezeError", "TransferError", "WorkerError",
    "WorkerImportError", "WorkerInitError", "BrokenPool", "RemoteTraceback",
]


def safety_enabled():
    """True when frozen memory is write-protected (safety-proof mode)."""
    return _pyparallel.safety_enabled()


if _os.environ.get("PYPARALLEL_SAFETY", "") not in ("", "0") and _pyparallel._is_main_interpreter():
    _pyparallel.enable_safety()
