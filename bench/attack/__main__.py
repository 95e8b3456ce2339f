"""``python -m bench.attack``: see ``bench.attack.run``."""

from bench.attack.run import main

raise SystemExit(main())
