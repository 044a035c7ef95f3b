"""``python -m cti`` is the ``cti`` command: the one module of the core that reaches the
assembly, as an entry point must (import-linter's one ignored import, see pyproject.toml)."""

import sys

from cti_app.cli import main

if __name__ == "__main__":
    sys.exit(main())
