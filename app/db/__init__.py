"""Persistence: SQLAlchemy models (``app.db.models``) and engines/sessions (``app.db.session``)."""

from app.db.session import make_engine, make_session_factory, session_scope, upgrade

__all__ = ["make_engine", "make_session_factory", "session_scope", "upgrade"]
