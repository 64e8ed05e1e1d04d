"""``python -m cache_operator run | apply | validate``."""

import sys

from .cli import main

sys.exit(main())
