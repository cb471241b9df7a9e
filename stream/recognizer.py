"""The public recognition API: ``Recognizer`` and ``Stream``.

Shaped like sherpa-onnx's OnlineRecognizer so one core serves both a single
app stream and a batching server:

    rec = Recognizer.from_bundle("path/to/bundle")      # or Recognizer.default()
    s = rec.create_stream()
    s.accept_waveform(samples, sample_rate)            # any rate, any block size
    while rec.is_ready(s):
        for event in rec.decode_stream(s):             # Features / Partial / Final
            ...
    s.input_finished()                                 # end of audio: flush the tail
    while rec.is_ready(s):
        events = rec.decode_stream(s)

A server keeps one Stream per session and calls
``rec.decode_streams(ready_streams)``: ONE batched engine call over all of
them (their states stacked along the batch axis), events returned per stream.

For simple apps there is an internal default stream:

    for event in rec.feed(samples, sample_rate): ...
    for event in rec.finish(): ...                     # flush; next feed starts a new stream

and a callback style: ``rec.on_partial(fn)``, ``rec.on_final(fn)``,
``rec.on_features(fn)`` or ``rec.add_listener(obj)`` (any object with some of
``on_partial/on_final/on_features`` methods). Callbacks run on the thread
that calls decode/feed, for events of every stream, after the events are
computed.

What a Stream holds: the resampler (input rate -> 16 kHz), a sample queue
(lossless: the lossy RingBuffer belongs at the audio-callback boundary, see
sources.py), the engine state (batch 1), the CTC decoder, the endpointer and
the frame counters. Timestamps are seconds of 16 kHz audio accepted by this
stream.

Endpoints cut the text only; the model's audio state carries on, so context
across utterances is kept. Finals with empty text are not emitted.

Threading: a Recognizer and its Streams belong to one thread (the inference
loop). Audio from a callback thread goes through a RingBuffer
(sources.MicrophoneSource does this) or, in asyncio, through the event loop;
a server runs ``decode_streams`` in an executor and keeps all calls for one
Recognizer on that executor's single worker.
"""

from __future__ import annotations

import collections
import enum
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Deque, Iterator, Optional, Sequence, Union

import numpy as np

from .alignment import frame_levels
from .bundle import Bundle, BundleConfig, BundleNotFoundError, load_bundle
from .ctc import LmConfig, StreamingCtcDecoder, Vocabulary
from .endpoint import EndpointConfig, Endpointer
from .hotwords import Hotword
from .engines.base import Engine, StateStacker, StreamsFailedError, unstack_states
from .events import Event, Features, Final, Partial, Word
from .resample import AudioFormatError, StreamResampler, channels_first_layout, check_sample_rate, to_mono_float32

__all__ = ["Recognizer", "Stream", "StreamState", "DecodingConfig", "DEFAULT_MODEL_DIR", "resolve_model"]

# Where the package's embedded default bundle lives.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"


def resolve_model(model: Union[str, Path, None]) -> Path:
    """A ``--model`` value ('default', None or a folder path) -> bundle folder path.

    Raises BundleNotFoundError when 'default' is asked for but no embedded
    bundle is installed.
    """
    if model is None or str(model) == "default":
        if not (DEFAULT_MODEL_DIR / "config.json").is_file():
            raise BundleNotFoundError(
                f"no embedded default model is installed (expected a bundle at {DEFAULT_MODEL_DIR}); "
                "pass a bundle folder instead (Recognizer.from_bundle(PATH), --model PATH)"
            )
        return DEFAULT_MODEL_DIR
    return Path(model).expanduser()


@dataclass(frozen=True)
class DecodingConfig:
    method: str = "greedy"  # "greedy" (fastest) | "beam" (CTC prefix beam search)
    beam_size: int = 8  # beams kept per frame (beam only)
    lm: Optional[LmConfig] = None  # word n-gram LM fused into the beam (implies beam search)

    def __post_init__(self) -> None:
        # Checked here so a bad value fails when the config is made, not at the first chunk of audio.
        if self.method not in ("greedy", "beam"):
            raise ValueError(f"decoding method must be 'greedy' or 'beam', got {self.method!r}")
        if isinstance(self.beam_size, bool) or not isinstance(self.beam_size, (int, np.integer)) or self.beam_size < 1:
            raise ValueError(f"beam_size must be an integer >= 1, got {self.beam_size!r}")


