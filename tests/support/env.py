"""Render a ``Settings`` object as the ``GTC_*`` environment a subprocess (worker, CLI) reads."""

from __future__ import annotations

import os

from app.settings import Settings


def settings_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) without any GTC_* variable, plus every set field of ``settings``.

    ``Settings(**{k.removeprefix("GTC_").lower(): v ...})`` read back from the result equals ``settings``.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("GTC_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue  # unset optional fields keep their defaults in the subprocess
        rendered = ("true" if value else "false") if isinstance(value, bool) else str(value)
        env[f"GTC_{name.upper()}"] = rendered
    return env
