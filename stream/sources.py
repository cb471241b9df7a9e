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
``DeviceLostError`` (a SourceError) comes from ``MicrophoneSource.read`` when
capture stops under the reader: PortAudio ended the stream (device unplugged,
sound server gone) or no callback came for ``stall_timeout_s``.

Standard input (``open_source("-")``) is sniffed: a WAV header (RIFF/RF64,
as arecord, sox and ffmpeg write to a pipe) is parsed and the samples are
streamed as they arrive; other containers libsndfile knows (FLAC, OGG, AIFF,
AU, CAF, W64, ID3-tagged MP3) are read whole and decoded; anything else is
raw s16le mono PCM at the given rate.
"""

from __future__ import annotations

import io
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Optional, Union

import numpy as np

from .errors import WavstreamError
from .resample import check_sample_rate
from .ring_buffer import RingBuffer

__all__ = [
    "SourceError",
    "DeviceLostError",
    "MicrophoneSource",
    "FileSource",
    "StdinSource",
    "list_input_devices",
    "open_source",
    "open_stdin",
]


class SourceError(WavstreamError):
    """An audio source cannot be opened or read."""


class DeviceLostError(SourceError):
    """A capture device stopped delivering audio mid-stream (unplugged, sound server stopped, stalled)."""


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


def default_input_index() -> Optional[int]:
    """Index of the system's default input device (as in list_input_devices), or None when there is none."""
    sd = _sounddevice()
    try:
        index = sd.default.device[0]
    except Exception:  # PortAudio without a default device
        return None
    return None if index is None or index < 0 else int(index)


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
        stall_timeout_s: ``read`` raises DeviceLostError when no callback has
            come for this long while capturing (None: never). PortAudio does
            not always stop a stream whose device vanished; this catches it.
        on_block: called as ``on_block(samples, total_written)`` after each
            captured block is in the ring (``samples``: the block's (n,)
            float32 view, valid only during the call; ``total_written``: ring
            samples written so far). It runs on PortAudio's audio thread:
            keep it to a few array operations (a level meter, a time stamp).
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
        stall_timeout_s: Optional[float] = 5.0,
        on_block: Optional[Callable[[np.ndarray, int], None]] = None,
    ) -> None:
        if stall_timeout_s is not None and not stall_timeout_s > block_s:
            raise ValueError(f"stall_timeout_s ({stall_timeout_s}) must be longer than a block ({block_s} s)")
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
        self.stall_timeout_s = stall_timeout_s
        self._last_callback = 0.0  # monotonic time of the latest callback (of start() before the first)
        self._lost = False  # check() found the device gone
        self._callbacks = 0  # callbacks so far
        # True when stop() could not release a lost device: PortAudio is blocked
        # on it, and sounddevice's exit handler (which stops the last stream)
        # would block the interpreter's exit too.
        self.stuck = False
        self._stream: Any = None
        self.on_block = on_block

    # The PortAudio callback: copy one channel into the ring, count overflows, stamp the time. Nothing else.
    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status and status.input_overflow:
            self.status_overflows += 1
        block = indata[:, self._channel]
        self.ring.push(block)
        self._last_callback = time.monotonic()
        self._callbacks += 1
        if self.on_block is not None:
            self.on_block(block, self.ring.total_written)

    @property
    def input_latency_s(self) -> Optional[float]:
        """PortAudio's reported input latency in seconds while capturing; None when stopped."""
        latency = getattr(self._stream, "latency", None)
        return None if latency is None else float(latency)

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
                self._last_callback = time.monotonic()
                self._stream.start()
            except Exception as exc:
                self._stream = None
                raise SourceError(f"cannot open input device {self.device_name!r} at {self.sample_rate} Hz: {exc}") from exc
        return self

    def stop(self) -> None:
        """Stop capture; iteration then drains what is buffered and ends."""
        if self._stream is not None:
            if self._lost:
                # A frozen sound server can block PortAudio's abort/close forever
                # (its ALSA thread waits on the server): bound the wait, then let go.
                releaser = threading.Thread(target=_release_stream, args=(self._stream,), daemon=True)
                releaser.start()
                releaser.join(1.0)
                self.stuck = releaser.is_alive()
            else:
                self._stream.stop()
                self._stream.close()
            self._stream = None
        self.ring.close()

    def __enter__(self) -> "MicrophoneSource":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def read(self, timeout: Optional[float] = 1.0) -> Optional[np.ndarray]:
        """One block, waiting up to ``timeout`` s; None on timeout. After stop(), the remainder then None.

        Raises:
            DeviceLostError: no whole block is buffered and capture has stopped
                or stalled (see check()). What is still buffered is not lost:
                stop() then read(timeout=0) returns it.
        """
        block = self.ring.read(self.block_samples, timeout=timeout)
        if block is None:
            if self.ring.closed:
                tail = self.ring.flush()
                return tail if tail.size else None
            self.check()
        return block

    def check(self) -> None:
        """Raise DeviceLostError if the capture stream has stopped by itself or stalled; else nothing.

        Two signs, because devices vanish in two ways: PortAudio ends the
        stream (its ALSA poll fails when PulseAudio exits: ``active`` turns
        False), or the stream stays "active" and no callback ever comes again.
        """
        st = self._stream
        if st is None:
            return  # not started, or stopped by us
        if not st.active:
            self._lost = True
            raise DeviceLostError(
                f"input device {self.device_name!r} stopped delivering audio: PortAudio ended the capture stream "
                "(the device was unplugged or its sound server stopped)"
            )
        idle = time.monotonic() - self._last_callback
        # A sound server can take seconds to deliver the first block (PulseAudio here: ~2 s).
        limit = None if self.stall_timeout_s is None else self.stall_timeout_s * (1 if self._callbacks else 2)
        if limit is not None and idle > limit:
            self._lost = True
            raise DeviceLostError(
                f"input device {self.device_name!r} delivered no audio for {idle:.1f} s "
                f"(limit {limit:g} s): the device or its sound server stopped responding"
            )

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


