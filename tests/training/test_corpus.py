"""Corpus text normalisation, TTS engines (espeak-ng, Kokoro) and the corpus builder."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from wavstream.training.data import corpus as C
from wavstream.training.data import engines as E
from wavstream.training.data import kokoro as K
from wavstream.training.data import manifest as M
from wavstream.training.data import text as T

HAVE_ESPEAK = shutil.which("espeak-ng") is not None
HAVE_TEXT = T.FORTUNE_DIR.is_dir() and T.WORDNET_DIR.is_dir() and bool(T.load_wordlist())
TTS_HINT = ("espeak-ng/fortunes/wordnet-base/wamerican not installed: run bash scripts/test.sh "
            "(or training/data/install_engines.sh)")


@pytest.fixture
def tts_tools():
    """A missing system component is a failure with the install hint, never a skip."""
    if not (HAVE_ESPEAK and HAVE_TEXT):
        raise RuntimeError(TTS_HINT)


needs_tts = pytest.mark.usefixtures("tts_tools")


# ---------------------------------------------------------------- text

def test_numbers_spelled_out():
    assert T.number_to_words(0) == "zero"
    assert T.number_to_words(15) == "fifteen"
    assert T.number_to_words(42) == "forty two"
    assert T.number_to_words(100) == "one hundred"
    assert T.number_to_words(1234) == "one thousand two hundred thirty four"
    assert T.number_to_words(2_000_005) == "two million five"
    assert T.ordinal_to_words(21) == "twenty first"
    assert T.ordinal_to_words(12) == "twelfth"
    assert T.ordinal_to_words(30) == "thirtieth"
    assert T.normalize("I have 3 cats and 1,234 dogs") == "i have three cats and one thousand two hundred thirty four dogs"
    assert T.normalize("In 1984, the 2nd try cost $5.") == "in nineteen eighty four the second try cost five dollars"
    assert T.normalize("pi is 3.14") == "pi is three point one four"
    assert T.normalize("50% off") == "fifty percent off"


def test_punctuation_and_case():
    assert T.normalize('"Hello," she said -- "it\'s   FINE!"') == "hello she said it's fine"
    assert T.normalize("rock & roll; semi-colon... (brackets) [x]") == "rock and roll semi colon brackets x"
    assert T.normalize("\u2018Curly\u2019 quotes \u201cdon\u2019t\u201d matter") == "curly quotes don't matter"
    assert T.normalize("'tis the dogs' bone") == "tis the dogs bone"
    out = T.normalize("Caf\u00e9 na\u00efve \u00fcber 7:30!?")
    assert out == "cafe naive uber seven thirty"
    assert set(out) <= set(T.VOCAB)


def test_clean_filter():
    words = frozenset("the cat sat on mat".split())
    assert T.is_clean("the cat sat on the mat", words)
    assert not T.is_clean("the cat", words)  # too short
    assert not T.is_clean("the dog sat on the mat", words)  # unknown word
    assert not T.is_clean("the cat sat " * 10, words)  # too long


@needs_tts
def test_sentence_sources():
    sents = T.load_sentences()
    assert len(sents) > 40000
    assert len(set(sents)) == len(sents) and sents == sorted(sents)
    words = T.load_wordlist()
    for s in sents[::997]:
        assert set(s) <= set(T.VOCAB) and "  " not in s
        assert 3 <= len(s.split()) <= 20
        assert all(w in words for w in s.split())


# ---------------------------------------------------------------- engines

def test_missing_engine_is_named(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    ok, missing = E.available_engines(["espeak", "flite", "pico"])
    assert ok == []
    assert any("espeak-ng" in m and "apt-get" in m for m in missing)
    assert any("libttspico-utils" in m for m in missing)
    with pytest.raises(ValueError, match="unknown engine"):
        E.get_engine("nope")


@needs_tts
def test_espeak_synth():
    eng = E.EspeakNG()
    voices = eng.voices()
    assert len(voices) >= 100 and len({v.variant for v in voices}) >= 50
    audio = eng.synth("hello there general kenobi", voices[0],
                      eng.sample_params(np.random.default_rng(0)))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.5 < len(audio) / 16000 < 5 and np.abs(audio).max() > 0.05


def test_speaker_split_is_disjoint():
    class Fake(E.Engine):
        def __init__(self, name, n):
            self.name, self.n = name, n

        def voices(self):
            return [E.Voice(self.name, f"v{i}", "", speaker=f"{self.name}:{i}") for i in range(self.n)]

    engs = [Fake("big", 40), Fake("three", 3), Fake("one", 1)]
    sp = C.split_voices(engs, seed=3, holdout_frac=0.1)
    train = {v for vs in sp["train"].values() for v in vs}
    for split in ("dev", "test"):
        held = {v for vs in sp[split].values() for v in vs}
        assert held and not (held & train)
    assert len(sp["dev"]["big"]) == 4 and len(sp["test"]["big"]) == 4
    assert "one" not in sp["train"] and sp["test"]["one"]  # a single-voice engine is held out
    assert len(sp["train"]["three"]) == 2
    assert C.split_voices(engs, seed=3) == sp


# ---------------------------------------------------------------- Kokoro

def _espeak_ipa_batch(sentences):
    """espeak-ng's IPA for many sentences in one process, one output line each."""
    out = subprocess.run(["espeak-ng", "-q", "--ipa", "--tie=^", "-v", "en-us"], capture_output=True,
                         text=True, check=True, input="".join(f"{s}.\n" for s in sentences)).stdout
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == len(sentences)
    return lines


