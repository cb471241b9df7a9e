"""The word LM in the CTC beam (stream/ctc.py + stream/lm/): scoring, streaming, lexicon, and a
regression guard on committed utterances with the default model and the default LM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wavstream.stream import Recognizer
from wavstream.stream.ctc import LmConfig, StreamingCtcDecoder, Vocabulary
from wavstream.stream.lm import DEFAULT_LM_PATH, load_lm
from wavstream.stream.recognizer import DecodingConfig
from wavstream.training.lm import KneserNeyConfig, build_arpa

ROOT = Path(__file__).resolve().parents[2]
VOCAB = Vocabulary(("<blank>", "|", "a", "c", "o", "t"))
IDS = {t: i for i, t in enumerate(VOCAB.tokens)}


def _logits(*frames: dict[str, float]) -> np.ndarray:
    """One frame per dict of token -> probability (the rest shares what is left)."""
    out = np.full((len(frames), len(VOCAB)), 1e-4)
    for t, f in enumerate(frames):
        for tok, p in f.items():
            out[t, IDS[tok]] = p
    return np.log(out / out.sum(1, keepdims=True))


# "c", then "o" slightly above "a", then "t", then a word break: acoustics alone say "cot".
CAT_OR_COT = _logits({"c": 0.9}, {"<blank>": 0.9}, {"o": 0.5, "a": 0.45}, {"t": 0.9}, {"|": 0.9}, {"<blank>": 0.9})


@pytest.fixture(scope="module")
def cat_lm(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("lm") / "cat.arpa"
    build_arpa(["a cat", "the cat sat", "a cat at a tot"] * 5, path, KneserNeyConfig(2))
    return str(path)


def test_the_lm_picks_the_word_it_knows(cat_lm) -> None:
    plain = StreamingCtcDecoder(VOCAB, "beam", 8)
    plain.accept(CAT_OR_COT)
    assert plain.finalize() == "cot"
    fused = StreamingCtcDecoder(VOCAB, "beam", 8, LmConfig(cat_lm, alpha=1.0, beta=0.0))
    fused.accept(CAT_OR_COT)
    assert fused.text == "cat"  # the partial already comes from the LM-fused beam (the word ended at "|")
    assert fused.finalize() == "cat"


def test_chunk_by_chunk_equals_all_at_once(cat_lm) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, len(VOCAB))) * 3
    lm = LmConfig(cat_lm, alpha=0.8, beta=0.5)
    whole = StreamingCtcDecoder(VOCAB, "beam", 6, lm, hotwords=["tac"])
    whole.accept(x)
    chunked = StreamingCtcDecoder(VOCAB, "beam", 6, lm, hotwords=["tac"])
    for i in range(0, 60, 7):
        chunked.accept(x[i : i + 7])
    assert chunked.text == whole.text
    assert chunked.finalize() == whole.finalize()


def test_a_lexicon_keeps_the_beam_to_its_words(tmp_path, cat_lm) -> None:
    lex = tmp_path / "words.txt"
    lex.write_text("cat\ntot\n")
    dec = StreamingCtcDecoder(VOCAB, "beam", 8, LmConfig(cat_lm, alpha=0.0, beta=0.0, lexicon=str(lex)))
    dec.accept(CAT_OR_COT)
    assert dec.finalize() == "cat"  # "cot" is not in the lexicon


def test_the_default_lm_ships_with_the_package() -> None:
    assert DEFAULT_LM_PATH.is_file() and DEFAULT_LM_PATH.stat().st_size < 5 * 2**20
    lm = load_lm("default")
    assert lm.order == 4 and "the" in lm.vocab
    assert lm.sentence_logp("the cat sat on the mat".split()) > lm.sentence_logp("mat the on sat cat the".split())


def _cer(ref: str, hyp: str) -> float:
    import jiwer

    return jiwer.cer(ref, hyp)


def test_beam_with_the_default_lm_is_no_worse_than_greedy_on_committed_utterances() -> None:
    """Regression guard: the committed default model and LM on the committed utterances (their sentences
    were left out of the LM's text). A tolerant bound: the LM must not make the text worse."""
    import soundfile as sf

    from wavstream.training.data.manifest import read_manifest
    from wavstream.training.evaluate import normalise_reference

    clips = [(ROOT / "stream" / "samples" / "sample.wav", (ROOT / "stream" / "samples" / "sample.txt").read_text())]
    clips += [(Path(e.path), e.text) for e in read_manifest(ROOT / "tests" / "data" / "eval_utts")]
    greedy = Recognizer.default(emit_features=False)
    fused = Recognizer.default(decoding=DecodingConfig("beam", 32, LmConfig("default", 0.3, 2.0)), emit_features=False)
    refs, g, f = [], [], []
    for path, text in clips:
        audio, rate = sf.read(path, dtype="float32")
        refs.append(normalise_reference(text))
        g.append(greedy.transcribe(audio, rate))
        f.append(fused.transcribe(audio, rate))
    cer_greedy, cer_lm = _cer(refs, g), _cer(refs, f)
    assert cer_lm <= cer_greedy + 0.01, (cer_greedy, cer_lm, list(zip(refs, g, f)))
