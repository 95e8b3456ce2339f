"""``python -m gtcorrect``: the engine commands without the service."""

from gtcorrect.cli import main

raise SystemExit(main())
