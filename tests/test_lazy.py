"""The one lazy-load idiom (detector.lazy.LazyModel): once, from several threads, nested, and
again after a failed load."""

import threading
import time

import pytest

from detector.lazy import LazyModel


class Counted(LazyModel):
    def __init__(self, inner: LazyModel | None = None, fail: int = 0):
        self.inner, self.fail, self.calls = inner, fail, 0

    def _load(self) -> None:
        self.calls += 1
        time.sleep(0.05)  # long enough for the other threads to arrive while it loads
        if self.inner is not None:
            self.inner.load()  # a model holding models loads them inside its own load
        if self.calls <= self.fail:
            raise RuntimeError("weights missing")


def test_loaded_once_from_many_threads_and_nested_loads_do_not_deadlock():
    inner = Counted()
    outer = Counted(inner)
    threads = [threading.Thread(target=outer.load, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)  # a deadlock leaves them waiting
    assert outer.loaded and inner.loaded and outer.calls == inner.calls == 1
    assert outer.load() is outer and outer.calls == 1


def test_a_failed_load_leaves_it_unloaded_and_is_tried_again():
    m = Counted(fail=1)
    with pytest.raises(RuntimeError):
        m.load()
    assert not m.loaded
    m.load()
    assert m.loaded and m.calls == 2
