"""``python -m pytest_quantperf.cli``: the ``quantperf`` command, as ``python -m pytest_quantperf``."""
import sys

from . import main

sys.exit(main())