def _release_stream(stream: Any) -> None:
    try:
        stream.abort()
        stream.close()
    except Exception:  # the device is gone; nothing left to release
        pass


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


class _Prefixed(io.RawIOBase):
    """A binary stream with bytes already read from it put back in front."""

    def __init__(self, prefix: bytes, stream: BinaryIO) -> None:
        self._prefix = prefix
        self._stream = stream

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if self._prefix:
            if n is None or n < 0:
                out, self._prefix = self._prefix + self._stream.read(), b""
                return out
            out, self._prefix = self._prefix[:n], self._prefix[n:]
            return out
        return self._stream.read(n)


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    """n bytes, fewer only at end of stream (a pipe may return short reads)."""
    parts, got = [], 0
    while got < n:
        data = stream.read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def _mono(x: np.ndarray) -> np.ndarray:
    """(n, channels) -> (n,) float32."""
    return np.ascontiguousarray(x.mean(axis=1) if x.shape[1] > 1 else x[:, 0], dtype=np.float32)


# WAV format tags the pipe reader decodes itself; others go to libsndfile whole.
_WAV_PCM, _WAV_FLOAT, _WAV_EXTENSIBLE = 1, 3, 0xFFFE
# A data size a writer puts when it cannot know the length (a pipe): read to the end.
_WAV_UNKNOWN_SIZE = 0x7FFF0000