class StreamState(enum.Enum):
    """Where a Stream is. Transitions only go down this list."""

    OPEN = "open"  # accepting audio
    FINISHED = "finished"  # input_finished() was called: the queued tail is still to be decoded
    DONE = "done"  # everything decoded and finalised: no more events


class Stream:
    """One audio stream's state. Create with ``Recognizer.create_stream()``."""

    def __init__(self, rec: "Recognizer", *, endpoint: Optional[EndpointConfig] = None,
                 hotwords: Optional[Sequence[Union[str, Hotword]]] = None) -> None:
        self._rec = rec
        cfg = rec.config
        self._chunk = cfg.chunk_samples
        self._resampler: Optional[StreamResampler] = None
        self._queue: Deque[np.ndarray] = collections.deque()
        self._queued = 0  # samples in _queue
        self.states: Sequence[np.ndarray] = rec.engine.init_state(1)
        self.decoder: Optional[StreamingCtcDecoder] = rec._make_decoder(hotwords)
        self.endpointer = Endpointer(endpoint or rec.endpoint_config, cfg.frame_shift_s)
        self.samples_accepted = 0  # 16 kHz samples queued so far (after resampling)
        self.frames_done = 0  # output frames produced so far (stream frame index)
        self.utterance_start_frame = 0
        self.segment = 0  # index of the current utterance
        self.state = StreamState.OPEN
        self._last_partial = ""
        self._level_tail: Optional[np.ndarray] = None  # the last step's levels a lagging model has yet to hear
        # Layout of 2-D input blocks once known: True = (channels, n), False = (n, channels).
        self._channels_first: Optional[bool] = None

    # ---------------------------------------------------------------- input
    def accept_waveform(self, samples: Any, sample_rate: int) -> None:
        """Queue audio: (n,), (n, channels) or (channels, n), float in [-1, 1] or int PCM, at ``sample_rate`` Hz.

        Any block size works (1 sample to minutes). The first call fixes the
        stream's input rate; later calls must use the same rate. Channels are
        averaged; the channel axis is the one of at most 32 (MAX_CHANNELS)
        entries, and a block short enough to fit both readings takes the
        layout of the stream's earlier blocks ((n, channels) if none).
        A refused block changes nothing: the stream carries on as before it.
        Raises:
            AudioFormatError (a ValueError): a shape or dtype that is not audio, NaN or
                infinite samples, or a block whose layout contradicts the earlier ones.
            ValueError: bad rate, or a rate change mid-stream.
            RuntimeError: called after input_finished().
        """
        if np.ndim(samples) == 0 and np.ndim(sample_rate) >= 1:
            raise TypeError("accept_waveform(samples, sample_rate): arguments look swapped (sherpa-onnx order is the reverse)")
        if self.finished:
            raise RuntimeError("accept_waveform() after input_finished(); create a new stream")
        rate = check_sample_rate(sample_rate)
        if self._resampler is not None and rate != self._resampler.in_rate:
            raise ValueError(f"stream started at {self._resampler.in_rate} Hz, this block says {rate} Hz; use one rate per stream")
        arr = np.asarray(samples)
        layout = self._layout(arr.shape) if arr.ndim == 2 else None
        x = to_mono_float32(arr, channels_first=layout)
        # Only a block that was accepted fixes the stream's rate and layout.
        if arr.ndim == 2 and self._channels_first is None and layout is not None:
            self._channels_first = layout
        if self._resampler is None:
            self._resampler = StreamResampler(rate, self._rec.config.sample_rate)
        if x.shape[0] == 0:
            return
        self._push(self._resampler.process(x))

    def _layout(self, shape: tuple[int, ...]) -> Optional[bool]:
        """channels-first? for a 2-D block, from its shape or (when it fits both) the stream's earlier blocks."""
        seen = channels_first_layout(shape)
        if seen is None:
            return self._channels_first if self._channels_first is not None else False
        if self._channels_first is not None and seen != self._channels_first:
            was, now = ("(channels, samples)", "(samples, channels)") if self._channels_first else ("(samples, channels)", "(channels, samples)")
            raise AudioFormatError(
                f"this block of shape {tuple(shape)} is {now} but the stream's earlier blocks were {was}; "
                "use one layout per stream"
            )
        return seen

    def _push(self, x: np.ndarray) -> None:
        if x.shape[0]:
            # Copy: the caller may reuse its buffer (sounddevice does).
            self._queue.append(np.array(x, dtype=np.float32, copy=True))
            self._queued += x.shape[0]
            self.samples_accepted += x.shape[0]

    def input_finished(self) -> None:
        """No more audio: the tail (resampler delay + last partial chunk) will be decoded.

        The last partial chunk is zero-padded to a whole chunk, and only its
        ceil(real_samples / stride) real frames are kept (docs/bundle.md).
        """
        if self.finished:
            return
        if self._resampler is not None:
            self._push(self._resampler.flush())
        self.state = StreamState.FINISHED

    # ---------------------------------------------------------------- state
    @property
    def finished(self) -> bool:
        """input_finished() was called (the stream may still have a tail to decode)."""
        return self.state is not StreamState.OPEN

    @property
    def done(self) -> bool:
        """Everything was decoded and finalised: no more events."""
        return self.state is StreamState.DONE

    @property
    def recognizer(self) -> "Recognizer":
        """The recogniser (model and latency) this stream is decoded with."""
        return self._rec

    @property
    def chunk_samples(self) -> int:
        """16 kHz samples per model step of this stream."""
        return self._chunk

    @property
    def queued_samples(self) -> int:
        return self._queued

    @property
    def text(self) -> str:
        """Partial text of the current utterance ('' without a decoder)."""
        return self.decoder.text if self.decoder is not None else ""

    def is_ready(self) -> bool:
        """True when a whole chunk is queued, or the input ended and still needs decoding."""
        return not self.done and (self._queued >= self._chunk or self.finished)

    def take_chunk(self) -> tuple[np.ndarray, int]:
        """One (chunk_samples,) chunk, zero-padded at the end; and its real sample count."""
        n = min(self._chunk, self._queued)
        out = np.zeros(self._chunk, dtype=np.float32)
        pos = 0
        while pos < n:
            head = self._queue[0]
            k = min(n - pos, head.shape[0])
            out[pos : pos + k] = head[:k]
            if k == head.shape[0]:
                self._queue.popleft()
            else:
                self._queue[0] = head[k:]
            pos += k
        self._queued -= n
        return out, n


    # --------------------------------------------------- per-chunk decoding
    def consume_step(self, feats: np.ndarray, logits: Optional[np.ndarray], codes: Optional[np.ndarray],
                     levels_db: Optional[np.ndarray] = None) -> list[Event]:
        """This stream's share of one engine step (its real frames) -> its events; ends it when it is over.

        levels_db: optional (T,) level of the step's audio per frame (alignment.frame_levels); word ends follow it.
        """
        rec = self._rec
        events: list[Event] = []
        T = int(feats.shape[0])
        heard = self._heard_levels(levels_db, T)
        if rec.emit_features:
            events.append(Features(np.array(feats, copy=True), self.frames_done, None if codes is None else np.array(codes, copy=True)))
        if self.decoder is not None and logits is not None and T:
            is_sil = np.argmax(logits, axis=-1) == rec.config.blank_id  # (T,)
            pos = 0
            while pos < T:
                n = self.endpointer.accept(is_sil[pos:])
                if n is None:
                    self.decoder.accept(logits[pos:], None if heard is None else heard[pos:])
                    pos = T
                else:
                    self.decoder.accept(logits[pos : pos + n], None if heard is None else heard[pos : pos + n])
                    pos += n
                    events.extend(self._end_utterance(self.frames_done + pos))
            text = self.decoder.text
            if text != self._last_partial:
                events.append(Partial(text, self.segment))
                self._last_partial = text
        self.frames_done += T
        if self.finished and self._queued == 0:
            events.extend(self.finish())
        return events

    def _heard_levels(self, levels_db: Optional[np.ndarray], T: int) -> Optional[np.ndarray]:
        """The level of the audio each of this step's T frames heard: a model whose spikes lag the sound by
        ``word_time_delay_frames`` hears in frame t the audio of frame t - delay (the frames before come
        from the previous step; silence before the stream's start)."""
        if levels_db is None or np.shape(levels_db) != (T,):
            self._level_tail = None
            return None
        lag = self._rec.config.word_time_delay_frames
        if lag == 0:
            return np.asarray(levels_db, dtype=np.float64)
        tail = self._level_tail if self._level_tail is not None else np.full(lag, -120.0)
        joined = np.concatenate([tail, np.asarray(levels_db, dtype=np.float64)])
        self._level_tail = joined[-lag:]
        return joined[:T]

    def _end_utterance(self, end_frame: int) -> list[Event]:
        """Close the current utterance at stream frame ``end_frame``; Final if it has text."""
        assert self.decoder is not None
        ep = self.endpointer
        text, spans = self.decoder.finalize_utterance()
        shift = self._rec.config.frame_shift_s
        events: list[Event] = []
        if text:
            # Times bound the speech (non-blank frames), not the trailing silence. The model's spikes lag the
            # sound by a measured number of frames (0 unless the bundle says): the utterance and its words are
            # moved back by it alike, so the words lie inside their Final.
            lag = self._rec.config.word_time_delay_frames
            base = self.utterance_start_frame
            first = base + max(0, (ep.first_speech_frame or 0) - lag)
            last = base + (ep.last_speech_frame if ep.last_speech_frame is not None else ep.utterance_frames - 1)
            words = tuple(Word(w.word, (base + max(0, w.start_frame - lag)) * shift,
                               (base + max(w.start_frame - lag + 1, w.end_frame - lag)) * shift, w.confidence)
                          for w in spans)
            start = min([first * shift, *(w.start for w in words)])
            end = max([(max(first, last - lag) + 1) * shift, *(w.end for w in words)])
            events.append(Final(text, start, end, self.segment, words))
            self.segment += 1
        ep.reset()
        self.utterance_start_frame = end_frame
        self._last_partial = ""
        return events

    def finish(self) -> list[Event]:
        """The input is over and decoded: the last utterance's Final (if any); the stream is done."""
        self.state = StreamState.DONE
        if self.decoder is None:
            return []
        return self._end_utterance(self.frames_done)