def test_kokoro_symbol_rewrite():
    # espeak-ng 1.51 output -> Kokoro's American symbols
    assert K.ipa_to_kokoro("həlˈo^ʊ wˈɜːld") == "həlˈO wˈɜɹld"
    assert K.ipa_to_kokoro("ma^ɪ bˈɔ^ɪ d^ʒˈʌd^ʒ ˈa^ʊt t^ʃˈuː") == "mI bˈY ʤˈʌʤ ˈWt ʧˈu"
    assert K.ipa_to_kokoro("ðə bˈɜːd wʌz bˈɛɾɚ ðɐn ðə bˈʌʔn̩") == "ðə bˈɜɹd wʌz bˈɛɾəɹ ðən ðə bˈʌtᵊn"
    assert K.ipa_to_kokoro("lˈɪɾə^l fˈoː^ɹ ˈɑː^ɹɾɪst a^ɪdˈi^ə mˌe^ɪd") == "lˈɪɾᵊl fˈɔɹ ˈɑɹɾɪst Idˈiə mˌAd"
    assert K.ipa_to_kokoro("rˈɛd lˈɔx bˈʌʔn̩") == "ɹˈɛd lˈɔk bˈʌtᵊn"  # loan-word r and x
    with pytest.raises(ValueError, match="no Kokoro symbol"):
        K.ipa_to_kokoro("ʙˈɛd")


@needs_tts
def test_kokoro_symbols_cover_espeak_output():
    """Every symbol espeak-ng emits on 1000 corpus sentences maps into Kokoro's vocabulary."""
    sents = T.load_sentences()
    sample = [sents[i] for i in np.random.default_rng(0).choice(len(sents), 1000, replace=False)]
    vocab = set(K.load_vocab())
    raw, mapped = set(), set()
    for ipa in _espeak_ipa_batch(sample):
        raw |= set(ipa)
        mapped |= set(K.ipa_to_kokoro(ipa))  # raises on a symbol it does not handle
    assert mapped <= vocab, sorted(mapped - vocab)
    # the rewrite is exercised: ties, diphthongs, r-coloured vowels, length marks all occur
    assert {"^", "ː", "ɚ", "ɐ"} <= raw and {"A", "I", "O", "ʤ", "ʧ"} <= mapped
    # the production path (one espeak call per sentence) agrees
    assert K.phonemize(sample[0]) == K.ipa_to_kokoro(_espeak_ipa_batch(sample[:1])[0]) + "."


def test_kokoro_mixtures_are_stable_speakers():
    mix = K.mixtures(40)
    assert len(set(mix)) == 40 and K.mixtures(10) == mix[:10]
    for m in mix:
        w = K.parse_mixture(m)
        assert 2 <= len(w) <= 3 and abs(sum(w.values()) - 1) < 1e-9
        assert min(w.values()) >= K.MIN_STEPS / K.GRID - 1e-9
        assert K.mixture_spec(w) == m
    voices = E.Kokoro().declared_voices()
    assert len({v.speaker for v in voices}) == len(voices) == len(K.STYLES) + E.Kokoro.N_MIXTURES


