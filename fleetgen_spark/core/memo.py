"""A memo of a pure function's results under a memory budget, least recently used out first.

Generation is a pure function of (seed, interval, block), so a memo never changes a row: it only
spares recomputing what a micro-batch of many intervals asks for again and again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["BudgetMemo"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BudgetMemo(Generic[K, V]):
    """Values by key, at most ``budget`` bytes of them (as ``nbytes`` measures a value when it is put),
    the least recently put out first; the newest always stays, however large.

    ``take`` removes a value and ``put`` puts one back as the newest, so a value that grows in place
    (a history folded further) is measured again when it returns; ``get`` leaves it where it is held.
    """

    def __init__(self, budget: int, nbytes: Callable[[V], int]) -> None:
        self.budget = budget
        self.held = 0
        self._nbytes = nbytes
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value of ``key``, now the newest; None when it is not held."""
        found = self._entries.get(key)
        if found is None:
            return None
        self._entries.move_to_end(key)
        return found[0]

    def take(self, key: K) -> V | None:
        """The value of ``key``, removed from the memo (``put`` it back); None when it is not held."""
        found = self._entries.pop(key, None)
        if found is None:
            return None
        self.held -= found[1]
        return found[0]

    def put(self, key: K, value: V) -> None:
        """Hold ``value`` as the newest, then drop the oldest while the memo is over its budget."""
        size = self._nbytes(value)
        old = self._entries.pop(key, None)
        if old is not None:
            self.held -= old[1]
        self._entries[key] = (value, size)
        self.held += size
        while self.held > self.budget and len(self._entries) > 1:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.held -= dropped

    def clear(self) -> None:
        """Forget every value."""
        self._entries.clear()
        self.held = 0
