"""``python -m agents.cli``: the ``igb`` command line."""

import sys

from agents.cli import main

sys.exit(main())