@needs_tts
def test_kokoro_synth():
    eng = E.Kokoro()
    assert eng.available(), eng.missing()
    text = "the cat sat on the mat"
    pure = eng.synth(text, E.Voice("kokoro", "jf_alpha", "", "kokoro:jf_alpha"), {"speed": 1.0})
    spec = "jf_alpha=0.50+jm_kumo=0.50"
    mixed = eng.synth(text, E.Voice("kokoro", "mix", spec, f"kokoro:{spec}"), {"speed": 1.0})
    fast = eng.synth(text, E.Voice("kokoro", "jm_kumo", "", "kokoro:jm_kumo"), {"speed": 1.3, "warp": 1.0})
    for audio in (pure, mixed, fast):
        assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all()
        assert 0.6 < len(audio) / 16000 < 4.0  # six words
        # speech, not silence or a click: loud over a good part of the utterance
        frames = audio[: len(audio) // 320 * 320].reshape(-1, 320)
        assert (np.sqrt((frames ** 2).mean(axis=1)) > 0.02).mean() > 0.4
    assert len(fast) < 0.9 * len(pure)
    n = min(len(pure), len(mixed))
    assert not np.allclose(pure[:n], mixed[:n], atol=1e-3)  # a mixture is another voice


# ---------------------------------------------------------------- the corpus v2 recipe

RECIPE_ENGINES = ("espeak", "mbrola", "flite", "festival", "pico", "piper", "kokoro")


def _recipe_engines():
    """The recipe's engines with all their voices, installed here or not (planning needs no synthesis)."""
    engs = []
    for name in RECIPE_ENGINES:
        eng = E.get_engine(name)
        declared = eng.declared_voices()
        eng.voices = lambda declared=declared: list(declared)
        engs.append(eng)
    return engs


@needs_tts
def test_recipe_speakers_disjoint_and_shared_keys():
    engs = _recipe_engines()
    sp = C.split_voices(engs, seed=0)
    speakers = {s: {v.speaker for vs in sp[s].values() for v in vs} for s in C.SPLITS}
    for s in ("dev", "test"):
        assert speakers[s] and not (speakers[s] & speakers["train"])
    # one speaker, one split: festival's MBROLA front ends follow espeak-ng's mb-* voices
    def splits_of(engine, key):
        return {s for s in C.SPLITS for v in sp[s].get(engine, []) if v.speaker == key}

    for voice in ("us1_mbrola", "us2_mbrola", "us3_mbrola", "en1_mbrola"):
        key = E.Festival.VOICES[voice][1]
        assert splits_of("festival", key) == splits_of("mbrola", key) != set()
    assert splits_of("festival", "spk:arctic-slt") == splits_of("flite", "spk:arctic-slt")
    assert splits_of("festival", "spk:rab") and splits_of("festival", "spk:don")
    # Kokoro holds out styles/mixtures for dev and for test; Piper is an unseen engine
    assert sp["dev"]["kokoro"] and sp["test"]["kokoro"] and len(sp["train"]["kokoro"]) > 40
    assert "piper" not in sp["train"] and sp["dev"]["piper"] and sp["test"]["piper"]


@pytest.fixture(scope="module")
def recipe_plan():
    if not (HAVE_ESPEAK and HAVE_TEXT):
        raise RuntimeError(TTS_HINT)
    engs = _recipe_engines()
    cfg = C.BuildConfig(out="unused", hours=20, dev=300, test=300, seed=0)
    plan, voices = C.make_plan(cfg, engs, T.load_sentences())
    return cfg, engs, plan


@needs_tts
def test_recipe_balance(recipe_plan):
    """The 20 h recipe: espeak-ng <= 30% of train hours, ~2 h of Kokoro, Piper only in dev/test."""
    _, engs, plan = recipe_plan
    hours = C.planned_hours(plan, engs)
    train = sum(hours["train"].values())
    assert 20.0 <= train < 20.1
    assert hours["train"]["espeak"] / train <= 0.30
    assert 1.6 < hours["train"]["kokoro"] < 2.4
    assert "piper" not in hours["train"] and hours["dev"]["piper"] > 0 and hours["test"]["piper"] > 0
    for name in ("mbrola", "flite", "festival", "pico"):
        assert hours["train"][name] / train > 0.08, name
    assert len(plan["dev"]) == len(plan["test"]) == 300
    festival_voices = {u.voice.voice for u in plan["train"] if u.voice.engine == "festival"}
    assert {"rab_diphone", "don_diphone"} <= festival_voices


@needs_tts
def test_growing_hours_keeps_plan(recipe_plan):
    cfg, engs, plan = recipe_plan
    small, _ = C.make_plan(C.BuildConfig(out="unused", hours=5, dev=300, test=300, seed=0), engs,
                           T.load_sentences())
    n = len(small["train"])
    assert 0 < n < len(plan["train"])
    assert [C.utt_digest(u) for u in small["train"]] == [C.utt_digest(u) for u in plan["train"][:n]]
    for split in ("dev", "test"):
        assert [C.utt_digest(u) for u in small[split]] == [C.utt_digest(u) for u in plan[split]]


@needs_tts
def test_growing_build_appends(tmp_path, monkeypatch):
    out = tmp_path / "c"
    C.build(_cfg(out, train=4, dev=2, test=2))
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("*/*.wav")}
    assert len(stamp) == 8
    meta = C.build(_cfg(out, train=7, dev=2, test=2))
    assert meta["build"]["generated_this_run"] == 3
    for p, t in stamp.items():
        assert p.stat().st_mtime_ns == t, f"{p} was rewritten"
    assert [r["path"] for r in _rows(out / "train.tsv")] == [f"train/train-{i:06d}.wav" for i in range(7)]
    assert len((out / "plan.tsv").read_text().splitlines()) == 1 + 7 + 2 + 2
    # a smaller size is a prefix of the same plan
    meta = C.build(_cfg(out, train=5, dev=2, test=2))
    assert meta["build"]["generated_this_run"] == 0 and len(_rows(out / "train.tsv")) == 5
    # code that would plan other utterances for the same settings is refused
    monkeypatch.setattr(E.EspeakNG, "sample_params", lambda self, rng: {"speed": 150})
    with pytest.raises(RuntimeError, match="planned differently"):
        C.build(_cfg(out, train=7, dev=2, test=2))


