"""Small terminal-rendering helpers for the live views (`wavstream mic`, demos).

Stdlib + numpy only. Nothing here touches audio devices or models.

- ``rms_dbfs(block)``: level of a block in dB relative to full scale.
- ``level_bar(db)``: a fixed-width meter string (eighth-block resolution).
- ``shade(values)`` / ``sparkline(values)``: one row of a text heatmap / plot.
- ``EventPrinter``: Partial/Final events as live text or JSON lines
  (`wavstream transcribe`, `wavstream client`).
- ``StatusLine``: one line rewritten in place on a TTY (``\\r`` + clear line),
  with permanent lines (finals) printed above it; plain lines when the
  output is not a terminal.
"""

from __future__ import annotations

import math
import shutil
import sys
from typing import IO, Optional, Sequence

import json
from typing import Any

import numpy as np

from wavstream.stream.events import Final, Partial

__all__ = ["rms_dbfs", "peak_dbfs", "level_bar", "shade", "sparkline", "fit_tail", "StatusLine", "EventPrinter",
           "FLOOR_DB"]

FLOOR_DB = -90.0  # what silence (all zeros) reports
_EIGHTHS = " ▏▎▍▌▋▊▉█"
_SHADES = " ░▒▓█"
_SPARK = "▁▂▃▄▅▆▇█"
CLEAR_LINE = "\r\033[K"


def rms_dbfs(block: np.ndarray) -> float:
    """RMS level in dBFS of float samples in [-1, 1] (a full-scale sine is -3 dBFS)."""
    if block.size == 0:
        return FLOOR_DB
    ms = float(np.dot(block, block)) / block.size if block.ndim == 1 else float(np.mean(np.square(block)))
    if ms <= 0.0:
        return FLOOR_DB
    return max(FLOOR_DB, 10.0 * math.log10(ms))


def peak_dbfs(block: np.ndarray) -> float:
    if block.size == 0:
        return FLOOR_DB
    p = float(np.max(np.abs(block)))
    return FLOOR_DB if p <= 0.0 else max(FLOOR_DB, 20.0 * math.log10(p))


def level_bar(db: float, width: int = 20, floor: float = -60.0) -> str:
    """A ``width``-character bar: empty at ``floor`` dBFS, full at 0 dBFS."""
    frac = min(1.0, max(0.0, (db - floor) / -floor))
    eighths = int(round(frac * width * 8))
    full, part = divmod(eighths, 8)
    bar = "█" * full + (_EIGHTHS[part] if part and full < width else "")
    return bar.ljust(width)


def shade(values: Sequence[float] | np.ndarray, vmax: float) -> str:
    """One row of a text heatmap: |value| / vmax as ' ░▒▓█'."""
    if vmax <= 0:
        return " " * len(values)
    a = np.clip(np.abs(np.asarray(values, dtype=np.float64)) / vmax, 0.0, 1.0)
    idx = np.minimum((a * (len(_SHADES) - 1) + 0.5).astype(int), len(_SHADES) - 1)
    return "".join(_SHADES[i] for i in idx)


def sparkline(values: Sequence[float] | np.ndarray, lo: Optional[float] = None, hi: Optional[float] = None) -> str:
    """Values as '▁▂▃▄▅▆▇█' (scaled to [lo, hi], by default their own range)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return ""
    lo = float(v.min()) if lo is None else lo
    hi = float(v.max()) if hi is None else hi
    if hi <= lo:
        return _SPARK[0] * v.size
    idx = np.clip(((v - lo) / (hi - lo) * (len(_SPARK) - 1) + 0.5).astype(int), 0, len(_SPARK) - 1)
    return "".join(_SPARK[i] for i in idx)


def fit_tail(text: str, width: int) -> str:
    """The end of ``text`` in at most ``width`` characters ('…' marks a cut)."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    return "…" + text[-(width - 1) :] if width > 1 else text[-1:]


class StatusLine:
    """One live line (level meter + partial text) below permanent output.

    On a TTY ``update()`` rewrites the line in place; ``print()`` clears it,
    writes a permanent line, and the next ``update()`` redraws the status.
    Not on a TTY, ``update()`` does nothing (the caller prints plain lines).
    """

    def __init__(self, out: IO[str] = sys.stdout, tty: Optional[bool] = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self._shown = False

    @staticmethod
    def width() -> int:
        return max(20, shutil.get_terminal_size((80, 24)).columns)

    def update(self, text: str) -> None:
        if not self.tty:
            return
        self.out.write(CLEAR_LINE + text[: self.width() - 1])
        self.out.flush()
        self._shown = True

    def print(self, line: str) -> None:
        if self.tty and self._shown:
            self.out.write(CLEAR_LINE)
            self._shown = False
        self.out.write(line + "\n")
        self.out.flush()

    def clear(self) -> None:
        if self.tty and self._shown:
            self.out.write(CLEAR_LINE)
            self.out.flush()
            self._shown = False


class EventPrinter:
    """Print Partial/Final events: on a TTY a partial rewrites the current line
    and a final replaces it with its own line; not on a TTY only finals are
    printed; with ``json_lines`` every Partial/Final is one JSON object."""

    def __init__(self, out: IO[str] = sys.stdout, json_lines: bool = False) -> None:
        self.out = out
        self.json_lines = json_lines
        self.tty = out.isatty() and not json_lines
        self._width = 0

    def __call__(self, ev: Any) -> None:
        if self.json_lines:
            if isinstance(ev, (Partial, Final)):
                self.out.write(json.dumps(ev.to_dict()) + "\n")
                self.out.flush()
        elif isinstance(ev, Partial):
            if self.tty:
                self.out.write(CLEAR_LINE + ev.text)
                self.out.flush()
                self._width = len(ev.text)
        elif isinstance(ev, Final):
            self.out.write((CLEAR_LINE if self.tty and self._width else "") + ev.text + "\n")
            self.out.flush()
            self._width = 0


class SubtitlePrinter:
    """Write Finals as SRT or WebVTT cues (stream/subtitles.py), each utterance's as soon as it ends."""

    def __init__(self, out: IO[str], style: str) -> None:
        from wavstream.stream.subtitles import WEBVTT_HEADER

        self.out = out
        self.style = style
        self._n = 0
        if style == "vtt":
            out.write(WEBVTT_HEADER)

    def __call__(self, ev: Any) -> None:
        from wavstream.stream.subtitles import cues_of, format_cue

        if isinstance(ev, Final):
            for cue in cues_of(ev):
                self._n += 1
                self.out.write(format_cue(self._n, cue, self.style))
            self.out.flush()
