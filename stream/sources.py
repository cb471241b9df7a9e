"""Audio sources: microphone (sounddevice), file, stdin raw PCM.

Every source is an iterable of 1-D float32 blocks at ``source.sample_rate``
(the recogniser resamples), so the loop is the same for all of them:

    with MicrophoneSource(device=None) as mic:        # or FileSource(path), StdinSource(16000)
        for block in mic:
            for event in rec.feed(block, mic.sample_rate): ...

``MicrophoneSource``'s PortAudio callback ONLY copies into a RingBuffer (no
allocation, no model work, no locks held for long); iteration reads whole
blocks from it on the caller's thread. If the caller falls behind by more
than ``buffer_s`` seconds the oldest audio is dropped and counted:
``mic.dropped`` (total) and ``mic.take_dropped()`` (since the last call) say
how many samples were lost.

Errors raise ``SourceError`` naming the problem (no input device, with the
names of the devices that exist; unsupported or missing file).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Optional, Union

import numpy as np

from .resample import check_sample_rate
from .ring_buffer import RingBuffer

__all__ = ["SourceError", "MicrophoneSource", "FileSource", "StdinSource", "list_input_devices", "open_source"]


class SourceError(Exception):
    """An audio source cannot be opened or read."""


def _sounddevice() -> Any:
    try:
        import sounddevice as sd
    except OSError as exc:  # the PortAudio shared library is missing
        raise SourceError(f"microphone input needs the PortAudio library (apt-get install libportaudio2): {exc}") from exc
    except ImportError as exc:
        raise SourceError(f"microphone input needs sounddevice (pip install sounddevice): {exc}") from exc
    return sd


def list_input_devices() -> list[dict[str, Any]]:
    """Input-capable devices: [{'index', 'name', 'channels', 'default_samplerate'}]."""
    sd = _sounddevice()
    out = []
    for i, d in enumerate(sd.query_devices()):
        if d.get("max_input_channels", 0) > 0:
            out.append(
                {"index": i, "name": d["name"], "channels": d["max_input_channels"], "default_samplerate": d["default_samplerate"]}
            )
    return out


class MicrophoneSource:
    """Capture from a PortAudio input device into a RingBuffer.

    Args:
        device: index, (sub)name, or None for the system default input.
        sample_rate: capture rate; None uses the device's native default rate
            (the recogniser resamples, so no PortAudio-side conversion).
        block_s: seconds per block yielded by iteration (and per callback).
        buffer_s: ring buffer capacity in seconds; older audio is dropped
            beyond it when the reader falls behind.
        channel: which input channel to take (0 = first).
    Raises:
        SourceError: no input devices, unknown device, or PortAudio missing.
    """

    def __init__(
        self,
        device: Union[int, str, None] = None,
        *,
        sample_rate: Optional[float] = None,
        block_s: float = 0.1,
        buffer_s: float = 10.0,
        channel: int = 0,
    ) -> None:
        sd = self._sd = _sounddevice()
        inputs = list_input_devices()
        if not inputs:
            names = [d["name"] for d in sd.query_devices()] if len(sd.query_devices()) else []
            raise SourceError(f"no audio input device found (devices present: {names or 'none'})")
        try:
            info = sd.query_devices(device, kind="input")
        except (ValueError, sd.PortAudioError) as exc:
            listing = ", ".join(f"{d['index']}: {d['name']}" for d in inputs)
            raise SourceError(f"input device {device!r} not usable ({exc}); input devices: {listing}") from exc
        self.device_name: str = info["name"]
        self.device = device
        self.sample_rate = check_sample_rate(sample_rate or info["default_samplerate"], "microphone sample rate")
        if channel >= info["max_input_channels"]:
            raise SourceError(f"device {self.device_name!r} has {info['max_input_channels']} input channel(s); channel {channel} asked for")
        self._channel = channel
        self._channels = channel + 1
        self.block_samples = max(1, int(round(block_s * self.sample_rate)))
        self.ring = RingBuffer(max(self.block_samples * 2, int(buffer_s * self.sample_rate)))
        self.status_overflows = 0  # PortAudio-reported input overflows (driver side)
        self._stream: Any = None

    # The PortAudio callback: copy one channel into the ring, count overflows. Nothing else.
    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status and status.input_overflow:
            self.status_overflows += 1
        self.ring.push(indata[:, self._channel])

    def start(self) -> "MicrophoneSource":
        if self._stream is None:
            try:
                self._stream = self._sd.InputStream(
                    device=self.device,
                    samplerate=self.sample_rate,
                    channels=self._channels,
                    dtype="float32",
                    blocksize=self.block_samples,
                    callback=self._callback,
                )
                self._stream.start()
            except Exception as exc:
                self._stream = None
                raise SourceError(f"cannot open input device {self.device_name!r} at {self.sample_rate} Hz: {exc}") from exc
        return self

    def stop(self) -> None:
        """Stop capture; iteration then drains what is buffered and ends."""
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
        self.ring.close()

    def __enter__(self) -> "MicrophoneSource":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def read(self, timeout: Optional[float] = 1.0) -> Optional[np.ndarray]:
        """One block, waiting up to ``timeout`` s; None on timeout. After stop(), the remainder then None."""
        block = self.ring.read(self.block_samples, timeout=timeout)
        if block is None and self.ring.closed:
            tail = self.ring.flush()
            return tail if tail.size else None
        return block

    def __iter__(self) -> Iterator[np.ndarray]:
        self.start()
        while True:
            block = self.read(timeout=0.5)
            if block is None:
                if self.ring.closed:
                    return
                continue
            yield block

    @property
    def dropped(self) -> int:
        """Samples dropped so far because the reader fell behind."""
        return self.ring.dropped

    def take_dropped(self) -> int:
        """Samples dropped since the previous call."""
        return self.ring.take_dropped()


_SUPPORTED_HINT = "WAV, FLAC, OGG/Vorbis, Opus, MP3 (whatever libsndfile reads)"


class FileSource:
    """Blocks of an audio file, as fast as possible or paced in real time.

    Args:
        path: audio file readable by soundfile.
        realtime: sleep so blocks arrive at the audio's own pace (simulates a
            live source; end-to-end latency tests).
        block_s / block_samples: block size (block_samples wins if given).
    Raises:
        SourceError: missing or unsupported file.
    """

    def __init__(
        self,
        path: Union[str, Path],
        *,
        realtime: bool = False,
        block_s: float = 0.1,
        block_samples: Optional[int] = None,
    ) -> None:
        import soundfile as sf

        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"audio file not found: {self.path}")
        try:
            info = sf.info(str(self.path))
        except Exception as exc:  # soundfile.LibsndfileError (a RuntimeError)
            raise SourceError(f"unsupported or unreadable audio file {self.path} ({exc}); supported: {_SUPPORTED_HINT}") from exc
        self.sample_rate = int(info.samplerate)
        self.channels = int(info.channels)
        self.num_samples = int(info.frames)
        self.duration_s = self.num_samples / self.sample_rate if self.sample_rate else 0.0
        self.realtime = realtime
        self.block_samples = int(block_samples) if block_samples else max(1, int(round(block_s * self.sample_rate)))
        if self.block_samples < 1:
            raise ValueError(f"block size must be >= 1 sample, got {self.block_samples}")

    def __iter__(self) -> Iterator[np.ndarray]:
        import soundfile as sf

        t0 = time.monotonic()
        sent = 0
        with sf.SoundFile(str(self.path)) as f:
            for block in f.blocks(blocksize=self.block_samples, dtype="float32", always_2d=True):
                mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
                if self.realtime:
                    # Release a block only once its last sample "has been spoken".
                    due = t0 + (sent + mono.shape[0]) / self.sample_rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                sent += mono.shape[0]
                yield np.ascontiguousarray(mono, dtype=np.float32)

    def read_all(self) -> np.ndarray:
        """The whole file as (n,) float32 mono."""
        blocks = list(FileSource(self.path, block_samples=1 << 16))
        return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


class StdinSource:
    """Raw PCM from a binary stream (stdin by default): s16le mono at ``sample_rate``.

    Example: ``arecord -f S16_LE -r 16000 -c 1 -t raw | wavstream transcribe -``
    """

    def __init__(self, sample_rate: int, *, block_s: float = 0.1, stream: Optional[BinaryIO] = None, channels: int = 1) -> None:
        self.sample_rate = check_sample_rate(sample_rate, "stdin sample rate")
        self.channels = int(channels)
        self._stream = stream if stream is not None else sys.stdin.buffer
        self.block_samples = max(1, int(round(block_s * self.sample_rate)))

    def __iter__(self) -> Iterator[np.ndarray]:
        frame_bytes = 2 * self.channels
        want = self.block_samples * frame_bytes
        carry = b""
        while True:
            data = self._stream.read(want)
            if not data:
                break
            data = carry + data
            usable = len(data) - len(data) % frame_bytes  # keep a split sample for the next read
            carry = data[usable:]
            if usable:
                pcm = np.frombuffer(data[:usable], dtype="<i2").reshape(-1, self.channels)
                x = pcm.astype(np.float32) / 32768.0
                yield x.mean(axis=1) if self.channels > 1 else x[:, 0]


def open_source(spec: str, *, realtime: bool = False, block_s: float = 0.1, stdin_rate: int = 16000) -> Union[FileSource, StdinSource]:
    """'-' -> StdinSource(stdin_rate); anything else -> FileSource(spec)."""
    if spec == "-":
        return StdinSource(stdin_rate, block_s=block_s)
    return FileSource(spec, realtime=realtime, block_s=block_s)
