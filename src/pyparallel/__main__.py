"""python -m pyparallel serve ... (the same as the pyparallel command)."""
import sys

from .cli import main

sys.exit(main())
