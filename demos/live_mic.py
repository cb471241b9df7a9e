#!/usr/bin/env python3
"""Live microphone demo: the richest terminal view of wavstream.

Shows, updating live: the input level meter and its recent history, a
heatmap of the model's frame features (the last ~2-4 s, newest on the
right), the partial text of the utterance in progress and the last finals.

    python demos/live_mic.py                       # embedded default model, default microphone
    python demos/live_mic.py --device pulse        # pick an input device (see `wavstream mic --list-devices`)
    python demos/live_mic.py --file stream/samples/sample.wav          # a file, paced like a mic
    python demos/live_mic.py --file x.wav --fast --plain               # as fast as possible, plain text

Uses `rich` (pip install rich) when it is installed and the output is a
terminal; otherwise plain ANSI redraws; when the output is not a terminal
it prints finals as lines and one last snapshot of the view.

Embedding: audio goes through ``Recognizer.feed``; the view is updated by the
callback API (``rec.on_partial / on_final / on_features``).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from typing import Any, Deque, Optional

import numpy as np

from wavstream.stream import (
    BundleError,
    Features,
    FileSource,
    Final,
    MicrophoneSource,
    Partial,
    Recognizer,
    SourceError,
    resolve_model,
)
from wavstream.cli.terminal import fit_tail, level_bar, rms_dbfs, shade, sparkline

HEAT_ROWS = 8
HISTORY = 64  # frames / level samples shown


class View:
    """What the screen shows; updated by Recognizer callbacks and the audio loop."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.level_db = -90.0
        self.levels: Deque[float] = collections.deque([-90.0] * HISTORY, maxlen=HISTORY)
        self.frames: Deque[np.ndarray] = collections.deque(maxlen=HISTORY)  # (HEAT_ROWS,) per frame
        self.vmax = 1e-6
        self.partial = ""
        self.finals: Deque[str] = collections.deque(maxlen=6)
        self.all_finals: list[str] = []
        self.frames_seen = 0
        self.dropped = 0

    # Recognizer callbacks
    def on_partial(self, ev: Partial) -> None:
        self.partial = ev.text

    def on_final(self, ev: Final) -> None:
        self.partial = ""
        line = f"[{ev.start:6.2f}-{ev.end:6.2f}s] {ev.text}"
        self.finals.append(line)
        self.all_finals.append(ev.text)

    def on_features(self, ev: Features) -> None:
        f = np.abs(ev.frames)  # (T, D)
        T, D = f.shape
        rows = min(HEAT_ROWS, D)
        groups = np.array_split(np.arange(D), rows)
        reduced = np.stack([f[:, g].mean(axis=1) for g in groups], axis=1)  # (T, rows)
        for r in reduced:
            self.frames.append(r)
        self.frames_seen += T
        # Slowly adapting colour scale: the running max, decaying.
        self.vmax = max(self.vmax * 0.98, float(reduced.max()) if reduced.size else 0.0, 1e-6)

    def on_audio(self, block: np.ndarray) -> None:
        self.level_db = rms_dbfs(block)
        self.levels.append(self.level_db)

    # Rendering
    def heat_matrix(self) -> np.ndarray:
        if not self.frames:
            return np.zeros((HEAT_ROWS, 0))
        m = np.stack(list(self.frames), axis=1)  # (rows, T)
        return m

    def lines(self, width: int = 80) -> list[str]:
        """The whole view as plain text lines."""
        m = self.heat_matrix()
        out = [
            f"wavstream live · {self.title}",
            f"level   {level_bar(self.level_db, 24)} {self.level_db:6.1f} dBFS",
            f"history {sparkline(list(self.levels), lo=-60.0, hi=0.0)}",
            f"features (|x| by dimension group, last {m.shape[1]} frames, {self.frames_seen} total):",
        ]
        for r in range(m.shape[0]):
            out.append("  │" + shade(m[r], self.vmax).ljust(HISTORY) + "│")
        out.append("partial │ " + fit_tail(self.partial, width - 11))
        out.append("finals:")
        out.extend("  " + fit_tail(f, width - 2) for f in self.finals)
        if self.dropped:
            out.append(f"! dropped {self.dropped} samples (inference fell behind)")
        return out

    def rich_renderable(self) -> Any:
        from rich.console import Group
        from rich.panel import Panel
        from rich.text import Text

        meter = Text("level ")
        frac = min(1.0, max(0.0, (self.level_db + 60.0) / 60.0))
        n = int(frac * 30)
        meter.append("█" * n, style="green" if self.level_db < -12 else ("yellow" if self.level_db < -3 else "red"))
        meter.append("░" * (30 - n), style="grey30")
        meter.append(f" {self.level_db:6.1f} dBFS  ")
        meter.append(sparkline(list(self.levels), lo=-60.0, hi=0.0), style="cyan")

        heat = Text()
        m = self.heat_matrix()
        palette = [17, 18, 19, 20, 26, 32, 38, 44, 50, 82, 118, 154, 190, 226, 220, 214, 208, 202, 196]
        for r in range(m.shape[0]):
            for v in m[r]:
                k = int(min(1.0, v / self.vmax) * (len(palette) - 1))
                heat.append("█", style=f"color({palette[k]})")
            heat.append("\n")
        heat.rstrip()
        partial = Text(self.partial or " ", style="bold yellow")
        finals = Text("\n".join(self.finals) or "(none yet)", style="white")
        parts: list[Any] = [
            meter,
            Panel(heat, title=f"features · {self.frames_seen} frames", border_style="blue", expand=False),
            Panel(partial, title="partial", border_style="yellow"),
            Panel(finals, title="finals", border_style="green"),
        ]
        if self.dropped:
            parts.append(Text(f"dropped {self.dropped} samples (inference fell behind)", style="bold red"))
        return Panel(Group(*parts), title=f"wavstream live · {self.title}", border_style="magenta")


