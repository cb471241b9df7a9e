#!/usr/bin/env python3
"""Voice commands: an example app that embeds wavstream's Recognizer.

Say "lights on", "volume up", "play music", ... and the app changes its state.
Recognition runs through the callback API: the app registers ``on_partial``
and ``on_final`` handlers and only feeds audio; every final is fuzzy-matched
against the command phrases (so a slightly wrong transcript, "lites of",
still turns the lights off), and the matched command's action runs.

    python demos/voice_commands.py                        # embedded model, default microphone
    python demos/voice_commands.py --device pulse
    python demos/voice_commands.py --file commands.wav    # a recording instead of the mic
    python demos/voice_commands.py --list                 # the commands it knows

The shape to copy into your own app::

    rec = Recognizer.default()
    rec.on_final(lambda ev: handle(ev.text))
    with MicrophoneSource() as mic:
        for block in mic:
            rec.feed(block, mic.sample_rate)     # handlers fire from here, on this thread
"""

from __future__ import annotations

import argparse
import difflib
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from wavstream.stream import BundleError, FileSource, Final, MicrophoneSource, Partial, Recognizer, SourceError, resolve_model


@dataclass
class HomeState:
    lights: bool = False
    volume: int = 5  # 0..10
    music: bool = False
    log: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"lights={'ON' if self.lights else 'off'} volume={self.volume} music={'playing' if self.music else 'stopped'}"


def _lights(on: bool) -> Callable[[HomeState], str]:
    def act(s: HomeState) -> str:
        s.lights = on
        return f"lights {'ON' if on else 'OFF'}"
    return act


def _volume(delta: int) -> Callable[[HomeState], str]:
    def act(s: HomeState) -> str:
        s.volume = max(0, min(10, s.volume + delta))
        return f"volume {s.volume}"
    return act


def _music(play: bool) -> Callable[[HomeState], str]:
    def act(s: HomeState) -> str:
        s.music = play
        return "music playing" if play else "music stopped"
    return act


def _mute(s: HomeState) -> str:
    s.volume = 0
    return "muted"


def _time(s: HomeState) -> str:
    return time.strftime("it is %H:%M")


COMMANDS: dict[str, Callable[[HomeState], str]] = {
    "lights on": _lights(True),
    "lights off": _lights(False),
    "volume up": _volume(+2),
    "volume down": _volume(-2),
    "mute": _mute,
    "play music": _music(True),
    "stop music": _music(False),
    "what time is it": _time,
}


def command_scores(text: str, commands: Optional[list[str]] = None) -> list[tuple[float, str]]:
    """Similarity (0..1) of each command to its best-matching stretch of the transcript, best first.

    Each command is compared with every run of 1 .. n+1 words of the
    transcript (n = the command's word count), so "please turn the lights on
    now" finds "lights on". Spaces are ignored on both sides: a small CTC model
    often merges or splits words ("valiumap" for "volume up").
    """
    commands = list(COMMANDS) if commands is None else commands
    words = text.lower().split()
    scores = []
    for cmd in commands:
        target = cmd.replace(" ", "")
        best = 0.0
        for k in range(1, len(cmd.split()) + 2):
            for i in range(0, max(1, len(words) - k + 1)):
                best = max(best, difflib.SequenceMatcher(None, "".join(words[i : i + k]), target).ratio())
        scores.append((best, cmd))
    scores.sort(key=lambda sc: -sc[0])
    return scores


def match_command(
    text: str, commands: Optional[list[str]] = None, threshold: float = 0.6, margin: float = 0.05
) -> tuple[Optional[str], float]:
    """The command a transcript asks for, and its score; (None, best score) when unsure.

    A command fires when its score is at least ``threshold`` and beats the
    runner-up by ``margin`` (so "lites o" does not pick between lights on and
    lights off at random).
    """
    scores = command_scores(text, commands)
    if not scores:
        return None, 0.0
    best, cmd = scores[0]
    second = scores[1][0] if len(scores) > 1 else 0.0
    if best >= threshold and best - second >= margin - 1e-9:
        return cmd, best
    return None, best


class VoiceApp:
    """Listens to Recognizer events (register with ``rec.add_listener(app)``) and runs commands."""

    def __init__(self, threshold: float = 0.6, out: Any = sys.stdout) -> None:
        self.state = HomeState()
        self.threshold = threshold
        self.out = out
        self.tty = out.isatty()

    def on_partial(self, ev: Partial) -> None:
        if self.tty:
            self.out.write(f"\r\033[Khearing: {ev.text}")
            self.out.flush()

    def on_final(self, ev: Final) -> None:
        if self.tty:
            self.out.write("\r\033[K")
        cmd, score = match_command(ev.text, threshold=self.threshold)
        if cmd is None:
            self.out.write(f'heard "{ev.text}" -> no command (best score {score:.2f})\n')
        else:
            result = COMMANDS[cmd](self.state)
            self.state.log.append(cmd)
            self.out.write(f'heard "{ev.text}" -> {cmd} ({score:.2f}): {result} | {self.state.describe()}\n')
        self.out.flush()


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default", help="bundle folder or 'default' (the embedded model)")
    ap.add_argument("--device", default=None, help="input device index or name (default: system default)")
    ap.add_argument("--file", default=None, help="read this audio file instead of the microphone (as fast as possible)")
    ap.add_argument("--seconds", type=float, default=None, help="stop listening after this many seconds")
    ap.add_argument("--threshold", type=float, default=0.6, help="minimum similarity (0..1) for a command to fire")
    ap.add_argument("--silence", type=float, default=0.8, help="seconds of silence that end a command")
    ap.add_argument("--list", action="store_true", help="print the known commands and exit")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(COMMANDS))
        return 0

    from wavstream.stream import EndpointConfig

    try:
        # Short commands: end an utterance after --silence s (default rule is 1.2 s).
        rec = Recognizer.from_bundle(resolve_model(args.model), emit_features=False,
                                     endpoint=EndpointConfig.with_times(rule2_silence_s=args.silence))
    except BundleError as exc:
        print(f"voice_commands: {exc}", file=sys.stderr)
        return 2
    app = VoiceApp(args.threshold)
    rec.add_listener(app)

    mic: Optional[MicrophoneSource] = None
    try:
        if args.file:
            source: Any = FileSource(args.file)
        else:
            dev: Any = int(args.device) if args.device and args.device.isdigit() else args.device
            mic = source = MicrophoneSource(dev)
            print(f"listening on {mic.device_name!r}; say one of: {', '.join(COMMANDS)} (Ctrl-C to stop)", file=sys.stderr)
    except SourceError as exc:
        print(f"voice_commands: {exc}", file=sys.stderr)
        return 2

    t0 = time.monotonic()
    lost: Optional[str] = None
    try:
        for block in source:
            rec.feed(block, source.sample_rate)  # app.on_partial / app.on_final run in here
            if args.seconds is not None and time.monotonic() - t0 >= args.seconds:
                break
    except KeyboardInterrupt:
        pass
    except SourceError as exc:  # the microphone went away: keep what was heard, say why it stopped
        lost = str(exc)
    finally:
        if mic is not None:
            mic.stop()
    rec.finish()  # the last command, if the audio ended before the endpoint
    print(f"final state: {app.state.describe()}; commands run: {', '.join(app.state.log) or 'none'}")
    if lost is not None:
        print(f"voice_commands: audio input lost: {lost}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
