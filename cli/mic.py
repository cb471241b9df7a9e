"""`wavstream mic`: live transcription from a microphone in the terminal.

On a terminal: one status line rewritten in place (input level meter in dBFS
and the partial text), each final on its own line above it. Not on a
terminal (piped, logged): plain lines, ``partial: TEXT`` when the partial
changes and ``final: TEXT  [start-end s]`` per utterance (``--meter`` adds a
``level: -23.4 dBFS`` line per second). ``--json``: one JSON object per line.
Dropped-sample warnings (inference fell behind the microphone) go to stderr.

Threads: the PortAudio callback only copies samples into the ring buffer
(sources.MicrophoneSource); model inference and drawing run here, in the main
loop. Ctrl-C (or SIGTERM) stops capture, decodes what is buffered and prints
the last final; ``--seconds N`` does the same after N seconds. If the input
device goes away mid-capture (unplugged, PulseAudio stopped) or stops
delivering audio for --stall-timeout seconds, the same flush runs, then the
loss is reported on stderr and the exit status is 1.

Only argparse/stdlib are imported at module level (fast --help, no torch).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any, Optional

from .args import (add_decoding_arguments, add_endpoint_arguments, add_model_arguments, decoding_config, endpoint_config,
                   engine_options, hotwords_list, int_at_least, positive_float, sample_rate)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    audio = parser.add_argument_group("audio input")
    audio.add_argument("--device", default=None,
                       help="input device: index or (part of) its name, as --list-devices shows; default: the system's default input")
    audio.add_argument("--list-devices", action="store_true", help="list input devices and exit")
    audio.add_argument("--rate", type=sample_rate, default=None, help="capture rate in Hz (default: the device's native rate; audio is resampled to the model's)")
    audio.add_argument("--channel", type=int_at_least(0), default=0, help="input channel to use (0 = first)")
    audio.add_argument("--block-ms", type=positive_float, default=100.0, help="capture block size in ms (one PortAudio callback)")
    audio.add_argument("--buffer-s", type=positive_float, default=10.0, help="ring buffer size in s; older audio is dropped (and reported) past it")
    audio.add_argument("--seconds", type=positive_float, default=None, help="stop after this many seconds of capture (default: until Ctrl-C)")
    audio.add_argument("--stall-timeout", type=positive_float, default=5.0,
                       help="s without audio from the device before it counts as lost (report, exit 1)")
    add_model_arguments(parser, device_flag="--engine-device", threads_default=1,
                        threads_help="onnxruntime intra-op threads; 0 = runtime's choice. One live stream rarely needs "
                                     "more than 1, and extra threads spin: 3x the CPU at idle for no lower latency on a "
                                     "busy 2-core machine")
    dec = parser.add_argument_group("decoding and endpointing")
    add_decoding_arguments(parser, dec, lm=True, hotwords=True)
    add_endpoint_arguments(parser, dec)
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="JSON lines: partial/final (with times), dropped, level (with --meter)")
    out.add_argument("--meter", action="store_true", help="also report the input level when not on a terminal (once per second)")
    out.add_argument("--no-meter", action="store_true", help="hide the level meter on a terminal")
    out.add_argument("--stats", action="store_true",
                     help="at the end, print one JSON line to stderr: latency from the callback that delivered each chunk's "
                          "last sample to the chunk's Partial, PortAudio's input latency, CPU use, drops")


_NO_DEVICE_HINT = (
    "check that a microphone is connected and visible to ALSA/PulseAudio (arecord -l, pactl list sources); "
    "without a sound card, a PulseAudio null sink can act as one (demos/README.md)"
)


def _device_arg(value: Optional[str]) -> Any:
    if value is None:
        return None
    v = value.strip()
    return int(v) if v.lstrip("-").isdigit() else v


def _list_devices(out: Any) -> int:
    from wavstream.stream.sources import SourceError, default_input_index, list_input_devices

    try:
        devs = list_input_devices()
        default_in = default_input_index()
    except SourceError as exc:
        print(f"wavstream mic: {exc}", file=sys.stderr)
        return 2
    if not devs:
        print(f"no audio input devices found; {_NO_DEVICE_HINT}", file=sys.stderr)
        return 1
    for d in devs:
        mark = "*" if d["index"] == default_in else " "
        out.write(f"{mark} {d['index']:3d}  {d['name']}  ({d['channels']} ch, {d['default_samplerate']:.0f} Hz)\n")
    out.flush()
    return 0


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100.0 * (len(s) - 1))))]


def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    if args.list_devices:
        return _list_devices(out)
    rec = _load_recognizer(args)
    if isinstance(rec, int):
        return rec
    marks = _BlockMarks()
    mic = _open_microphone(args, marks)
    if isinstance(mic, int):
        return mic
    return _MicSession(args, rec, mic, marks, out).run()


def _load_recognizer(args: argparse.Namespace) -> Any:
    """The Recognizer, or an exit status after saying why not."""
    from wavstream.stream.bundle import BundleError
    from wavstream.stream.engines import EngineUnavailableError
    from wavstream.stream.recognizer import Recognizer, resolve_model

    try:
        rec = Recognizer.from_bundle(
            resolve_model(args.model),
            decoding=decoding_config(args),
            endpoint=endpoint_config(args),
            emit_features=False,
            **engine_options(args),
        )
        rec.create_stream(hotwords=hotwords_list(args))  # a bad hotwords file fails here, before the microphone opens
    except (BundleError, EngineUnavailableError, ImportError, ValueError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    if not rec.config.has_logits:
        print(f"{PROG}: bundle {rec.bundle.path} has no CTC head (no vocab); it gives features, not text", file=sys.stderr)
        return 2
    return rec


def _open_microphone(args: argparse.Namespace, marks: "_BlockMarks") -> Any:
    """The started MicrophoneSource, or an exit status after saying why not."""
    from wavstream.stream.sources import MicrophoneSource, SourceError

    try:
        mic = MicrophoneSource(
            _device_arg(args.device),
            on_block=marks,
            sample_rate=args.rate,
            block_s=args.block_ms / 1000.0,
            buffer_s=args.buffer_s,
            channel=args.channel,
            stall_timeout_s=max(args.stall_timeout, 2 * args.block_ms / 1000.0),
        )
        mic.start()
    except (SourceError, ValueError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        if "no audio input device" in str(exc):
            print(f"{PROG}: {_NO_DEVICE_HINT}", file=sys.stderr)
        return 2
    return mic


PROG = "wavstream mic"


class _BlockMarks:
    """When each captured block arrived, for --stats latency: the MicrophoneSource.on_block hook.

    After each push the audio thread stamps how many samples had been written and when (monotonic);
    preallocated, O(1). (PortAudio's inputBufferAdcTime is not used: through ALSA's pulse plugin it
    drifts by ~0.1 s per 0.1 s block, i.e. it is not a real ADC time.)
    """

    def __init__(self, size: int = 256) -> None:
        import numpy as np

        self.size = size
        self.written = np.zeros(size, np.int64)
        self.time = np.zeros(size, np.float64)
        self.n = 0

    def __call__(self, block: Any, total_written: int) -> None:  # on the audio thread
        i = self.n % self.size
        self.written[i] = total_written
        self.time[i] = time.monotonic()
        self.n += 1

    def arrival(self, sample_index: int) -> Optional[float]:
        """When the block holding capture sample ``sample_index`` (0-based) arrived; None if forgotten."""
        n = self.n
        for k in range(max(0, n - self.size), n):
            i = k % self.size
            if self.written[i] > sample_index:
                return float(self.time[i])
        return None


class _MicSession:
    """One run of the command: capture loop, decoding, terminal/JSON output, the end-of-run report."""

    def __init__(self, args: argparse.Namespace, rec: Any, mic: Any, marks: _BlockMarks, out: Any) -> None:
        from .terminal import StatusLine

        self.args, self.rec, self.mic, self.marks, self.out = args, rec, mic, marks, out
        self.stream = rec.create_stream(hotwords=hotwords_list(args))
        self.model_rate = rec.config.sample_rate
        self.status = StatusLine(out, tty=False if args.json else None)
        self.tty = self.status.tty
        self.show_meter = (self.tty and not args.no_meter) or (not self.tty and args.meter)
        self.level_db = -90.0
        self.partial = ""
        self.n_partials = 0
        self.latencies: list[float] = []  # s from the callback that delivered a chunk's last sample to its Partial
        self.dropped_total = 0
        self.samples_in = 0
        self.last_level_line = 0.0
        self.stop_requested = False

    # --------------------------------------------------------------- output
    def emit_json(self, obj: dict) -> None:
        self.out.write(json.dumps(obj) + "\n")
        self.out.flush()

    def draw(self) -> None:
        if not self.tty:
            return
        from .terminal import fit_tail, level_bar

        meter = f"{level_bar(self.level_db, 16)} {self.level_db:6.1f} dB │ " if self.show_meter else ""
        self.status.update(meter + fit_tail(self.partial, self.status.width() - len(meter) - 1))

    def handle(self, ev: Any, live: bool) -> None:
        from wavstream.stream.events import Final, Partial

        args, status = self.args, self.status
        if isinstance(ev, Partial):
            self.n_partials += 1
            if live and args.stats:
                self._time_partial()
            self.partial = ev.text
            if args.json:
                self.emit_json(ev.to_dict())
            elif not self.tty:
                status.print(f"partial: {ev.text}")
        elif isinstance(ev, Final):
            self.partial = ""
            if args.json:
                self.emit_json(ev.to_dict())
            elif self.tty:
                status.print(ev.text)
            else:
                status.print(f"final: {ev.text}  [{ev.start:.2f}-{ev.end:.2f} s]")

    def _time_partial(self) -> None:
        """Latency of a Partial just produced, from its chunk's last sample (--stats)."""
        now = time.monotonic()
        last = int(self.stream.frames_done * self.rec.config.stride * self.mic.sample_rate / self.model_rate) - 1
        t = self.marks.arrival(last)
        if t is not None:
            self.latencies.append(now - t)

    def warn_dropped(self) -> None:
        d = self.mic.take_dropped()
        if not d:
            return
        self.dropped_total += d
        rate = self.mic.sample_rate
        msg = (f"dropped {d} samples ({d / rate:.2f} s of audio): inference fell behind the microphone "
               f"(try --threads {max(2, (self.args.threads or 1) * 2)}, --int8, or a smaller model)")
        if self.args.json:
            self.emit_json({"type": "dropped", "samples": d, "seconds": round(d / rate, 3)})
        else:
            self.status.clear()
        print(f"{PROG}: warning: {msg}", file=sys.stderr)

    def level_line(self, now: float) -> None:
        if self.tty or not self.show_meter or now - self.last_level_line < 1.0:
            return
        self.last_level_line = now
        if self.args.json:
            self.emit_json({"type": "level", "dbfs": round(self.level_db, 1)})
        else:
            self.status.print(f"level: {self.level_db:.1f} dBFS")

    # -------------------------------------------------------------- capture
    def decode_ready(self, live: bool) -> None:
        # One chunk at a time, so each Partial is timed against its own chunk.
        while self.rec.is_ready(self.stream):
            for ev in self.rec.decode_stream(self.stream):
                self.handle(ev, live)

    def wait_for_audio(self) -> Optional[str]:
        """Until audio really flows (not just the device opened), at most 5 s; tell the user. Returns a loss."""
        from wavstream.stream.sources import DeviceLostError

        mic, t_start, lost = self.mic, time.monotonic(), None
        try:
            while mic.ring.total_written == 0 and time.monotonic() - t_start < 5.0 and not self.stop_requested:
                time.sleep(0.01)
                mic.check()
        except DeviceLostError as exc:
            lost = str(exc)
        rate_note = f"{mic.sample_rate} Hz" + (f" -> {self.model_rate} Hz" if mic.sample_rate != self.model_rate else "")
        if lost is None and mic.ring.total_written == 0:
            print(f"{PROG}: warning: no audio from {mic.device_name!r} after 5 s; still waiting", file=sys.stderr)
        elif lost is None:
            print(f"{PROG}: listening on {mic.device_name!r} ({rate_note}); Ctrl-C to stop", file=sys.stderr)
        sys.stderr.flush()
        return lost

    def capture(self) -> Optional[str]:
        """Read, decode and show until stopped, --seconds, or the device is lost (returned)."""
        from wavstream.stream.sources import DeviceLostError

        from .terminal import rms_dbfs

        mic = self.mic
        # --seconds counts from the first audio (device start-up can take a second or two).
        deadline = None if self.args.seconds is None else time.monotonic() + self.args.seconds
        while not self.stop_requested:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            wait = 0.2 if deadline is None else max(0.0, min(0.2, deadline - now))
            try:
                block = mic.read(timeout=wait)
            except DeviceLostError as exc:
                return str(exc)  # the caller flushes what was captured, then reports it
            if block is None:
                if mic.ring.closed:
                    break
                self.draw()
                continue
            self.samples_in += block.shape[0]
            self.level_db = rms_dbfs(block)
            self.stream.accept_waveform(block, mic.sample_rate)
            self.decode_ready(live=True)
            self.warn_dropped()
            self.level_line(now)
            self.draw()
        return None

    def flush(self) -> None:
        """Stop capture, decode what is still buffered, then the last final."""
        mic = self.mic
        mic.stop()
        while True:
            block = mic.read(timeout=0)
            if block is None:
                break
            self.samples_in += block.shape[0]
            self.stream.accept_waveform(block, mic.sample_rate)
        self.stream.input_finished()
        self.decode_ready(live=False)
        self.warn_dropped()

    # ------------------------------------------------------------------ run
    def _on_signal(self, signum: int, frame: Any) -> None:
        # Ctrl-C / SIGTERM set a flag; the loop (which wakes at least every 0.2 s) then stops capture and
        # flushes. A second Ctrl-C interrupts at once.
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True

    def run(self) -> int:
        old_int = signal.signal(signal.SIGINT, self._on_signal)
        old_term = signal.signal(signal.SIGTERM, self._on_signal)
        mic = self.mic
        latency_reported = mic.input_latency_s
        try:
            lost = self.wait_for_audio()
            cpu0, wall0 = time.process_time(), time.monotonic()
            if lost is None:
                lost = self.capture()
            self.flush()
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once, still print what we have
            mic.stop()
            self.status.clear()
            if self.partial:
                self.status.print(self.partial if self.tty else f"final: {self.partial}")
            return 130
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            mic.stop()
        self.status.clear()
        if self.args.stats:
            print(json.dumps(self.stats(time.monotonic() - wall0, time.process_time() - cpu0, latency_reported)),
                  file=sys.stderr)
        if lost is not None:
            print(f"{PROG}: {lost}; the text above covers the audio captured until then", file=sys.stderr)
            if mic.stuck:
                # PortAudio is blocked on the dead device and sounddevice's atexit
                # handler would block on it too: leave without running it.
                self.out.flush()
                sys.stderr.flush()
                os._exit(1)
            return 1
        return 0

    def stats(self, wall: float, cpu: float, mic_latency: Optional[float]) -> dict:
        lat_ms = [x * 1000 for x in self.latencies]
        return {
            "type": "stats",
            "audio_s": round(self.samples_in / self.mic.sample_rate, 3),
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "cpu_percent": round(100.0 * cpu / wall, 1) if wall > 0 else None,
            "partials": self.n_partials,
            "partials_timed": len(self.latencies),
            "latency_ms_p50": round(_percentile(lat_ms, 50), 1) if lat_ms else None,
            "latency_ms_p95": round(_percentile(lat_ms, 95), 1) if lat_ms else None,
            "latency_ms_max": round(max(lat_ms), 1) if lat_ms else None,
            "portaudio_input_latency_ms": round(1000 * float(mic_latency), 1) if mic_latency is not None else None,
            "block_ms": self.args.block_ms,
            "chunk_ms": round(1000.0 * self.rec.config.chunk_samples / self.model_rate, 1),
            "dropped_samples": self.dropped_total,
            "portaudio_overflows": self.mic.status_overflows,
        }
