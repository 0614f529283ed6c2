"""Python's full garbage collections, run between frames rather than inside one.

CPython's collector walks every tracked object of the oldest generation when it runs a full
collection, and it starts one on its own whenever enough young objects have survived: in the
analyzer at 1024 pixels that walk took 15-22 ms and landed inside a frame's analysis, twice in
two cases (measured with ``gc.callbacks``; the younger generations' collections take 0.06 and
0.6 ms at the median). A frame that waits 20 ms for the collector is an alarm 20 ms late.

:class:`CollectionPacing` takes the full collection out of the collector's hands and runs it
where a frame is not waiting: after a result is sent, at most every ``every_s`` seconds. What
the process made before the loop (imports, the compiled-in tables, the sockets: about 84,000
objects) is frozen (``gc.freeze``) and never walked again, so the collection that is run walks
only what the session has made since: 0.09 ms at the median over ten 1024-pixel cases (one core).
Young generations are still collected automatically: they are cheap and keep the heap from
growing between full collections.

This relies on CPython's generational collector as in 3.10-3.13 (the locked interpreter is
3.11), where the third threshold gates the full collection. CPython 3.14's incremental
collector reads its thresholds differently; there the pacing may not hold the full collection
back (``tests/test_collection.py`` would say so).
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable

# ``gc.set_threshold``'s third value: full collections after this many middle-generation
# ones. CPython takes it as a C int; this many never comes in a session (one every 10^6 s).
_NEVER = 2**31 - 1
FULL_COLLECTION_EVERY_S = 1.0  # cycles a session drops are reclaimed within a second


class CollectionPacing:
    """While entered (a ``with`` block): no automatic full collection in this process;
    :meth:`between_frames` runs one when ``every_s`` seconds have passed since the last.
    Leaving restores the collector's thresholds and unfreezes what was frozen.

    The collector's settings are the process's: analyzers run side by side in one process
    (threads) share them; the first to enter sets them, the last to leave restores them."""

    _lock = threading.Lock()
    _entered = 0  # pacings entered in this process
    _saved_threshold: tuple[int, int, int] | None = None

    def __init__(self, every_s: float = FULL_COLLECTION_EVERY_S, clock: Callable[[], float] = time.monotonic):
        if not every_s > 0:
            raise ValueError(f"every_s must be positive, not {every_s!r}")
        self.every_s = every_s
        self._clock = clock
        self._active = False
        self._last = 0.0
        self.seconds: list[float] = []  # each full collection's duration (wall seconds)

    def __enter__(self) -> CollectionPacing:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> CollectionPacing:
        """What entering does, for a loop whose clean-up is already a ``finally``. Starting one
        already started changes nothing."""
        if self._active:
            return self
        cls = CollectionPacing
        self._last = self._clock()  # first: nothing is changed if the clock fails
        with cls._lock:
            if cls._entered == 0:
                saved = gc.get_threshold()
                try:
                    gc.collect()  # what is garbage now is not frozen with the rest
                    gc.freeze()
                    gc.set_threshold(saved[0], saved[1], _NEVER)
                except BaseException:  # an interrupt while setting up: the collector as it was
                    gc.set_threshold(*saved)
                    gc.unfreeze()
                    raise
                cls._saved_threshold = saved
            cls._entered += 1
        self._active = True
        return self

    def stop(self) -> None:
        """What leaving does; stopping one not started, or twice, changes nothing."""
        if not self._active:
            return
        self._active = False
        cls = CollectionPacing
        with cls._lock:
            cls._entered -= 1
            if cls._entered == 0 and cls._saved_threshold is not None:
                gc.set_threshold(*cls._saved_threshold)
                gc.unfreeze()
                cls._saved_threshold = None

    def between_frames(self) -> float | None:
        """Run a full collection if one is due; its duration in seconds, else None. Call it after
        a frame's result has gone out, never while a frame is being analysed."""
        now = self._clock()
        if not self._active or now - self._last < self.every_s:
            return None
        started = time.perf_counter()
        gc.collect()
        took = time.perf_counter() - started
        self._last = self._clock()
        self.seconds.append(took)
        return took
