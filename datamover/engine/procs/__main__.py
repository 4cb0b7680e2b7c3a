"""Entry point of a worker process (``engine.procs.worker``): the classes it sends
back must be pickled under their own module's name, not ``__main__``."""

import sys

from datamover.engine.procs.worker import main

main(sys.argv[1:])
