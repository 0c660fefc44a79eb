"""pyparallel.wiki's routes as a WSGI app, for bench/bench_wiki.py's
process-per-worker peers (gunicorn sync, gunicorn gthread, granian WSGI).

Every worker process that imports this module loads its own copy of the
index (the dump's saved .ppindex), as a WSGI deployment of the same code
would: that is the comparison.  The dump is named by the environment:

    PYPARALLEL_WIKI_DUMP=/path/to/dump.xml gunicorn -w 2 wiki_app:app

bench_wiki.py runs the peers in .venv-bench with PYTHONPATH set to a
temporary folder that holds only a symbolic link `pyparallel` to .venv's
installed package (the same CPython 3.13 build), so nothing is installed
into .venv-bench for it.
"""

import os

from pyparallel.wiki import make_wsgi

app = make_wsgi(os.environ["PYPARALLEL_WIKI_DUMP"])
