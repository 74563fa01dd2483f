"""``python -m einspace`` is the ``einspace`` command."""

import sys

from .cli import main

sys.exit(main())
