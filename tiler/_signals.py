"""SIGTERM as a clean stop: the flag survives libraries that swallow the exception.

The handler raises :class:`Terminated` (a ``KeyboardInterrupt``) in the main
thread so that every ``finally`` and ``with`` block runs as for Ctrl-C. Some
libraries turn an exception raised inside them into another one (TensorFlow's
lazy imports, for one, report it as ``SystemError`` / ``AttributeError``), so
the handler also sets a process-wide flag: :func:`check` re-raises
:class:`Terminated` wherever a caught failure might really be the signal, and
the CLI exits 143 whenever the flag is set, whatever exception surfaced.
"""

from __future__ import annotations

import signal
import threading

_requested = threading.Event()


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM arrives, so that every cleanup runs as for Ctrl-C."""


def _on_sigterm(signum, frame) -> None:
    _requested.set()
    raise Terminated()


_kept: list[str] = []
_written: list[str] = []


def written(path: str) -> None:
    """Record an output renamed into place, complete (for the last line of an interrupted command)."""
    _written.append(path)


def outputs_written() -> list[str]:
    """The outputs :func:`written` recorded since :func:`install`."""
    return list(_written)


def keep(note: str) -> None:
    """Record what an interrupted command kept on purpose (resumable parts), for the CLI's last line."""
    _kept.append(note)


def kept() -> list[str]:
    """What :func:`keep` recorded since :func:`install`."""
    return list(_kept)


def install():
    """Install the SIGTERM handler (main thread only); returns the previous handler.

    Returns
    -------
    object
        The previous handler, to give back to :func:`restore`.
    """
    _requested.clear()
    _kept.clear()
    _written.clear()
    return signal.signal(signal.SIGTERM, _on_sigterm)


def restore(previous) -> None:
    """Put back the handler :func:`install` replaced."""
    signal.signal(signal.SIGTERM, previous)


def requested() -> bool:
    """Whether SIGTERM arrived since :func:`install`."""
    return _requested.is_set()


def check() -> None:
    """Raise :class:`Terminated` if SIGTERM arrived (call where a caught failure may be the signal).

    Raises
    ------
    Terminated
        When SIGTERM arrived since :func:`install`.
    """
    if _requested.is_set():
        raise Terminated()
