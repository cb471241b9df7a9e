"""The modified Kneser-Ney builder (training/lm/) and the ARPA reader (stream/lm/) together."""

from __future__ import annotations

import io
import math

import pytest

from wavstream.stream.lm import LmFormatError, NgramLm, load_lm
from wavstream.training.lm import KneserNeyConfig, build_arpa
from wavstream.training.lm.kneser_ney import estimate

TEXT = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the cat ate",
        "on the mat the cat sat", "the dog ran", "a dog ran on the mat"] * 3 + ["the bird sang", "a bird sat"]


def _lm(tmp_path, sentences, config) -> NgramLm:
    path = tmp_path / "lm.arpa.gz"
    build_arpa(sentences, path, config)
    return load_lm(path)


def _contexts(lm: NgramLm) -> set[tuple[str, ...]]:
    """Every context the model can be in: the empty one and each listed n-gram short enough to be one."""
    return {()} | {g for g in lm._grams if "</s>" not in g and len(g) < lm.order}


@pytest.mark.parametrize("config", [KneserNeyConfig(2), KneserNeyConfig(3), KneserNeyConfig(3, (2,)),
                                    KneserNeyConfig(4, (1, 2, 3)), KneserNeyConfig(3, min_word_count=2)],
                         ids=["2-gram", "3-gram", "3-gram-pruned", "4-gram-pruned", "3-gram-unk"])
def test_every_distribution_sums_to_one(tmp_path, config) -> None:
    lm = _lm(tmp_path, TEXT, config)
    predicted = sorted(lm.vocab - {"<s>"})
    assert "</s>" in predicted and "<unk>" in predicted
    for h in _contexts(lm):
        total = sum(math.exp(lm.score(h, w)[0]) for w in predicted)
        assert total == pytest.approx(1.0, abs=1e-5), h


def test_a_known_small_bigram_by_hand(tmp_path) -> None:
    # Text "a b" and "a". Too little for estimated discounts: D1, D2, D3+ = 0.5, 1, 1.5.
    # Unigram continuation counts: a 1 (after <s>), b 1 (after a), </s> 2 (after a and b); total 4,
    # gamma = (0.5*2 + 1*1)/4 = 0.5 spread over 4 words (a, b, </s>, <unk>):
    #   p(a) = p(b) = 0.5/4 + 0.5/4 = 0.25, p(</s>) = 1/4 + 0.125 = 0.375, p(<unk>) = 0.125.
    # Bigrams (raw counts, the top order): after <s>: a x2 -> p(a|<s>) = (2-1)/2 + (1*1/2) * 0.25 = 0.625;
    # after a: b x1, </s> x1 -> gamma 0.5: p(b|a) = 0.5/2 + 0.5*0.25 = 0.375, p(</s>|a) = 0.25 + 0.5*0.375 = 0.4375.
    lm = _lm(tmp_path, ["a b", "a"], KneserNeyConfig(2))
    p = {w: math.exp(lm.score((), w)[0]) for w in ("a", "b", "</s>", "<unk>", "zebra")}
    assert p["a"] == pytest.approx(0.25, abs=1e-6) and p["b"] == pytest.approx(0.25, abs=1e-6)
    assert p["</s>"] == pytest.approx(0.375, abs=1e-6)
    assert p["<unk>"] == pytest.approx(0.125, abs=1e-6) and p["zebra"] == p["<unk>"]  # unknown words are <unk>
    assert math.exp(lm.score(("<s>",), "a")[0]) == pytest.approx(0.625, abs=1e-6)
    assert math.exp(lm.score(("a",), "b")[0]) == pytest.approx(0.375, abs=1e-6)
    assert math.exp(lm.score(("a",), "</s>")[0]) == pytest.approx(0.4375, abs=1e-6)
    # Unseen bigram: backoff(b) * p(a) where backoff(b) = (1 - p(</s>|b)) / (1 - p(</s>)), p(</s>|b) = 0.5 + 0.5*0.375.
    assert math.exp(lm.score(("b",), "a")[0]) == pytest.approx((1 - 0.6875) / (1 - 0.375) * 0.25, abs=1e-6)


def test_continuation_counts_make_a_word_seen_in_one_context_unlikely_elsewhere(tmp_path) -> None:
    # "francisco" is frequent but always after "san": its unigram (continuation) probability is low.
    text = ["i live in san francisco"] * 10 + ["i like the cat", "i like a dog", "i like the dog", "the cat likes me"]
    lm = _lm(tmp_path, text, KneserNeyConfig(2))
    assert lm.score((), "francisco")[0] < lm.score((), "dog")[0]  # 10 times after one word < twice after two
    assert lm.score(("san",), "francisco")[0] > math.log(0.8)


def test_pruning_shrinks_the_model_and_keeps_prefixes(tmp_path) -> None:
    full = estimate(TEXT, KneserNeyConfig(4))
    pruned = estimate(TEXT, KneserNeyConfig(4, (2, 3)))
    assert sum(map(len, pruned.grams)) < sum(map(len, full.grams))
    for n in range(2, 5):
        for g in pruned.grams[n - 1]:
            assert g[:-1] in pruned.grams[n - 2], g  # ARPA: every n-gram's context is listed


def test_arpa_text_has_the_standard_layout(tmp_path) -> None:
    out = io.StringIO()
    model = build_arpa(["a b", "a"], out, KneserNeyConfig(2))
    text = out.getvalue()
    assert text.startswith("\\data\\\nngram 1=5\nngram 2=") and text.rstrip().endswith("\\end\\")
    assert "-99.000000\t<s>" in text and "\\2-grams:" in text
    assert len(model.grams) == 2


def test_bad_input_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="no text"):
        estimate(["", "  "])
    with pytest.raises(ValueError, match="order"):
        KneserNeyConfig(0)
    bad = tmp_path / "bad.arpa"
    bad.write_text("hello world\n")
    with pytest.raises(LmFormatError, match="not an ARPA file"):
        load_lm(bad)
    with pytest.raises(LmFormatError, match="not found"):
        load_lm(tmp_path / "none.arpa")


def test_lm_text_leaves_out_the_corpus_dev_and_test_sentences(tmp_path) -> None:
    from wavstream.training.data import text as T
    from wavstream.training.data.corpus import sentence_pools
    from wavstream.training.lm.text import training_sentences

    pools = sentence_pools(T.load_sentences(), 0, 300, 300)
    manifest = tmp_path / "extra_dev.tsv"
    manifest.write_text("path\tnum_samples\ttext\nx.wav\t16000\t" + pools["train"][0] + "\n")
    text = set(training_sentences(0, 300, 300, exclude_manifests=[manifest], extra=["a sentence of my own"]))
    assert not text & set(pools["dev"]) and not text & set(pools["test"])
    assert pools["train"][0] not in text  # listed in an excluded manifest
    assert pools["train"][1] in text and "a sentence of my own" in text