# ---------------------------------------------------------------- builder

def _cfg(out, **kw):
    base = dict(out=str(out), train=12, dev=4, test=4, seed=5, jobs=2, engines=["espeak"],
                progress=False, subset_hours=[0.002])
    base.update(kw)
    return C.BuildConfig(**base)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not (HAVE_ESPEAK and HAVE_TEXT):
        raise RuntimeError(TTS_HINT)
    out = tmp_path_factory.mktemp("corpus") / "c"
    meta = C.build(_cfg(out))
    return out, meta


@needs_tts
def test_build_files_and_manifests(built):
    import soundfile as sf

    root, meta = built
    for split, n in (("train", 12), ("dev", 4), ("test", 4)):
        rows = _rows(root / f"{split}.tsv")
        assert len(rows) == n and meta["splits"][split]["utterances"] == n
        for r in rows:
            wav = root / r["path"]
            audio, sr = sf.read(wav, dtype="float32")
            info = sf.info(str(wav))
            assert sr == 16000 and info.channels == 1 and info.subtype == "PCM_16"
            assert len(audio) == int(r["num_samples"])
            assert 0.2 < np.abs(audio).max() < 1.0
            # 0.1..0.3 s of silence padding at both ends
            assert np.abs(audio[:1600]).max() == 0 and np.abs(audio[-1600:]).max() == 0
            assert wav.with_suffix(".txt").read_text().strip() == r["text"]
            assert set(r["text"]) <= set(T.VOCAB)
        entries = M.read_manifest(root / f"{split}.tsv")
        assert [Path(e.path) for e in entries] == [(root / r["path"]).resolve() for r in rows]
    assert len(M.read_manifest(root / "train")) == 12  # folder form
    assert json.loads((root / "metadata.json").read_text())["seed"] == 5
    assert (root / "train_0.002h.tsv").exists()


