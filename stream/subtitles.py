"""Subtitles from Final events: cues cut at word times, written as SRT or WebVTT.

A Final can be a 20-second utterance; a subtitle line should be short and on
screen while it is spoken. With word times a Final is cut into cues of at
most ``max_chars`` characters and ``max_seconds`` each, every cue timed by
its own words; without them the whole Final is one cue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .events import Final

__all__ = ["Cue", "cues_of", "format_cue", "subtitles", "WEBVTT_HEADER"]

WEBVTT_HEADER = "WEBVTT\n\n"


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float
    text: str


def cues_of(final: Final, max_chars: int = 42, max_seconds: float = 6.0) -> list[Cue]:
    """One Final -> its cues, in order."""
    if not final.words:
        return [Cue(final.start, final.end, final.text)] if final.text else []
    cues: list[Cue] = []
    group = [final.words[0]]
    for w in final.words[1:]:
        text = " ".join(x.word for x in group + [w])
        if len(text) > max_chars or w.end - group[0].start > max_seconds:
            cues.append(Cue(group[0].start, group[-1].end, " ".join(x.word for x in group)))
            group = [w]
        else:
            group.append(w)
    cues.append(Cue(group[0].start, group[-1].end, " ".join(x.word for x in group)))
    return cues


def format_cue(index: int, cue: Cue, style: str) -> str:
    """A cue as SRT (``style="srt"``, numbered from 1) or WebVTT (``"vtt"``) text, with its blank line."""
    if style not in ("srt", "vtt"):
        raise ValueError(f"subtitle style must be 'srt' or 'vtt', got {style!r}")
    sep = "," if style == "srt" else "."
    head = f"{index}\n" if style == "srt" else ""
    return f"{head}{_clock(cue.start, sep)} --> {_clock(cue.end, sep)}\n{cue.text}\n\n"


def subtitles(finals: Iterable[Final], style: str) -> str:
    """A whole subtitle file from Finals."""
    out = [WEBVTT_HEADER] if style == "vtt" else []
    n = 0
    for f in finals:
        for cue in cues_of(f):
            n += 1
            out.append(format_cue(n, cue, style))
    return "".join(out)


def _clock(seconds: float, sep: str) -> str:
    ms = max(0, int(round(seconds * 1000)))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"