class AnsiScreen:
    """Plain-ANSI redraw of a block of lines (no rich)."""

    def __init__(self) -> None:
        self.height = 0

    def draw(self, lines: list[str]) -> None:
        w = sys.stdout
        if self.height:
            w.write(f"\033[{self.height}A")
        w.write("\033[J" + "\n".join(lines) + "\n")
        w.flush()
        self.height = len(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="bundle folder or 'default' (the embedded model)")
    ap.add_argument("--device", default=None, help="input device index or name (default: system default)")
    ap.add_argument("--rate", type=int, default=None, help="capture rate (default: the device's native rate)")
    ap.add_argument("--file", default=None, help="read this audio file instead of the microphone")
    ap.add_argument("--fast", action="store_true", help="with --file: as fast as possible instead of real time")
    ap.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    ap.add_argument("--plain", action="store_true", help="plain ANSI view even if rich is installed")
    ap.add_argument("--fps", type=float, default=12.0, help="screen refreshes per second")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    args = ap.parse_args(argv)

    try:
        rec = Recognizer.from_bundle(resolve_model(args.model), emit_features=True, intra_op_threads=args.threads)
    except BundleError as exc:
        print(f"live_mic: {exc}", file=sys.stderr)
        return 2
    mic: Optional[MicrophoneSource] = None
    try:
        if args.file:
            source: Any = FileSource(args.file, realtime=not args.fast, block_s=0.05)
            title = f"file {args.file}"
        else:
            dev: Any = int(args.device) if args.device and args.device.isdigit() else args.device
            mic = source = MicrophoneSource(dev, sample_rate=args.rate, block_s=0.05)
            title = f"mic {mic.device_name!r} @ {mic.sample_rate} Hz"
    except SourceError as exc:
        print(f"live_mic: {exc}", file=sys.stderr)
        return 2
    title += f" · {rec.config.family} · chunk {1000 * rec.config.chunk_samples / rec.config.sample_rate:.0f} ms"

    view = View(title)
    rec.add_listener(view)  # on_partial / on_final / on_features

    tty = sys.stdout.isatty()
    use_rich = False
    if tty and not args.plain:
        try:
            import rich  # noqa: F401

            use_rich = True
        except ImportError:
            pass
    live: Any = None
    screen = AnsiScreen()
    printed_finals = 0
    if use_rich:
        from rich.live import Live

        live = Live(view.rich_renderable(), refresh_per_second=args.fps, transient=False)
        live.start()

    def refresh() -> None:
        nonlocal printed_finals
        if live is not None:
            live.update(view.rich_renderable())
        elif tty:
            screen.draw(view.lines(max(40, __import__("shutil").get_terminal_size().columns)))
        else:  # not a terminal: finals as plain lines as they come
            for text in view.all_finals[printed_finals:]:
                print(f"final: {text}", flush=True)
            printed_finals = len(view.all_finals)

    t0 = time.monotonic()
    next_draw = 0.0
    lost: Optional[str] = None
    try:
        for block in source:
            view.on_audio(block)
            rec.feed(block, source.sample_rate)  # events reach the view through the callbacks
            if mic is not None:
                view.dropped += mic.take_dropped()
            now = time.monotonic()
            if now >= next_draw:
                refresh()
                next_draw = now + 1.0 / args.fps
            if args.seconds is not None and now - t0 >= args.seconds:
                break
    except KeyboardInterrupt:
        pass
    except SourceError as exc:  # the microphone went away: keep what was heard, say why it stopped
        lost = str(exc)
    finally:
        if mic is not None:
            mic.stop()
    rec.finish()
    refresh()
    if live is not None:
        live.stop()
    elif not tty:
        print("\n".join(view.lines()))  # one snapshot of the whole view
    if lost is not None:
        print(f"live_mic: audio input lost: {lost}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