class _WavPipeSource:
    """A WAV arriving on a pipe, streamed block by block (arecord | wavstream transcribe -).

    libsndfile needs to seek, which a pipe cannot; the header is simple, so
    it is parsed here and the samples are decoded as they arrive. A data
    size of 0 or near 2**31/2**32 (what writers put when they cannot know
    the length) means "until the end of the stream".
    """

    def __init__(self, stream: BinaryIO, header: bytes, block_s: float) -> None:
        self._stream = stream
        fmt: Optional[tuple[int, int, int, int]] = None
        while True:
            chunk = _read_exact(stream, 8)
            header += chunk
            if len(chunk) < 8:
                raise SourceError("WAV on stdin ended before its data chunk")
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                break
            body = _read_exact(stream, size + (size & 1))  # chunks are padded to even sizes
            header += body
            if cid == b"fmt ":
                if size < 16:
                    raise SourceError(f"WAV on stdin has a {size}-byte fmt chunk (at least 16 expected)")
                tag, channels, rate, _byte_rate, align, bits = struct.unpack("<HHIIHH", body[:16])
                if tag == _WAV_EXTENSIBLE and size >= 26:
                    tag = struct.unpack("<H", body[24:26])[0]  # the sub-format GUID starts with the plain tag
                fmt = (tag, channels, rate, bits)
        if fmt is None:
            raise SourceError("WAV on stdin has its data chunk before any fmt chunk")
        tag, channels, rate, bits = fmt
        self.header = header  # everything read so far (for a fallback to libsndfile)
        self.supported = (tag == _WAV_PCM and bits in (8, 16, 24, 32)) or (tag == _WAV_FLOAT and bits in (32, 64))
        self.channels = channels
        if channels < 1:
            raise SourceError("WAV on stdin declares 0 channels")
        self.sample_rate = check_sample_rate(rate, "WAV sample rate on stdin")
        self._tag, self._bits = tag, bits
        self._frame_bytes = channels * bits // 8
        self._left: Optional[int] = None if size == 0 or size >= _WAV_UNKNOWN_SIZE else size
        self.block_samples = max(1, int(round(block_s * self.sample_rate)))

    def _decode(self, data: bytes) -> np.ndarray:
        bits, tag = self._bits, self._tag
        if tag == _WAV_FLOAT:
            x = np.frombuffer(data, "<f4" if bits == 32 else "<f8").astype(np.float32)
        elif bits == 8:
            x = (np.frombuffer(data, np.uint8).astype(np.float32) - 128.0) / 128.0  # 8-bit WAV is unsigned
        elif bits == 16:
            x = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
        elif bits == 24:
            b = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
            v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
        else:
            x = (np.frombuffer(data, "<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
        return _mono(x.reshape(-1, self.channels))

    def __iter__(self) -> Iterator[np.ndarray]:
        want = self.block_samples * self._frame_bytes
        carry = b""
        while self._left is None or self._left > 0:
            n = want if self._left is None else min(want, self._left)
            data = self._stream.read(n)
            if not data:
                break
            if self._left is not None:
                self._left -= len(data)
            data = carry + data
            usable = len(data) - len(data) % self._frame_bytes  # keep a split frame for the next read
            carry = data[usable:]
            if usable:
                yield self._decode(data[:usable])


class _DecodedSource:
    """Audio decoded whole from bytes by libsndfile (containers that cannot be streamed from a pipe)."""

    def __init__(self, data: bytes, block_s: float, what: str = "stdin") -> None:
        import soundfile as sf

        try:
            x, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except Exception as exc:  # soundfile.LibsndfileError (a RuntimeError)
            raise SourceError(f"unsupported or unreadable audio on {what} ({exc}); supported: {_SUPPORTED_HINT}, "
                              "or raw s16le PCM") from exc
        self.sample_rate = check_sample_rate(rate, f"sample rate of the audio on {what}")
        self.channels = int(x.shape[1])
        self._x = _mono(x)
        self.block_samples = max(1, int(round(block_s * self.sample_rate)))

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(0, self._x.shape[0], self.block_samples):
            yield self._x[i : i + self.block_samples]


# Container signatures that libsndfile decodes (first bytes of the stream).
_CONTAINER_MAGIC = {
    b"fLaC": "FLAC",
    b"OggS": "OGG",
    b"FORM": "AIFF",
    b".snd": "AU",
    b"caff": "CAF",
    b"riff": "W64",
    b"RIFX": "big-endian WAV",
    b"ID3": "MP3",
}


def open_stdin(
    raw_rate: int = 16000, *, block_s: float = 0.1, stream: Optional[BinaryIO] = None
) -> Union[StdinSource, _WavPipeSource, _DecodedSource]:
    """A source for audio on a binary stream (stdin by default), its format found from its first bytes.

    WAV (RIFF/RF64, PCM 8/16/24/32-bit or float): streamed as it arrives.
    Other containers libsndfile reads: read to the end, then decoded.
    No known header: raw s16le mono PCM at ``raw_rate`` Hz.
    Raises:
        SourceError: a header that promises audio but is broken or unsupported.
    """
    src = stream if stream is not None else sys.stdin.buffer
    head = _read_exact(src, 12)
    if len(head) == 12 and head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        wav = _WavPipeSource(src, head, block_s)
        if wav.supported:
            return wav
        return _DecodedSource(wav.header + src.read(), block_s, "stdin (WAV)")
    if any(head.startswith(m) for m in _CONTAINER_MAGIC):
        return _DecodedSource(head + src.read(), block_s)
    check_sample_rate(raw_rate, "stdin sample rate")
    return StdinSource(raw_rate, block_s=block_s, stream=_Prefixed(head, src))  # type: ignore[arg-type]


def open_source(
    spec: str, *, realtime: bool = False, block_s: float = 0.1, stdin_rate: int = 16000
) -> Union[FileSource, StdinSource, _WavPipeSource, _DecodedSource]:
    """'-' -> open_stdin(stdin_rate) (format sniffed, raw s16le at stdin_rate otherwise); anything else -> FileSource(spec).

    Every source has ``sample_rate`` and yields 1-D float32 blocks.
    """
    if spec == "-":
        return open_stdin(stdin_rate, block_s=block_s)
    return FileSource(spec, realtime=realtime, block_s=block_s)
