"""Rows looked up a moment ago, kept so that the requests right after skip the database.

A segmentation request should cost the network's time, not database round trips: the API key of every
request and the model of every segment request are read from the database by the first request and then
kept ``ttl_s`` seconds (``GTC_LOOKUP_CACHE_SECONDS``; 0 turns this off). What it means for a user: a key
revoked in the database, or a model whose dataset another API process deleted, still works in this
process for at most that long; deleting a dataset through this process forgets its models at once.

Kept rows are detached from every session; ``get`` merges one into the asking request's session without
SQL (SQLAlchemy's ``merge(load=False)``, made for caches), so each request works on its own instances.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from sqlalchemy.orm import Session

R = TypeVar("R")


class RecentRows(Generic[R]):
    """Up to ``max_items`` rows by key, each for ``ttl_s`` seconds from its lookup (least recently used
    dropped first). Thread-safe."""

    def __init__(
        self, ttl_s: float, max_items: int = 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if ttl_s < 0 or max_items < 1:
            raise ValueError(f"ttl_s must be >= 0 and max_items >= 1, got {ttl_s}, {max_items}.")
        self.ttl_s, self.max_items, self._clock = ttl_s, max_items, clock
        self._items: OrderedDict[Hashable, tuple[R, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, session: Session, key: Hashable) -> R | None:
        """The row kept under ``key``, as an instance of ``session``; None when absent or expired."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            row, expires = item
            if self._clock() >= expires:
                del self._items[key]
                return None
            self._items.move_to_end(key)
        return session.merge(row, load=False)

    def remember(self, session: Session, key: Hashable, row: R, *loaded: object) -> R:
        """Keep ``row`` under ``key`` (with ``loaded``, the rows its loaded relationships hold) and return
        it as an instance of ``session`` again. ``row`` must be clean (as read, not modified)."""
        if self.ttl_s == 0:
            return row
        for instance in (row, *loaded):
            session.expunge(instance)
        with self._lock:
            self._items[key] = (row, self._clock() + self.ttl_s)
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return session.merge(row, load=False)

    def forget(self, matches: Callable[[R], bool]) -> None:
        """Drop every kept row for which ``matches`` is true."""
        with self._lock:
            for key in [k for k, (row, _) in self._items.items() if matches(row)]:
                del self._items[key]
