"""``python -m pytest_quantperf``: the ``quantperf`` command."""
import sys

from .cli import main

sys.exit(main())
