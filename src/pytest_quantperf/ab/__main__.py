"""``python -m pytest_quantperf.ab ARGS`` is ``quantperf ab ARGS``."""
import sys

from ..cli.ab import main

sys.exit(main())
