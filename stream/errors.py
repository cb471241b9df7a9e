"""The root of every exception wavstream raises on purpose.

``except WavstreamError`` catches them all; each subclass also derives from
the built-in exception a caller would expect (``ValueError`` for bad input,
``RuntimeError`` for a state that cannot go on, ``FileNotFoundError`` for a
missing bundle), so code that catches those keeps working.
"""

from __future__ import annotations

__all__ = ["WavstreamError"]


class WavstreamError(Exception):
    """Base class of wavstream's own exceptions."""
