"""wavstream.stream: the torch-free streaming runtime (numpy + onnxruntime).

Audio in (microphone, file, websocket, stdin), frame features and live CTC
text out. Start with ``Recognizer`` (recognizer.py has the full usage)::

    from wavstream.stream import Recognizer, Partial, Final
    rec = Recognizer.from_bundle("my_bundle")          # or Recognizer.default()
    for event in rec.feed(samples, 44100): ...        # as audio arrives
    for event in rec.finish(): ...                    # at the end: the last Final

Nothing in this package imports torch.
"""

from .bundle import FORMAT_VERSION, Bundle, BundleConfig, BundleError, BundleNotFoundError, StateSpec, load_bundle
from .ctc import LmConfig, StreamingCtcDecoder, Vocabulary, greedy_decode, prefix_beam_search
from .endpoint import EndpointConfig, Endpointer, EndpointRule
from .engines import (
    ChunkSizeError,
    Engine,
    EngineUnavailableError,
    OrtEngine,
    StateShapeError,
    StepResult,
    create_engine,
    stack_states,
    unstack_states,
)
from .errors import WavstreamError
from .events import Event, Features, Final, Partial, Word
from .recognizer import DEFAULT_MODEL_DIR, DecodingConfig, Recognizer, Stream, resolve_model
from .resample import AudioFormatError, StreamResampler
from .ring_buffer import RingBuffer, RingBufferClosed
from .sources import DeviceLostError, FileSource, MicrophoneSource, SourceError, StdinSource, list_input_devices

__all__ = [
    # API
    "Recognizer",
    "Stream",
    "DecodingConfig",
    "EndpointConfig",
    "EndpointRule",
    "Endpointer",
    "resolve_model",
    "DEFAULT_MODEL_DIR",
    "WavstreamError",
    # events
    "Event",
    "Partial",
    "Final",
    "Word",
    "Features",
    # bundles
    "FORMAT_VERSION",
    "Bundle",
    "BundleConfig",
    "StateSpec",
    "BundleError",
    "BundleNotFoundError",
    "load_bundle",
    # engines
    "Engine",
    "StepResult",
    "OrtEngine",
    "create_engine",
    "stack_states",
    "unstack_states",
    "ChunkSizeError",
    "StateShapeError",
    "EngineUnavailableError",
    # decoding
    "Vocabulary",
    "LmConfig",
    "StreamingCtcDecoder",
    "greedy_decode",
    "prefix_beam_search",
    # audio plumbing
    "RingBuffer",
    "RingBufferClosed",
    "StreamResampler",
    "AudioFormatError",
    "MicrophoneSource",
    "FileSource",
    "StdinSource",
    "SourceError",
    "DeviceLostError",
    "list_input_devices",
]
