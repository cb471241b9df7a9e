"""argparse ``type=`` checks shared by the runtime commands.

A bad value fails while the command line is parsed, and argparse's message
names the flag: ``argument --beam-size: must be an integer >= 1, got '0'``.
Only stdlib here (imported by every command's ``add_arguments``).
"""

from __future__ import annotations

import argparse
import math
from typing import Callable

__all__ = ["int_at_least", "positive_float", "sample_rate"]

# The same bounds as resample.check_sample_rate (not imported: it needs numpy).
_MIN_RATE = 1000
_MAX_RATE = 768_000


def int_at_least(lowest: int) -> Callable[[str], int]:
    """A type for integers >= ``lowest``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lowest}, got {text!r}") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lowest}, got {text!r}")
        return value

    parse.__name__ = f"int>={lowest}"
    return parse


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds, milliseconds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def sample_rate(text: str) -> int:
    """An audio rate in Hz, an integer in 1000..768000."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer number of Hz, got {text!r}") from None
    if not _MIN_RATE <= value <= _MAX_RATE:
        raise argparse.ArgumentTypeError(f"must be a sample rate in {_MIN_RATE}..{_MAX_RATE} Hz, got {text!r}")
    return value
