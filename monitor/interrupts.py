"""Ctrl-C and a service manager's stop, taken only where the source waits.

Python runs a signal's handler in the main thread between two bytecodes, wherever it stands;
the run turns SIGINT and SIGTERM into KeyboardInterrupt. Raised inside a send it could leave a
multipart message half sent (pyzmq sends the parts one by one: the source's end message then
went out appended to it, garbled, and the logger never heard the run end), a frame sent but not
counted (the end then said one frame fewer than the logger had logged), or the end itself
unsent. Each closed a cleanly stopped session incomplete ("logger exit 3").

So while the source publishes (:func:`stops_held_in`) a stop is held, and taken where the source
waits (:func:`interruptible`: for the next frame, for the pace, for its consumers), where nothing
is half done; one that came while held is taken at the next such wait, within a frame. The
handlers are installed once for the whole of publishing, not per send: swapping handlers per
send can itself be cut by a signal and leave one swapped for good (a stop then lost). A handler
left installed by such a cut passes every signal on as the one it replaced would.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_active = False  # inside stops_held_in, in the main thread
_holding = 0  # while active: a stop is held unless an interruptible block has set this to 0
_pending: list[int] = []  # signals that came while held, in order
_replaced: dict[int, object] = {}  # signal -> the handler the dispatcher passes it on to


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _pass_on(signum: int) -> None:
    """Do what the handler the dispatcher replaced would have done with ``signum``."""
    handler = _replaced.get(signum, signal.SIG_DFL)
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:  # end the process as the signal would have
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _dispatch(signum: int, _frame) -> None:
    if _active and _holding:
        _pending.append(signum)
    else:
        _pass_on(signum)


def _take_pending() -> None:
    """The signals held, each once, in the order they came (the first that raises ends it)."""
    waiting = list(dict.fromkeys(_pending))
    _pending.clear()
    for signum in waiting:
        _pass_on(signum)


@contextmanager
def held():
    """A block no stop may cut even where a stop that cut an :func:`interruptible` block at its
    very edge (inside contextlib's enter or exit) left the hold down: the source's end message.
    Inside :func:`stops_held_in` all but the waits is held already; outside it does nothing."""
    global _holding
    if not (_active and _main_thread()):
        yield
        return
    _holding += 1
    try:
        yield
    finally:
        _holding -= 1
    if not _holding and _pending:
        _take_pending()


@contextmanager
def interruptible():
    """A wait a stop may cut at once (inside :func:`stops_held_in`; elsewhere every block is).
    A stop held before it is taken as it begins."""
    global _holding
    if not (_active and _main_thread()):
        yield
        return
    saved, _holding = _holding, 0
    try:
        if _pending:
            _take_pending()
        yield
    finally:
        _holding = saved


@contextmanager
def stops_held_in():
    """Hold stops for the block but in its :func:`interruptible` waits (main thread only; a
    signal whose handler was not set from Python is left alone); on leaving, put back the
    handlers and take any stop still held."""
    global _active, _holding
    if not _main_thread() or _active:
        yield
        return
    installed = []
    _pending.clear()
    _active, _holding = True, 1
    try:
        for signum in SIGNALS:
            current = signal.getsignal(signum)
            if current is None or current is _dispatch:
                continue
            _replaced[signum] = current
            signal.signal(signum, _dispatch)
            installed.append(signum)
        yield
    finally:
        _active, _holding = False, 0
        for signum in reversed(installed):
            signal.signal(signum, _replaced[signum])
        if _pending:
            _take_pending()
