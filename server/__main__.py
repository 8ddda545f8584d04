"""``python -m server`` is the ``unmask`` command."""

from server.cli import main

raise SystemExit(main())
