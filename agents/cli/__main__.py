"""``python -m agents.cli``: the ``igb`` command line."""

import sys

from agents.cli import main

if __name__ == "__main__":  # importing the module (docs tools, test collection) runs nothing
    sys.exit(main())