@needs_tts
def test_dev_test_disjoint_from_train(built):
    root, meta = built
    utts = {s: _rows(root / f"{s}_utts.tsv") for s in C.SPLITS}
    texts = {s: {r["text"] for r in _rows(root / f"{s}.tsv")} for s in C.SPLITS}
    voices = {s: {(r["engine"], r["voice"], r["variant"]) for r in utts[s]} for s in C.SPLITS}
    for s in ("dev", "test"):
        assert not (texts[s] & texts["train"])
        assert not (voices[s] & voices["train"])
        assert not (set(meta["splits"][s]["voice_ids"]) & set(meta["splits"]["train"]["voice_ids"]))
        # held out by variant: no dev/test espeak variant is ever used in train
        assert not ({v[2] for v in voices[s]} & {v[2] for v in voices["train"]})


@needs_tts
def test_same_seed_same_corpus(built, tmp_path):
    root, _ = built
    C.build(_cfg(tmp_path / "again"))
    for split in C.SPLITS:
        assert (root / f"{split}_utts.tsv").read_text() == (tmp_path / "again" / f"{split}_utts.tsv").read_text()
        assert (root / f"{split}.tsv").read_text() == (tmp_path / "again" / f"{split}.tsv").read_text()
    # another seed changes the assignment
    plan5, _ = C.make_plan(_cfg(tmp_path), [E.EspeakNG()], T.load_sentences())
    plan6, _ = C.make_plan(_cfg(tmp_path, seed=6), [E.EspeakNG()], T.load_sentences())
    assert [u.text for u in plan5["train"]] != [u.text for u in plan6["train"]]


@needs_tts
def test_resume_regenerates_only_missing(tmp_path):
    out = tmp_path / "c"
    C.build(_cfg(out, train=6, dev=2, test=2))
    wavs = sorted(out.glob("*/*.wav"))
    stamp = {p: p.stat().st_mtime_ns for p in wavs}
    victim = out / "train" / "train-000003.wav"
    victim.unlink()
    # an interrupted write: a half-written temp file must not count as done
    half = out / "train" / ".train-000004.wav.999.tmp"
    (out / "train" / "train-000004.wav").rename(half)
    half.write_bytes(half.read_bytes()[:100])
    del stamp[out / "train" / "train-000004.wav"]
    meta = C.build(_cfg(out, train=6, dev=2, test=2))
    assert meta["build"]["generated_this_run"] == 2
    assert victim.exists() and (out / "train" / "train-000004.wav").exists()
    assert not list(out.glob("*/.*.tmp"))
    for p, t in stamp.items():
        if p != victim:
            assert p.stat().st_mtime_ns == t, f"{p} was rewritten"
    assert len(_rows(out / "train.tsv")) == 6
    meta = C.build(_cfg(out, train=6, dev=2, test=2))
    assert meta["build"]["generated_this_run"] == 0
    with pytest.raises(RuntimeError, match="other settings"):
        C.build(_cfg(out, train=6, dev=2, test=2, seed=99))


def test_subset_hours_deterministic(tmp_path):
    entries = [M.Entry(f"/x/{i}.wav", 16000 * (1 + i % 7), "a b c") for i in range(500)]
    a = M.subset_hours(entries, 0.1, seed=1)
    assert a == M.subset_hours(entries, 0.1, seed=1)
    assert a != M.subset_hours(entries, 0.1, seed=2)
    hours = M.total_hours(a)
    assert 0.1 <= hours < 0.1 + 7 / 3600 + 1e-9
    assert set(a) <= set(entries)
    M.write_tsv(a, tmp_path / "s.tsv")
    back = M.read_tsv(tmp_path / "s.tsv")
    assert [(e.path, e.num_samples, e.text) for e in back] == [(e.path, e.num_samples, e.text) for e in a]


def test_cli_is_light():
    import subprocess
    import sys

    code = ("import sys, argparse; import wavstream.cli.corpus as c; "
            "p = argparse.ArgumentParser(); c.add_arguments(p); "
            "a = p.parse_args(['build', '--out', 'x', '--train', '3', '--engines', 'espeak']); "
            "assert a.train == 3 and a.engines == ['espeak']; "
            "heavy = [m for m in ('numpy', 'torch', 'soundfile') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