class Recognizer:
    """Streaming recogniser over an Engine. See the module docstring for usage.

    Args:
        engine: any Engine (OrtEngine, TensorRTEngine, ...).
        decoding: DecodingConfig (greedy by default).
        endpoint: EndpointConfig (sherpa-onnx's three rules by default).
        emit_features: emit a Features event per decoded chunk.
        decode_text: run CTC decoding (ignored when the bundle has no logits).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        decoding: Optional[DecodingConfig] = None,
        endpoint: Optional[EndpointConfig] = None,
        emit_features: bool = True,
        decode_text: bool = True,
    ) -> None:
        self.engine = engine
        self.bundle: Bundle = engine.bundle
        self.config: BundleConfig = engine.config
        self.decoding = decoding or DecodingConfig()
        self.endpoint_config = endpoint or EndpointConfig()
        self.emit_features = emit_features
        self.decode_text = decode_text and self.config.has_logits
        self.vocab: Optional[Vocabulary] = (
            Vocabulary(self.bundle.tokens or self.config.vocab, self.config.blank_id, self.config.word_delimiter)
            if self.config.has_logits
            else None
        )
        # A TensorRT engine bounds the batch by its optimisation profile.
        self.max_batch_size: Optional[int] = getattr(engine, "max_batch", None)
        self._listeners: list[tuple[type, Callable[[Any], None]]] = []
        self._default: Optional[Stream] = None
        self._stackers = threading.local()  # one StateStacker per thread that calls decode_streams
        if self.decode_text and self.decoding.lm is not None:
            self._make_decoder()  # fail now (a missing or bad LM file), not at first audio

    # ---------------------------------------------------------- construction
    @classmethod
    def from_bundle(
        cls,
        path: Union[str, Path, Bundle],
        *,
        backend: str = "onnxruntime",
        decoding: Optional[DecodingConfig] = None,
        endpoint: Optional[EndpointConfig] = None,
        emit_features: bool = True,
        decode_text: bool = True,
        latency_ms: Optional[int] = None,
        **engine_opts: Any,
    ) -> "Recognizer":
        """Load a bundle folder and build its engine.

        latency_ms: the chunk size to run (one the bundle serves: ``Bundle.config.latencies_ms``);
        default: the bundle's own. Smaller chunks give text sooner and cost more compute.

        engine_opts for backend="onnxruntime": quantized (bool, use
        model.int8.onnx), device ("auto"/"cpu"/"cuda"), intra_op_threads,
        inter_op_threads; for backend="tensorrt": device_id.
        Raises BundleError (BundleNotFoundError, UnsupportedLatencyError) naming what is wrong.
        """
        from .engines import create_engine

        if isinstance(path, Bundle):
            bundle = path if latency_ms is None or latency_ms == path.config.chunk_ms else load_bundle(path.path, latency_ms)
        else:
            bundle = load_bundle(path, latency_ms)
        engine = create_engine(bundle, backend, **engine_opts)
        return cls(engine, decoding=decoding, endpoint=endpoint, emit_features=emit_features, decode_text=decode_text)

    @classmethod
    def default(cls, **kwargs: Any) -> "Recognizer":
        """The package's embedded model (stream/default_model/). Same kwargs as from_bundle.

        Raises BundleNotFoundError if no embedded model is installed.
        """
        return cls.from_bundle(resolve_model("default"), **kwargs)

    def _make_decoder(self, hotwords: Optional[Sequence[Union[str, Hotword]]] = None) -> Optional[StreamingCtcDecoder]:
        if not self.decode_text or self.vocab is None:
            return None
        d = self.decoding
        # An LM or hotwords live in the beam: they switch greedy decoding to beam search.
        method = "beam" if (d.lm is not None or hotwords) else d.method
        return StreamingCtcDecoder(self.vocab, method, d.beam_size, d.lm, hotwords)

    # ------------------------------------------------------------- streams
    def create_stream(self, *, endpoint: Optional[EndpointConfig] = None,
                      hotwords: Optional[Sequence[Union[str, Hotword]]] = None) -> Stream:
        """A new stream; ``endpoint`` overrides the recogniser's endpointing for this stream only.

        hotwords: phrases to bias this stream's decoding towards ('phrase' or 'phrase:score', or Hotword;
        docs/decoding.md); they turn on beam search for this stream. Raises HotwordError for a bad list.
        """
        return Stream(self, endpoint=endpoint, hotwords=hotwords)

    def is_ready(self, stream: Stream) -> bool:
        """True when the stream has a whole chunk queued, or has ended and still needs decoding."""
        return stream.is_ready()

    def get_result(self, stream: Stream) -> str:
        """Current partial text of the stream's utterance."""
        return stream.text

    def decode_stream(self, stream: Stream) -> list[Event]:
        """Decode one chunk of ``stream`` (if ready); returns its events."""
        return self.decode_streams([stream])[0]

    def decode_streams(self, streams: Sequence[Stream]) -> list[list[Event]]:
        """One chunk for every ready stream in ONE batched engine call.

        Streams that are not ready get no events. Returns a list of event
        lists, one per input stream, in order. When the engine fails some
        streams and not others (Triton), those are over (``done``, no events)
        and StreamsFailedError is raised after the others are decoded: its
        ``failed`` maps their indices in ``streams`` to why, its ``result`` is
        this list.
        """
        results: list[list[Event]] = [[] for _ in streams]
        failed: dict[int, str] = {}
        todo = [i for i, s in enumerate(streams) if s.is_ready()]
        # An ended stream with nothing left queued needs no engine call, only finalising.
        step_idx = [i for i in todo if streams[i].queued_samples > 0]
        for i in todo:
            if streams[i].queued_samples == 0:
                results[i] = streams[i].finish()
        limit = self.max_batch_size or len(step_idx) or 1
        for g in range(0, len(step_idx), limit):
            group = step_idx[g : g + limit]
            chunks, reals = zip(*(streams[i].take_chunk() for i in group))
            samples = np.stack(chunks)  # (B, chunk_samples)
            if len(group) == 1:
                states = streams[group[0]].states
            else:
                stacker = getattr(self._stackers, "stacker", None)
                if stacker is None:
                    stacker = self._stackers.stacker = StateStacker()
                states = stacker.stack([streams[i].states for i in group])
            try:
                res, lost = self.engine.step(samples, states), {}
            except StreamsFailedError as exc:
                res, lost = exc.result, exc.failed
            if len(group) == 1:
                per_stream = [res.states]  # kept as is: device-resident states stay on the device
            else:
                # list(): a device-state handle is downloaded once here, not per row.
                out_states = list(res.states)
                # The stacked inputs live in buffers the next batch overwrites: an engine that hands an
                # input back as its output (Triton's stream ids) must not leave the streams views of them.
                out_states = [np.array(o) if isinstance(o, np.ndarray) and np.may_share_memory(o, i) else o
                              for o, i in zip(out_states, states)]
                per_stream = unstack_states(out_states, len(group))
            for b, i in enumerate(group):
                s = streams[i]
                if b in lost:
                    failed[i] = lost[b]
                    s.state = StreamState.DONE
                    continue
                s.states = per_stream[b]
                r = self.config.real_frames(reals[b])
                results[i] = s.consume_step(
                    res.features[b, :r],
                    None if res.logits is None else res.logits[b, :r],
                    None if res.codes is None else res.codes[b, :r],
                    # Word ends follow the input's level (stream/alignment.py); a few µs per chunk.
                    None if res.logits is None else frame_levels(chunks[b], self.config.stride)[:r],
                )
        # An engine that keeps streams' state elsewhere (Triton) frees the ended ones now.
        ended = [streams[i].states for i in todo if streams[i].done and i not in failed]
        if ended:
            self.engine.release(ended)
        for evs in results:
            self._dispatch(evs)
        if failed:
            raise StreamsFailedError(failed, results)
        return results

    # ----------------------------------------------------------- callbacks
    def on_partial(self, fn: Callable[[Partial], None]) -> Callable[[Partial], None]:
        """Register ``fn(Partial)``; usable as a decorator."""
        self._listeners.append((Partial, fn))
        return fn

    def on_final(self, fn: Callable[[Final], None]) -> Callable[[Final], None]:
        """Register ``fn(Final)``; usable as a decorator."""
        self._listeners.append((Final, fn))
        return fn

    def on_features(self, fn: Callable[[Features], None]) -> Callable[[Features], None]:
        """Register ``fn(Features)``; usable as a decorator."""
        self._listeners.append((Features, fn))
        return fn

    def add_listener(self, listener: Any) -> None:
        """Register an object's ``on_partial`` / ``on_final`` / ``on_features`` methods (those it has)."""
        for kind, name in ((Partial, "on_partial"), (Final, "on_final"), (Features, "on_features")):
            fn = getattr(listener, name, None)
            if callable(fn):
                self._listeners.append((kind, fn))

    def remove_listeners(self) -> None:
        self._listeners.clear()

    def _dispatch(self, events: Sequence[Event]) -> None:
        if not self._listeners:
            return
        for ev in events:
            for kind, fn in self._listeners:
                if isinstance(ev, kind):
                    fn(ev)

    # ------------------------------------------------ default-stream helpers
    @property
    def stream(self) -> Stream:
        """The internal default stream used by feed()/finish()."""
        if self._default is None:
            self._default = self.create_stream()
        return self._default

    def feed(self, samples: Any, sample_rate: int) -> Iterator[Event]:
        """Accept audio on the default stream and decode every ready chunk.

        Work happens now (callbacks fire even if the result isn't iterated);
        the returned iterator yields the events produced.
        """
        s = self.stream
        s.accept_waveform(samples, sample_rate)
        events: list[Event] = []
        while s.is_ready():
            events.extend(self.decode_stream(s))
        return iter(events)

    def finish(self) -> Iterator[Event]:
        """End the default stream: decode the tail, emit the last Final; the next feed() starts afresh."""
        s = self.stream
        s.input_finished()
        events: list[Event] = []
        while s.is_ready():
            events.extend(self.decode_stream(s))
        self._default = None
        return iter(events)

    def transcribe(self, samples: Any, sample_rate: int) -> str:
        """Whole-array convenience: the Finals' texts joined by spaces (uses a fresh stream)."""
        s = self.create_stream()
        s.accept_waveform(samples, sample_rate)
        s.input_finished()
        texts: list[str] = []
        while s.is_ready():
            texts.extend(e.text for e in self.decode_stream(s) if isinstance(e, Final))
        return " ".join(texts)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Recognizer({self.bundle.path}, family={c.family}, chunk={c.chunk_samples / c.sample_rate * 1000:.0f} ms, "
            f"engine={type(self.engine).__name__}, decoding={self.decoding.method})"
        )
