"""Hotwords: the context graph (stream/hotwords.py), its parsing, and biasing a real model's beam."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from common import espeak

from wavstream.stream import Final, Recognizer
from wavstream.stream.ctc import StreamingCtcDecoder, Vocabulary
from wavstream.stream.errors import WavstreamError
from wavstream.stream.hotwords import (MAX_HOTWORDS, ContextGraph, Hotword, HotwordError, parse_hotwords,
                                       read_hotwords_file)
from wavstream.stream.recognizer import DecodingConfig

ROOT = Path(__file__).resolve().parents[2]


def _walk(graph: ContextGraph, tokens: list[int]) -> list[float]:
    """The live bonus (committed + state's) after each token."""
    node, committed = graph.root, 0.0
    out = []
    for t in tokens:
        node, committed = graph.step(node, committed, t)
        out.append(committed + node.bonus)
    return out


def test_a_partial_match_earns_per_token_and_gives_it_back_when_it_fails() -> None:
    g = ContextGraph([([1, 2, 3], 1.0)])
    assert _walk(g, [1, 2]) == [1.0, 2.0]
    assert _walk(g, [1, 2, 5]) == [1.0, 2.0, 0.0]  # failed: everything given back
    assert _walk(g, [1, 2, 3, 5]) == [1.0, 2.0, 3.0, 3.0]  # completed: kept


def test_failure_links_keep_the_longest_suffix_that_still_matches() -> None:
    # Phrases "abc" and "bcd" (a=1, b=2, c=3, d=4): after "ab" fails on "c"... no, after "abx" nothing is left,
    # but "abc" then "d" completes "bcd" through the failure link of "abc" -> "bc".
    g = ContextGraph([([1, 2, 3], 1.0), ([2, 3, 4], 2.0)])
    assert _walk(g, [1, 2, 9]) == [1.0, 2.0, 0.0]
    # "a b b c d": "ab" then "b" falls back to "b" of "bcd" (bonus 2), then "bc" (4), "bcd" complete (6).
    assert _walk(g, [1, 2, 2, 3, 4]) == [1.0, 2.0, 2.0, 4.0, 6.0]


def test_a_phrase_that_starts_a_longer_one_lets_the_longer_one_complete() -> None:
    # "new" = 1 2 3, "new york" = 1 2 3 4 5 6 (4 the delimiter): reaching "new" must not end the match.
    g = ContextGraph([([1, 2, 3], 1.0), ([1, 2, 3, 4, 5, 6], 1.0)])
    assert _walk(g, [1, 2, 3, 4, 5, 6]) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert _walk(g, [1, 2, 3, 4, 9]) == [1.0, 2.0, 3.0, 4.0, 3.0]  # "new car": "new" kept, the rest given back
    assert _walk(g, [1, 2, 9]) == [1.0, 2.0, 0.0]


def test_the_longer_hotword_wins_in_the_beam() -> None:
    # The model slightly prefers "a" to "o": "new yark" without biasing; "new york" with both phrases listed.
    tokens = ("<blank>", "|", "n", "e", "w", "y", "o", "r", "k", "a")
    vocab = Vocabulary(tokens)
    path = ["n", "e", "w", "|", "y", None, "r", "k", "<blank>"]
    p = np.full((len(path), len(tokens)), 1e-3)
    for t, tok in enumerate(path):
        if tok is None:
            p[t, tokens.index("a")], p[t, tokens.index("o")] = 0.6, 0.4
        else:
            p[t, tokens.index(tok)] = 1.0
    logits = np.log(p / p.sum(1, keepdims=True))

    def text(hotwords) -> str:
        dec = StreamingCtcDecoder(vocab, "beam", 8, hotwords=hotwords)
        dec.accept(logits)
        return dec.finalize()

    assert text(["new:1"]) == "new yark"
    assert text(["new:1", "new york:1"]) == "new york"
    assert text(["new york:1", "new:1"]) == "new york"


def test_parse_phrases_and_scores() -> None:
    hw = parse_hotwords(["Quixotic", "new  york:3.5", "note: urgent"])
    assert hw[0] == Hotword("quixotic") and hw[1] == Hotword("new york", 3.5)
    assert hw[2].phrase == "note: urgent"  # a colon not followed by a number stays in the phrase
    for bad in (["  "], ["x:0"], ["x:-1"], ["x" * 200], [3]):
        with pytest.raises(HotwordError) as info:
            parse_hotwords(bad)
        assert isinstance(info.value, WavstreamError)
    with pytest.raises(HotwordError, match=f"at most {MAX_HOTWORDS}"):
        parse_hotwords(["w"] * (MAX_HOTWORDS + 1))


def test_hotwords_file(tmp_path) -> None:
    f = tmp_path / "hot.txt"
    f.write_text("# names\nkowalski:3\n\nzhivago\n")
    assert read_hotwords_file(f) == [Hotword("kowalski", 3.0), Hotword("zhivago")]
    with pytest.raises(HotwordError, match="cannot read"):
        read_hotwords_file(tmp_path / "none.txt")


def test_a_phrase_the_vocabulary_cannot_spell_is_refused() -> None:
    vocab = Vocabulary(("<blank>", "|", "a", "b"))
    with pytest.raises(HotwordError, match="cannot spell"):
        StreamingCtcDecoder(vocab, "beam", hotwords=["abc"])


def test_biasing_pulls_a_hotword_out_of_constructed_logits() -> None:
    # Frames where "b" is slightly less likely than "c": the beam says "ac", the hotword "ab" wins.
    vocab = Vocabulary(("<blank>", "|", "a", "b", "c"))
    p = np.full((3, 5), 1e-3)
    p[0, 2] = 1.0
    p[1, 3], p[1, 4] = 0.4, 0.6
    p[2, 0] = 1.0
    logits = np.log(p / p.sum(1, keepdims=True))
    plain = StreamingCtcDecoder(vocab, "beam", 4)
    plain.accept(logits)
    biased = StreamingCtcDecoder(vocab, "beam", 4, hotwords=["ab:1"])
    biased.accept(logits)
    assert plain.finalize() == "ac" and biased.finalize() == "ab"


# ----------------------------------------------------------- the default model
if shutil.which("espeak-ng") is None:  # scripts/test.sh installs it (.ci/system-packages.txt)
    raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng (or run bash scripts/test.sh)")


_say = espeak


def _text(rec: Recognizer, audio: np.ndarray, rate: int = 16000, hotwords=None) -> str:
    s = rec.create_stream(hotwords=hotwords)
    s.accept_waveform(audio, rate)
    s.input_finished()
    texts = []
    while s.is_ready():
        texts += [e.text for e in rec.decode_stream(s) if isinstance(e, Final)]
    return " ".join(texts)


@pytest.fixture(scope="module")
def beam() -> Recognizer:
    return Recognizer.default(decoding=DecodingConfig("beam", 8), emit_features=False)


@pytest.mark.parametrize("sentence,word", [("open the quixotic file", "quixotic"), ("the quasar is bright", "quasar")])
def test_a_rare_word_is_recognised_only_with_its_hotword(beam, sentence, word) -> None:
    audio = _say(sentence)
    assert word not in _text(beam, audio)  # the model alone misspells it
    assert word in _text(beam, audio, hotwords=[word])  # spelled right (the model may join it to the next word)


def test_hotwords_do_not_change_other_utterances(beam) -> None:
    import soundfile as sf

    from wavstream.training.data.manifest import read_manifest

    clips = [sf.read(ROOT / "stream" / "samples" / "sample.wav", dtype="float32")]
    clips += [sf.read(e.path, dtype="float32") for e in read_manifest(ROOT / "tests" / "data" / "eval_utts")[:4]]
    for audio, rate in clips:
        assert _text(beam, audio, rate, hotwords=["quixotic", "pyxis", "kowalski"]) == _text(beam, audio, rate)


def test_a_greedy_recogniser_switches_a_stream_with_hotwords_to_beam_search() -> None:
    rec = Recognizer.default(emit_features=False)
    assert rec.create_stream().decoder.method == "greedy"
    s = rec.create_stream(hotwords=["quixotic"])
    assert s.decoder.method == "beam"
    assert "quixotic" in _text(rec, _say("open the quixotic file"), hotwords=["quixotic"]).split()


def test_a_hotword_outside_the_lm_is_still_recognised_with_the_lm() -> None:
    from wavstream.stream.ctc import LmConfig

    rec = Recognizer.default(decoding=DecodingConfig("beam", 16, LmConfig("default")), emit_features=False)
    audio = _say("open the quixotic file")
    assert "quixotic" not in _text(rec, audio)
    assert "quixotic" in _text(rec, audio, hotwords=["quixotic"]).split()


def test_merge_adds_a_session_list_to_a_server_list() -> None:
    from wavstream.stream.hotwords import merge_hotwords

    merged = merge_hotwords(["Quixotic", "pyxis:3"], ["pyxis:5", "kowalski"])
    assert merged == [Hotword("quixotic"), Hotword("pyxis", 5.0), Hotword("kowalski")]  # the session's score wins
    assert merge_hotwords([], []) == []
    with pytest.raises(HotwordError, match="with the server's"):
        merge_hotwords([f"w{i}" for i in range(MAX_HOTWORDS)], ["extra"])
