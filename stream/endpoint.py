"""Endpoint detection from CTC frames, with sherpa-onnx's three rules.

A frame is *silence* when its argmax is the blank token. An endpoint fires
when any enabled rule holds (defaults as in sherpa-onnx ``endpoint.h``):

- rule1: >= 2.4 s of trailing silence and nothing decoded yet (reset on long
  silence, so an idle microphone does not grow one endless utterance);
- rule2: >= 1.2 s of trailing silence after something was decoded (the
  normal end of a sentence);
- rule3: the utterance is >= 20 s long (bounded latency and memory).

Presets (``EndpointConfig.preset``) differ only in rule2's silence: the
wait between the end of speech and the Final. Measured with the default model
(end of speech -> Final, p50; share of utterances split in two by a pause;
docs/streaming.md has the table): "default" 1.2 s -> 1.29 s, no splits;
"fast" 0.8 s -> 0.87 s, no splits on synthetic or human test speech;
"command" 0.5 s -> 0.59 s, for short commands: 2 % of synthetic sentences but
28 % of read human lists split.

The endpointer works frame by frame and reports *which* frame fired, so the
recogniser can cut the utterance exactly there, whatever the chunk size.
Only the text is reset at an endpoint; the model's audio state continues.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

__all__ = ["EndpointRule", "EndpointConfig", "Endpointer", "PRESETS"]

# rule2's trailing silence (s) of each preset; see the module docstring for what each costs.
PRESETS = {"default": 1.2, "fast": 0.8, "command": 0.5}


@dataclass(frozen=True)
class EndpointRule:
    must_contain_nonsilence: bool  # the rule needs something decoded first
    min_trailing_silence_s: float  # seconds of trailing blank frames
    min_utterance_length_s: float  # seconds since the utterance began


@dataclass(frozen=True)
class EndpointConfig:
    enabled: bool = True
    rule1: EndpointRule = field(default_factory=lambda: EndpointRule(False, 2.4, 0.0))
    rule2: EndpointRule = field(default_factory=lambda: EndpointRule(True, 1.2, 0.0))
    rule3: EndpointRule = field(default_factory=lambda: EndpointRule(False, 0.0, 20.0))

    @classmethod
    def with_times(
        cls, rule1_silence_s: float = 2.4, rule2_silence_s: float = 1.2, max_utterance_s: float = 20.0, enabled: bool = True
    ) -> "EndpointConfig":
        """The three rules by their usual knobs (sherpa's --rule{1,2,3}-... flags).

        Raises:
            ValueError: a time that is not a positive, finite number of seconds
                (a silence of 0 or less would end an utterance at every frame).
        """
        for name, value in (("rule1_silence_s", rule1_silence_s), ("rule2_silence_s", rule2_silence_s),
                            ("max_utterance_s", max_utterance_s)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"endpoint {name} must be a positive number of seconds, got {value!r}")
        return cls(
            enabled=enabled,
            rule1=EndpointRule(False, rule1_silence_s, 0.0),
            rule2=EndpointRule(True, rule2_silence_s, 0.0),
            rule3=EndpointRule(False, 0.0, max_utterance_s),
        )


    @classmethod
    def preset(cls, name: str, rule1_silence_s: float = 2.4, max_utterance_s: float = 20.0) -> "EndpointConfig":
        """A named preset ("default", "fast", "command"). Raises ValueError for another name."""
        if name not in PRESETS:
            raise ValueError(f"endpoint preset must be one of {sorted(PRESETS)}, got {name!r}")
        return cls.with_times(rule1_silence_s, PRESETS[name], max_utterance_s)


class Endpointer:
    """Tracks one utterance's frames; finds the frame at which an endpoint fires."""

    def __init__(self, config: EndpointConfig, frame_shift_s: float) -> None:
        self.config = config
        self.frame_shift_s = frame_shift_s
        self.reset()

    def reset(self) -> None:
        self.utterance_frames = 0
        self.trailing_silence_frames = 0
        self.contains_nonsilence = False
        self.first_speech_frame: Optional[int] = None  # frame index within the utterance
        self.last_speech_frame: Optional[int] = None

    def _rule_fires(self, rule: EndpointRule) -> bool:
        if rule.must_contain_nonsilence and not self.contains_nonsilence:
            return False
        silence_s = self.trailing_silence_frames * self.frame_shift_s
        length_s = self.utterance_frames * self.frame_shift_s
        # A tiny epsilon makes 1.2 s of 10 ms frames (120 frames) count as 1.2 s.
        eps = 1e-9
        return silence_s + eps >= rule.min_trailing_silence_s and length_s + eps >= rule.min_utterance_length_s

    def accept(self, is_silence: np.ndarray) -> Optional[int]:
        """Consume frames until an endpoint fires.

        is_silence: (T,) bool, True where the frame's argmax is blank.
        Returns the number of frames consumed when an endpoint fired (the
        utterance ends after them; call reset() and feed the rest), or None
        if all T frames were consumed without an endpoint.
        """
        if not self.config.enabled:
            self._consume(is_silence)
            return None
        rules = (self.config.rule1, self.config.rule2, self.config.rule3)
        for t, sil in enumerate(np.asarray(is_silence, dtype=bool).tolist()):
            self._consume_one(sil)
            if any(self._rule_fires(r) for r in rules):
                return t + 1
        return None

    def _consume_one(self, sil: bool) -> None:
        if sil:
            self.trailing_silence_frames += 1
        else:
            self.trailing_silence_frames = 0
            self.contains_nonsilence = True
            if self.first_speech_frame is None:
                self.first_speech_frame = self.utterance_frames
            self.last_speech_frame = self.utterance_frames
        self.utterance_frames += 1

    def _consume(self, is_silence: np.ndarray) -> None:
        for sil in np.asarray(is_silence, dtype=bool).tolist():
            self._consume_one(sil)
