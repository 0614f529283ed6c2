"""Ctrl-C and a service manager's stop, held while a message is half sent.

Python runs a signal's handler in the main thread between two bytecodes, wherever it stands;
the run turns SIGINT and SIGTERM into KeyboardInterrupt. Raised inside a send it can leave
a multipart message half sent (pyzmq sends the parts one by one: the source's end message then
went out appended to it, garbled, and the logger never heard the run end), or a frame sent but
not counted (the end then said one frame fewer than the logger had logged). Either closed a
cleanly stopped session incomplete ("logger exit 3").

:func:`stops_held_in` installs, for a block of the main thread (the source's publishing), a
handler for each signal that passes it on at once, unless :func:`held` is holding it: then it is
passed on when the outermost :func:`held` block ends. The handlers are installed once for the
whole block, not per send: swapping handlers per send can itself be cut by a signal and leave
one handler swapped for good (a stop then lost). A handler left installed by such a cut passes
every signal on as the one it replaced would.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_holding = 0  # nesting depth of held() in the main thread
_pending: list[int] = []  # signals that came while held, in order
_replaced: dict[int, object] = {}  # signal -> the handler our dispatcher passes it on to


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _pass_on(signum: int) -> None:
    """Do what the handler we replaced would have done with ``signum``."""
    handler = _replaced.get(signum, signal.SIG_DFL)
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:  # end the process as the signal would have
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _dispatch(signum: int, _frame) -> None:
    if _holding:
        _pending.append(signum)
    else:
        _pass_on(signum)


def _deliver_pending() -> None:
    """The signals that came while held, each once, in the order they came (the first that
    raises ends the delivery: KeyboardInterrupt for either)."""
    waiting = list(dict.fromkeys(_pending))
    _pending.clear()
    for signum in waiting:
        _pass_on(signum)


@contextmanager
def held():
    """The block runs without being cut by SIGINT or SIGTERM; one that came meanwhile is passed
    on when the outermost such block ends (not when it ends by an exception: then when the
    next one ends, or :func:`stops_held_in` does). Holds nothing outside a :func:`stops_held_in`
    block or outside the main thread, where Python runs no signal handler."""
    global _holding
    if not _main_thread():
        yield
        return
    _holding += 1
    try:
        yield
    except BaseException:
        _holding -= 1
        raise
    _holding -= 1
    if not _holding and _pending:
        _deliver_pending()


@contextmanager
def stops_held_in():
    """Install the holding handlers for the block (main thread only; a signal whose handler was
    not set from Python is left alone); on leaving, put back the handlers they replaced and pass
    on any signal still held."""
    if not _main_thread():
        yield
        return
    installed = []
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
        for signum in reversed(installed):
            signal.signal(signum, _replaced[signum])
        if _pending and not _holding:
            _deliver_pending()
