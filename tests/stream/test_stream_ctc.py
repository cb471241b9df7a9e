"""CTC decoding (greedy, prefix beam) and endpoint rules on constructed logits."""

from __future__ import annotations

import itertools
import math
import sys

import numpy as np
import pytest

from wavstream.stream.ctc import (
    StreamingCtcDecoder,
    Vocabulary,
    greedy_decode,
    log_softmax,
    prefix_beam_search,
)
from wavstream.stream.endpoint import EndpointConfig, Endpointer

VOCAB = Vocabulary(("<blank>", "|", "a", "b", "c", "<unk>"), blank_id=0, word_delimiter="|")


def _onehot_logits(ids: list[int], V: int = 6, peak: float = 10.0) -> np.ndarray:
    x = np.zeros((len(ids), V), np.float32)
    x[np.arange(len(ids)), ids] = peak
    return x


def test_greedy_collapses_repeats_and_removes_blanks() -> None:
    #        a a _ a b b | c _ c <unk>
    ids = [2, 2, 0, 2, 3, 3, 1, 4, 0, 4, 5]
    out = greedy_decode(_onehot_logits(ids), blank_id=0)
    assert out == [2, 2, 3, 1, 4, 4, 5]
    assert VOCAB.ids_to_text(out) == "aab cc"  # delimiter -> space, <unk> dropped


def test_prefix_beam_finds_the_more_probable_collapsed_prefix() -> None:
    # Two frames, P(blank)=0.6, P(a)=0.4 each: greedy says "", but
    # P("a") = 0.4*0.4 + 0.6*0.4 + 0.4*0.6 = 0.64 > P("") = 0.36.
    probs = np.array([[0.6, 0.4], [0.6, 0.4]])
    logits = np.log(probs)
    assert greedy_decode(logits, 0) == []
    nbest = prefix_beam_search(logits, blank_id=0, beam_size=4)
    assert nbest[0][0] == (1,)
    assert nbest[0][1] == pytest.approx(math.log(0.64))
    assert nbest[1][0] == () and nbest[1][1] == pytest.approx(math.log(0.36))


def _exact_prefix_probs(probs: np.ndarray, blank: int = 0) -> dict[tuple[int, ...], float]:
    """Sum over every alignment (brute force) of P(alignment), grouped by collapsed labels."""
    T, V = probs.shape
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(V), repeat=T):
        p = float(np.prod(probs[np.arange(T), path]))
        lab = tuple(k for k, _ in itertools.groupby(path) if k != blank)
        out[lab] = out.get(lab, 0.0) + p
    return out


def test_prefix_beam_matches_brute_force_with_wide_beam() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 3)) * 2
    probs = np.exp(log_softmax(logits))
    exact = _exact_prefix_probs(probs)
    best = max(exact, key=exact.get)
    nbest = prefix_beam_search(logits, blank_id=0, beam_size=1000, token_cutoff=3)
    assert nbest[0][0] == best
    for ids, lp in nbest:
        assert math.exp(lp) == pytest.approx(exact[ids], rel=1e-9)


def test_plain_beam_skips_tokens_below_the_cutoff_like_the_lm_beam() -> None:
    # 400 frames where "a" has p = 0.005 < e^-5 each: summed over its many paths, "a"-prefixes outweigh
    # the empty text, which the exact search finds; the decoder's beam (with or without an LM) never
    # extends a hypothesis by so unlikely a token, as greedy decoding would not either.
    p = np.full((400, 6), 1e-9)
    p[:, 0], p[:, 2] = 0.995, 0.005
    logits = np.log(p / p.sum(1, keepdims=True))
    assert prefix_beam_search(logits, beam_size=8)[0][0] != ()
    dec = StreamingCtcDecoder(VOCAB, "beam", beam_size=8)
    dec.accept(logits)
    assert dec.finalize() == ""


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_incremental_decoding_equals_whole_utterance(method: str) -> None:
    rng = np.random.default_rng(1)
    # Peaky random logits: runs of tokens and blanks like a real CTC model.
    ids = rng.choice(6, size=120, p=[0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
    logits = _onehot_logits(list(ids), peak=3.0) + rng.standard_normal((120, 6)).astype(np.float32)
    whole = StreamingCtcDecoder(VOCAB, method, beam_size=6)
    whole.accept(logits)
    want_ids, want_text = whole.token_ids, whole.text
    assert want_text  # non-trivial
    for split_seed in range(3):
        r = np.random.default_rng(split_seed)
        dec = StreamingCtcDecoder(VOCAB, method, beam_size=6)
        pos = 0
        partials = []
        while pos < 120:
            n = int(r.integers(1, 17))
            dec.accept(logits[pos : pos + n])
            partials.append(dec.text)
            pos += n
        assert dec.token_ids == want_ids
        assert dec.finalize() == want_text
        assert dec.text == "" and dec.num_frames == 0  # reset after finalize
    if method == "greedy":
        # Greedy partials only ever grow.
        assert all(b.startswith(a.rstrip()) for a, b in zip(partials, partials[1:]))


def test_decoder_rejects_wrong_vocab_size() -> None:
    dec = StreamingCtcDecoder(VOCAB)
    with pytest.raises(ValueError, match=r"\(frames, 6\)"):
        dec.accept(np.zeros((4, 5), np.float32))


def test_a_missing_lm_file_is_a_clear_error() -> None:
    from wavstream.stream.ctc import LmConfig
    from wavstream.stream.errors import WavstreamError
    from wavstream.stream.lm import LmFormatError

    with pytest.raises(LmFormatError, match="missing.arpa.*not found") as info:
        StreamingCtcDecoder(VOCAB, "beam", lm=LmConfig("missing.arpa"))
    assert isinstance(info.value, WavstreamError)


def test_an_lm_needs_beam_search() -> None:
    from wavstream.stream.ctc import LmConfig

    with pytest.raises(ValueError, match="method='beam'"):
        StreamingCtcDecoder(VOCAB, "greedy", lm=LmConfig("default"))


# ---------------------------------------------------------------- endpointing
SHIFT = 0.01  # 10 ms frames


def _frames(*runs: tuple[bool, float]) -> np.ndarray:
    """(is_silence, seconds) runs -> (T,) bool."""
    return np.concatenate([np.full(int(round(s / SHIFT)), sil, bool) for sil, s in runs])


def test_rule2_fires_after_1_2_s_of_silence_following_speech() -> None:
    ep = Endpointer(EndpointConfig(), SHIFT)
    frames = _frames((False, 0.5), (True, 3.0))
    n = ep.accept(frames)
    assert n == 50 + 120  # exactly 1.2 s of trailing silence


def test_rule1_fires_after_2_4_s_of_silence_with_nothing_decoded() -> None:
    ep = Endpointer(EndpointConfig(), SHIFT)
    assert ep.accept(_frames((True, 2.3))) is None
    n = ep.accept(_frames((True, 1.0)))
    assert n == 10  # 2.3 s + 0.1 s
    assert not ep.contains_nonsilence


def test_rule3_caps_utterance_length() -> None:
    ep = Endpointer(EndpointConfig(), SHIFT)
    n = ep.accept(_frames((False, 25.0)))
    assert n == 2000


def test_configurable_and_disabled() -> None:
    ep = Endpointer(EndpointConfig.with_times(rule2_silence_s=0.5), SHIFT)
    assert ep.accept(_frames((False, 0.2), (True, 1.0))) == 20 + 50
    off = Endpointer(EndpointConfig(enabled=False), SHIFT)
    assert off.accept(_frames((False, 0.2), (True, 30.0))) is None
