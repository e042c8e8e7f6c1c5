"""One lazy-load idiom for every model here (the detector, the embedder, the ensemble, the
analyzer that holds them), as immich's ``InferenceModel`` has it: a model object is cheap to
build; ``load()`` reads its weights once, is idempotent and safe to call from several
threads, and returns the object; every method that needs the weights starts with
``self.load()``. A subclass gives only ``_load()``. A ``_load`` that raises leaves the object
unloaded, so the next call tries again (and raises again, with the same clear error).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Self


class LazyModel(ABC):
    # Loading is rare: one lock for all keeps fork-time state simple. Re-entrant, because a
    # model that holds models (the analyzer) loads them inside its own load().
    _load_lock = threading.RLock()
    _loaded: bool = False

    @abstractmethod
    def _load(self) -> None:
        """Read the weights; raise a clear error (e.g. NoTrainedWeights) when they are missing."""

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> Self:
        if not self._loaded:
            with LazyModel._load_lock:
                if not self._loaded:
                    self._load()
                    self._loaded = True
        return self
