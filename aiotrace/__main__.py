"""``python -m aiotrace``: the same as the ``aiotrace`` command."""

from ._cli import main

raise SystemExit(main())
