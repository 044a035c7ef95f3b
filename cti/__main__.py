"""``python -m cti`` is the ``cti`` command."""

import sys

from cti.cli import main

if __name__ == "__main__":
    sys.exit(main())
