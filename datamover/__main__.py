import sys

from datamover.cli import main

sys.exit(main())
