"""``python -m aiotrace``: the same as the ``aiotrace`` command."""

from ._cli.main import main

raise SystemExit(main())
