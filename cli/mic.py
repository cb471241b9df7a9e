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
                   engine_options, int_at_least, positive_float, sample_rate)


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
    add_decoding_arguments(parser, dec)
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
    from wavstream.stream.sources import SourceError, _sounddevice, list_input_devices

    try:
        devs = list_input_devices()
        sd = _sounddevice()
        try:
            default_in = sd.default.device[0]
        except Exception:
            default_in = None
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

    import numpy as np

    from wavstream.stream.bundle import BundleError
    from wavstream.stream.engines import EngineUnavailableError
    from wavstream.stream.events import Final, Partial
    from wavstream.stream.recognizer import Recognizer, resolve_model
    from wavstream.stream.sources import DeviceLostError, MicrophoneSource, SourceError
    from .terminal import StatusLine, fit_tail, level_bar, rms_dbfs

    prog = "wavstream mic"
    try:
        rec = Recognizer.from_bundle(
            resolve_model(args.model),
            decoding=decoding_config(args),
            endpoint=endpoint_config(args),
            emit_features=False,
            **engine_options(args),
        )
    except (BundleError, EngineUnavailableError, ImportError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if not rec.config.has_logits:
        print(f"{prog}: bundle {rec.bundle.path} has no CTC head (no vocab); it gives features, not text", file=sys.stderr)
        return 2

    # Timing marks (for --stats): after each push the callback stamps how many
    # samples had been written and when (monotonic). Preallocated, O(1).
    # (PortAudio's inputBufferAdcTime is not used: through ALSA's pulse plugin
    # it drifts by ~0.1 s per 0.1 s block, i.e. it is not a real ADC time.)
    marks = 256
    mark_written = np.zeros(marks, np.int64)
    mark_time = np.zeros(marks, np.float64)
    mark_n = [0]

    def mark(block: np.ndarray, total_written: int) -> None:  # MicrophoneSource.on_block (audio thread)
        i = mark_n[0] % marks
        mark_written[i] = total_written
        mark_time[i] = time.monotonic()
        mark_n[0] += 1

    def find_mark(sample_index: int) -> Optional[int]:
        """The mark of the callback block holding capture sample ``sample_index`` (0-based)."""
        n = mark_n[0]
        for k in range(max(0, n - marks), n):
            i = k % marks
            if mark_written[i] > sample_index:
                return i
        return None

    try:
        mic = MicrophoneSource(
            _device_arg(args.device),
            on_block=mark,
            sample_rate=args.rate,
            block_s=args.block_ms / 1000.0,
            buffer_s=args.buffer_s,
            channel=args.channel,
            stall_timeout_s=max(args.stall_timeout, 2 * args.block_ms / 1000.0),
        )
        mic.start()
    except (SourceError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        if "no audio input device" in str(exc):
            print(f"{prog}: {_NO_DEVICE_HINT}", file=sys.stderr)
        return 2

    # Ctrl-C / SIGTERM set a flag; the loop (which wakes at least every 0.2 s)
    # then stops capture and flushes. A second Ctrl-C interrupts at once.
    stop = {"flag": False}

    def _on_signal(signum: int, frame: Any) -> None:
        if stop["flag"]:
            raise KeyboardInterrupt
        stop["flag"] = True

    old_int = signal.signal(signal.SIGINT, _on_signal)
    old_term = signal.signal(signal.SIGTERM, _on_signal)

    status = StatusLine(out, tty=False if args.json else None)
    tty = status.tty
    show_meter = (tty and not args.no_meter) or (not tty and args.meter)
    level_db = -90.0
    partial = ""
    latencies: list[float] = []  # s from the callback that delivered a chunk's last sample to its Partial
    dropped_total = 0
    last_level_line = 0.0
    model_rate = rec.config.sample_rate

    def emit_json(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    def draw() -> None:
        if not tty:
            return
        meter = f"{level_bar(level_db, 16)} {level_db:6.1f} dB │ " if show_meter else ""
        status.update(meter + fit_tail(partial, status.width() - len(meter) - 1))

    stream = rec.create_stream()
    stride = rec.config.stride

    def chunk_latency() -> None:
        """Latency of a Partial just produced, from its chunk's last sample (--stats)."""
        now = time.monotonic()
        # Last sample of the decoded chunk, in capture samples.
        last = int(stream.frames_done * stride * mic.sample_rate / model_rate) - 1
        i = find_mark(last)
        if i is None:
            return
        latencies.append(now - float(mark_time[i]))

    n_partials = 0

    def handle(ev: Any, live: bool) -> None:
        nonlocal partial, n_partials
        if isinstance(ev, Partial):
            n_partials += 1
            if live and args.stats:
                chunk_latency()
            partial = ev.text
            if args.json:
                emit_json(ev.to_dict())
            elif not tty:
                status.print(f"partial: {ev.text}")
        elif isinstance(ev, Final):
            partial = ""
            if args.json:
                emit_json(ev.to_dict())
            elif tty:
                status.print(ev.text)
            else:
                status.print(f"final: {ev.text}  [{ev.start:.2f}-{ev.end:.2f} s]")

    def warn_dropped() -> None:
        nonlocal dropped_total
        d = mic.take_dropped()
        if d:
            dropped_total += d
            msg = (f"dropped {d} samples ({d / mic.sample_rate:.2f} s of audio): inference fell behind the microphone "
                   f"(try --threads {max(2, (args.threads or 1) * 2)}, --int8, or a smaller model)")
            if args.json:
                emit_json({"type": "dropped", "samples": d, "seconds": round(d / mic.sample_rate, 3)})
            else:
                status.clear()
            print(f"{prog}: warning: {msg}", file=sys.stderr)

    t_start = time.monotonic()
    lost: Optional[str] = None  # why the device went away mid-capture, if it did
    # Tell the user (and tests) when audio is really flowing, not just when the device opened.
    try:
        while mic.ring.total_written == 0 and time.monotonic() - t_start < 5.0 and not stop["flag"]:
            time.sleep(0.01)
            mic.check()
    except DeviceLostError as exc:
        lost = str(exc)
    rate_note = f"{mic.sample_rate} Hz" + (f" -> {model_rate} Hz" if mic.sample_rate != model_rate else "")
    if lost is None and mic.ring.total_written == 0:
        print(f"{prog}: warning: no audio from {mic.device_name!r} after 5 s; still waiting", file=sys.stderr)
    elif lost is None:
        print(f"{prog}: listening on {mic.device_name!r} ({rate_note}); Ctrl-C to stop", file=sys.stderr)
    sys.stderr.flush()

    # --seconds counts from the first audio (device start-up can take a second or two).
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    latency_reported = getattr(getattr(mic, "_stream", None), "latency", None)
    cpu0 = time.process_time()
    wall0 = time.monotonic()
    samples_in = 0
    try:
        while not stop["flag"] and lost is None:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            wait = 0.2 if deadline is None else max(0.0, min(0.2, deadline - now))
            try:
                block = mic.read(timeout=wait)
            except DeviceLostError as exc:
                lost = str(exc)  # flush what was captured below, then report it
                break
            if block is None:
                if mic.ring.closed:
                    break
                draw()
                continue
            samples_in += block.shape[0]
            level_db = rms_dbfs(block)
            stream.accept_waveform(block, mic.sample_rate)
            while rec.is_ready(stream):  # one chunk at a time, so each Partial is timed against its own chunk
                for ev in rec.decode_stream(stream):
                    handle(ev, True)
            warn_dropped()
            if not tty and show_meter and now - last_level_line >= 1.0:
                last_level_line = now
                if args.json:
                    emit_json({"type": "level", "dbfs": round(level_db, 1)})
                else:
                    status.print(f"level: {level_db:.1f} dBFS")
            draw()
        # Stop capture, decode what is still buffered, then the last final.
        mic.stop()
        while True:
            block = mic.read(timeout=0)
            if block is None:
                break
            samples_in += block.shape[0]
            stream.accept_waveform(block, mic.sample_rate)
        stream.input_finished()
        while rec.is_ready(stream):
            for ev in rec.decode_stream(stream):
                handle(ev, False)
        warn_dropped()
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once, still print what we have
        mic.stop()
        status.clear()
        if partial:
            status.print(partial if tty else f"final: {partial}")
        return 130
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        mic.stop()
    status.clear()

    if args.stats:
        mic_latency = latency_reported
        wall = time.monotonic() - wall0
        cpu = time.process_time() - cpu0
        lat_ms = [x * 1000 for x in latencies]
        stats = {
            "type": "stats",
            "audio_s": round(samples_in / mic.sample_rate, 3),
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "cpu_percent": round(100.0 * cpu / wall, 1) if wall > 0 else None,
            "partials": n_partials,
            "partials_timed": len(latencies),
            "latency_ms_p50": round(_percentile(lat_ms, 50), 1) if lat_ms else None,
            "latency_ms_p95": round(_percentile(lat_ms, 95), 1) if lat_ms else None,
            "latency_ms_max": round(max(lat_ms), 1) if lat_ms else None,
            "portaudio_input_latency_ms": round(1000 * float(mic_latency), 1) if mic_latency is not None else None,
            "block_ms": args.block_ms,
            "chunk_ms": round(1000.0 * rec.config.chunk_samples / model_rate, 1),
            "dropped_samples": dropped_total,
            "portaudio_overflows": mic.status_overflows,
        }
        print(json.dumps(stats), file=sys.stderr)
    if lost is not None:
        print(f"{prog}: {lost}; the text above covers the audio captured until then", file=sys.stderr)
        if mic.stuck:
            # PortAudio is blocked on the dead device and sounddevice's atexit
            # handler would block on it too: leave without running it.
            out.flush()
            sys.stderr.flush()
            os._exit(1)
        return 1
    return 0
