"""Build the synthetic speech corpus.

Layout of a corpus folder::

    build.json              settings that fix every utterance (checked on resume)
    plan.tsv                split, index, digest of each planned utterance (checked on resume)
    train/train-000000.wav  16 kHz mono PCM-16, with train-000000.txt beside it
    dev/...  test/...
    train.tsv dev.tsv test.tsv          manifests: path, num_samples, text
    train_utts.tsv ...                  path, engine, voice, variant, params (JSON)
    train_1h.tsv                        a ~1 h subset of train (``--subset-hours``)
    metadata.json                       seed, voices per split, counts, hours, settings

How the build works:

1. **Plan** (deterministic from the seed and the recipe). Sentences
   (``text.load_sentences``) are shuffled; test takes the first ones, dev the
   next, train the rest, so dev/test sentences never occur in train. Voices of
   every available engine are split by *speaker key* (see ``engines.Voice``):
   per engine, ~10% of the speaker keys go to dev and ~10% to test (at least
   one each) when it has >= 4 keys; an engine with 2..3 keys gives one key to
   dev+test and the rest to train; a single-voice engine (Piper) is held out
   entirely (dev+test), which makes it an unseen engine. A speaker key shared
   by two engines (flite ``slt`` and festival's ``cmu_us_slt_arctic_hts``;
   espeak-ng's and festival's MBROLA voices) keeps one split.
   Utterance ``i`` of a split is drawn from its own generator, seeded by
   (seed, split, i): an engine (weights are shares of the *hours*, see
   ``engine_probabilities``), a voice of that split, the engine's random
   parameters, silence padding (0.1..0.3 s at each end) and a peak level
   (0.3..0.95); its sentence is the i-th of the split's pool. So an utterance
   depends on nothing but its index: ``--hours 30`` plans the utterances of
   ``--hours 20`` and appends more, and dev/test do not depend on the train
   size. ``plan.tsv`` keeps a digest of every planned utterance; a build
   whose plan disagrees with the digests of utterances already planned in the
   folder (other code, other engines) stops instead of mixing two plans.
2. **Synthesis** of the utterances whose ``.wav`` and ``.txt`` are not
   already there (dev and test first, so a stopped build has whole eval
   sets), in a process pool (``jobs``) with a tqdm bar. Every file is
   written under a temporary name and renamed with ``os.replace``, the
   transcript first and the audio last, so an interrupted build leaves no
   half-written file under a valid name and simply continues when rerun.
3. **Manifests and metadata** from what is on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import engines as E
from . import manifest as M
from . import text as T

SPLITS = ("train", "dev", "test")
SAMPLE_RATE = 16000
# bump when the same settings would plan other utterances (build.json refuses
# to resume a folder planned by another version)
PLAN_VERSION = 2


@dataclass
class BuildConfig:
    out: str
    train: int | None = None
    dev: int = 300
    test: int = 300
    hours: float | None = None
    seed: int = 0
    jobs: int = 1
    engines: list[str] | None = None
    weights: dict[str, float] = field(default_factory=dict)
    holdout_frac: float = 0.1
    pad: tuple[float, float] = (0.1, 0.3)
    peak: tuple[float, float] = (0.3, 0.95)
    subset_hours: list[float] = field(default_factory=lambda: [1.0])
    progress: bool = True

    def plan_settings(self) -> dict[str, Any]:
        """The settings that fix every utterance (must match on resume).

        The train size (``hours``/``train``) is not one of them: it only says
        how many utterances of the same sequence to make, so a folder can grow.
        """
        return {"plan_version": PLAN_VERSION, "seed": self.seed, "dev": self.dev, "test": self.test,
                "engines": self.engines, "weights": self.weights, "holdout_frac": self.holdout_frac,
                "pad": list(self.pad), "peak": list(self.peak)}

    def size_settings(self) -> dict[str, Any]:
        return {"train": self.train, "hours": self.hours}


@dataclass
class Utt:
    split: str
    index: int
    text: str
    voice: E.Voice
    params: dict[str, Any]
    post: dict[str, float]

    @property
    def rel(self) -> str:
        return f"{self.split}/{self.split}-{self.index:06d}.wav"


# --------------------------------------------------------------------------
# plan


def split_voices(engine_list: list[E.Engine], seed: int, holdout_frac: float = 0.1
                 ) -> dict[str, dict[str, list[E.Voice]]]:
    """{split: {engine: [voices]}}, speakers in dev/test never in train."""
    assigned: dict[str, str] = {}  # speaker key -> "train" | "dev" | "test" | "devtest"
    for k, eng in enumerate(engine_list):
        voices = eng.voices()
        keys = sorted({v.speaker for v in voices})
        rng = np.random.default_rng([seed, 7919, zlib.crc32(eng.name.encode()), len(keys)])
        keys = [keys[i] for i in rng.permutation(len(keys))]
        free = [s for s in keys if s not in assigned]
        held = {s for s in keys if assigned.get(s, "train") != "train"}
        n = len(keys)
        if n >= 4:
            n_hold = max(1, int(round(n * holdout_frac)))
            want = {"test": n_hold, "dev": n_hold}
            for s in keys:
                if assigned.get(s) in want:
                    want[assigned[s]] -= 1
            for split in ("test", "dev"):
                while want[split] > 0 and len(free) > 1:
                    assigned[free.pop(0)] = split
                    want[split] -= 1
        elif n >= 2:
            if not held and len(free) > 1:
                assigned[free.pop(0)] = "devtest"
        elif n == 1 and free:
            assigned[free.pop(0)] = "devtest"
        for s in free:
            assigned[s] = "train"
    out: dict[str, dict[str, list[E.Voice]]] = {s: {} for s in SPLITS}
    for eng in engine_list:
        for v in eng.voices():
            a = assigned[v.speaker]
            for split in SPLITS:
                if a == split or (a == "devtest" and split in ("dev", "test")):
                    out[split].setdefault(eng.name, []).append(v)
    return out


def _engine_weights(engine_list: list[E.Engine], weights: dict[str, float]) -> dict[str, float]:
    return {e.name: float(weights.get(e.name, e.weight)) for e in engine_list}


def engine_probabilities(engine_list: list[E.Engine], weights: dict[str, float]) -> dict[str, float]:
    """Per-utterance engine probabilities that give each engine ``weight`` of the hours.

    An engine that speaks faster (more characters per second) makes shorter
    utterances, so it is drawn proportionally more often.
    """
    w = _engine_weights(engine_list, weights)
    raw = {e.name: w[e.name] * e.chars_per_second for e in engine_list if w[e.name] > 0}
    total = sum(raw.values())
    return {k: v / total for k, v in raw.items()}


def _post(rng: np.random.Generator, cfg: BuildConfig) -> dict[str, float]:
    return {"pad_start": round(float(rng.uniform(*cfg.pad)), 3),
            "pad_end": round(float(rng.uniform(*cfg.pad)), 3),
            "peak": round(float(rng.uniform(*cfg.peak)), 3)}


def estimate_seconds(utt: Utt, chars_per_second: float) -> float:
    """Planned duration: the engine's measured speech rate, warp, padding."""
    return (len(utt.text) / chars_per_second / utt.params.get("warp", 1.0)
            + utt.post["pad_start"] + utt.post["pad_end"])


def _draw(cfg: BuildConfig, split: str, index: int, text: str, engs: list[E.Engine], p: np.ndarray,
          voices: dict[str, list[E.Voice]]) -> Utt:
    # one generator per utterance: utterance i never depends on how many come before or after
    rng = np.random.default_rng([cfg.seed, 100 + SPLITS.index(split), index])
    eng = engs[int(rng.choice(len(engs), p=p))]
    vlist = voices[eng.name]
    voice = vlist[int(rng.integers(len(vlist)))]
    params = eng.sample_params(rng)
    return Utt(split, index, text, voice, params, _post(rng, cfg))


def sentence_pools(sentences: list[str], seed: int, n_dev: int, n_test: int) -> dict[str, list[str]]:
    """{split: its sentences}: the sentence list shuffled by ``seed``; test takes the first ``n_test``,
    dev the next ``n_dev``, train the rest (the LM builder uses this to leave dev and test out)."""
    order = np.random.default_rng([seed, 1]).permutation(len(sentences))
    shuffled = [sentences[i] for i in order]
    if n_test + n_dev >= len(shuffled):
        raise ValueError(f"only {len(shuffled)} sentences for {n_dev} dev + {n_test} test utterances")
    return {"test": shuffled[:n_test], "dev": shuffled[n_test:n_test + n_dev], "train": shuffled[n_test + n_dev:]}


def make_plan(cfg: BuildConfig, engine_list: list[E.Engine], sentences: list[str]
              ) -> tuple[dict[str, list[Utt]], dict[str, dict[str, list[E.Voice]]]]:
    voices = split_voices(engine_list, cfg.seed, cfg.holdout_frac)
    n_test, n_dev = cfg.test, cfg.dev
    pools = sentence_pools(sentences, cfg.seed, n_dev, n_test)
    rate = {e.name: e.chars_per_second for e in engine_list}
    plan: dict[str, list[Utt]] = {}
    for split in SPLITS:
        engs = [e for e in engine_list if voices[split].get(e.name)]
        probs = engine_probabilities(engs, cfg.weights)
        engs = [e for e in engs if e.name in probs]
        if not engs:
            raise RuntimeError(f"no voices for split {split}")
        p = np.array([probs[e.name] for e in engs])
        pool = pools[split]
        utts: list[Utt] = []
        total = 0.0
        while True:
            i = len(utts)
            if split == "train" and cfg.train is None:
                if total >= (cfg.hours or 1.0) * 3600.0:
                    break
            elif i >= {"train": cfg.train, "dev": n_dev, "test": n_test}[split]:
                break
            # train reuses sentences only past the pool (~60k sentences)
            utt = _draw(cfg, split, i, pool[i % len(pool)], engs, p, voices[split])
            utts.append(utt)
            total += estimate_seconds(utt, rate[utt.voice.engine])
        plan[split] = utts
    return plan, voices


def planned_hours(plan: dict[str, list[Utt]], engine_list: list[E.Engine]) -> dict[str, dict[str, float]]:
    """{split: {engine: estimated hours}} of a plan."""
    rate = {e.name: e.chars_per_second for e in engine_list}
    out: dict[str, dict[str, float]] = {}
    for split, utts in plan.items():
        hours = out.setdefault(split, {})
        for u in utts:
            hours[u.voice.engine] = hours.get(u.voice.engine, 0.0) + estimate_seconds(
                u, rate[u.voice.engine]) / 3600
    return out


def utt_digest(utt: Utt) -> str:
    """What an utterance is (text, voice, parameters), as a short hex digest."""
    spec = json.dumps([utt.text, utt.voice.to_dict(), utt.params, utt.post], sort_keys=True)
    return hashlib.sha1(spec.encode()).hexdigest()[:16]


def check_and_record_plan(root: Path, plan: dict[str, list[Utt]]) -> None:
    """Compare the plan with ``plan.tsv`` and write the union back.

    Raises:
        RuntimeError: when an utterance planned before is now planned differently.
    """
    path = root / "plan.tsv"
    old: dict[tuple[str, int], str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines()[1:]:
            split, index, digest = line.split("\t")
            old[(split, int(index))] = digest
    new = {(u.split, u.index): utt_digest(u) for us in plan.values() for u in us}
    changed = sorted(k for k in new.keys() & old.keys() if new[k] != old[k])
    if changed:
        split, index = changed[0]
        raise RuntimeError(f"{root} was planned differently: {len(changed)} utterances differ "
                           f"(first {split}-{index:06d}); the engines, their voices or the code "
                           "changed since. Use another --out")
    merged = {**old, **new}
    rows = "".join(f"{s}\t{i}\t{merged[(s, i)]}\n" for s, i in sorted(
        merged, key=lambda k: (SPLITS.index(k[0]), k[1])))
    _atomic_write_text(path, "split\tindex\tdigest\n" + rows)


# --------------------------------------------------------------------------
# synthesis

_ENGINE_CACHE: dict[str, E.Engine] = {}


def render(utt_voice: E.Voice, text: str, params: dict[str, Any], post: dict[str, float]) -> np.ndarray:
    """Synthesise, trim the engine's own silence, pad, and scale the peak."""
    eng = _ENGINE_CACHE.get(utt_voice.engine)
    if eng is None:
        eng = _ENGINE_CACHE[utt_voice.engine] = E.get_engine(utt_voice.engine)
    audio = eng.synth(text, utt_voice, params)
    peak = float(np.max(np.abs(audio)))
    if peak <= 1e-6:
        raise RuntimeError(f"{utt_voice.id}: silent output for {text!r}")
    loud = np.flatnonzero(np.abs(audio) > 0.02 * peak)
    margin = int(0.02 * SAMPLE_RATE)
    audio = audio[max(0, loud[0] - margin): loud[-1] + margin + 1]
    audio = audio * (post["peak"] / peak)
    out = np.concatenate([np.zeros(int(post["pad_start"] * SAMPLE_RATE), np.float32), audio,
                          np.zeros(int(post["pad_end"] * SAMPLE_RATE), np.float32)])
    # PCM-16 rounding cannot push it past full scale: peak <= 0.95 < 1
    return out.astype(np.float32)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _atomic_write_wav(path: Path, audio: np.ndarray) -> None:
    import soundfile as sf

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sf.write(str(tmp), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def is_done(root: Path, utt: Utt) -> bool:
    wav = root / utt.rel
    txt = wav.with_suffix(".txt")
    if not (wav.exists() and txt.exists()):
        return False
    try:
        return txt.read_text(encoding="utf-8").strip() == utt.text
    except OSError:
        return False


def _work(job: tuple[str, str, str, dict, dict, dict]) -> tuple[str, int, str]:
    root, rel, text, voice, params, post = job
    try:
        audio = render(E.Voice(**voice), text, params, post)
        wav = Path(root) / rel
        _atomic_write_text(wav.with_suffix(".txt"), text + "\n")
        _atomic_write_wav(wav, audio)
        return rel, int(audio.shape[0]), ""
    except Exception as exc:  # reported, retried on the next run
        return rel, 0, f"{type(exc).__name__}: {exc}"


def _worker_init() -> None:
    # one thread per worker process: the pool is the parallelism
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"


# --------------------------------------------------------------------------
# build


def build(cfg: BuildConfig, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Build (or resume) a corpus; returns the metadata dict. Progress messages
    go to `log` (the command prints them); the synthesis bar is `cfg.progress`'s."""
    t0 = time.time()
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)

    engine_list, missing = E.available_engines(cfg.engines)
    for m in missing:
        log(f"engine not available, skipped: {m}")
    if cfg.engines and missing:
        raise RuntimeError("requested engines are missing: " + "; ".join(missing)
                           + " (run training/data/install_engines.sh)")
    if not engine_list:
        raise RuntimeError("no text-to-speech engine is available: " + "; ".join(missing)
                           + " (run training/data/install_engines.sh)")
    log("engines: " + ", ".join(f"{e.name} ({len(e.voices())} voices)" for e in engine_list))

    sentences = T.load_sentences()
    settings = cfg.plan_settings()
    settings["engines_used"] = [e.name for e in engine_list]
    settings["sentences_digest"] = T.sentences_digest(sentences)
    bj = root / "build.json"
    if bj.exists():
        old = json.loads(bj.read_text())
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise RuntimeError(f"{root} holds a corpus built with other settings ({', '.join(diff)}); "
                               "use another --out or delete it")
    else:
        _atomic_write_text(bj, json.dumps(settings, indent=1) + "\n")

    plan, voices = make_plan(cfg, engine_list, sentences)
    check_and_record_plan(root, plan)
    hours = planned_hours(plan, engine_list)
    for split in SPLITS:
        per = ", ".join(f"{k} {v:.2f}" for k, v in sorted(hours[split].items(), key=lambda kv: -kv[1]))
        log(f"planned {split}: {len(plan[split])} utterances, {sum(hours[split].values()):.2f} h ({per})")
    for split in SPLITS:
        (root / split).mkdir(exist_ok=True)
    # stale temp files of an interrupted build are never valid: remove them
    for split in SPLITS:
        for tmp in (root / split).glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    # dev and test first: a build stopped part-way still has whole eval sets
    todo = [u for split in ("dev", "test", "train") for u in plan[split] if not is_done(root, u)]
    n_all = sum(len(v) for v in plan.values())
    log(f"{n_all} utterances planned, {n_all - len(todo)} already done, {len(todo)} to synthesise "
        f"with {cfg.jobs} job(s)")
    jobs = [(str(root), u.rel, u.text, u.voice.to_dict(), u.params, u.post) for u in todo]
    # interleave engines so the bar's rate is steady; order does not matter
    errors: list[tuple[str, str]] = []
    generated = 0
    if jobs:
        from tqdm import tqdm

        # a log file (nohup) gets a line every 30 s rather than every 0.1 s
        bar = tqdm(total=len(jobs), unit="utt", disable=not cfg.progress, dynamic_ncols=True,
                   desc="synthesising", mininterval=1.0 if sys.stderr.isatty() else 30.0)
        if cfg.jobs > 1:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(cfg.jobs, initializer=_worker_init) as pool:
                for rel, n, err in pool.imap_unordered(_work, jobs, chunksize=4):
                    bar.update(1)
                    if err:
                        errors.append((rel, err))
                    else:
                        generated += 1
        else:
            for job in jobs:
                rel, n, err = _work(job)
                bar.update(1)
                if err:
                    errors.append((rel, err))
                else:
                    generated += 1
        bar.close()
    for rel, err in errors[:10]:
        log(f"FAILED {rel}: {err}")
    if errors:
        log(f"{len(errors)} utterances failed (rerun the same command to retry them)")

    meta = write_manifests(root, cfg, plan, voices, engine_list, sentences)
    meta["build"] = {"wall_seconds": round(time.time() - t0, 1), "generated_this_run": generated,
                     "failed_this_run": len(errors), "jobs": cfg.jobs}
    _atomic_write_text(root / "metadata.json", json.dumps(meta, indent=1) + "\n")
    return meta


def write_manifests(root: Path, cfg: BuildConfig, plan: dict[str, list[Utt]],
                    voices: dict[str, dict[str, list[E.Voice]]], engine_list: list[E.Engine],
                    sentences: list[str]) -> dict[str, Any]:
    import soundfile as sf

    meta: dict[str, Any] = {
        "format": "wavstream-corpus-1",
        "sample_rate": SAMPLE_RATE,
        "seed": cfg.seed,
        "settings": {**cfg.plan_settings(), **cfg.size_settings()},
        "engines_available": [e.name for e in engine_list],
        "engine_weights": _engine_weights(engine_list, cfg.weights),  # shares of the hours
        "planned_hours": {k: {e: round(h, 4) for e, h in v.items()}
                          for k, v in planned_hours(plan, engine_list).items()},
        "sentences_total": len(sentences),
        "sentences_digest": T.sentences_digest(sentences),
        "splits": {},
    }
    for split in SPLITS:
        entries, rows, used_voices, per_engine = [], [], set(), {}
        missing = 0
        for u in plan[split]:
            if not is_done(root, u):
                missing += 1
                continue
            wav = root / u.rel
            n = int(sf.info(str(wav)).frames)
            entries.append(M.Entry(str(wav), n, u.text))
            rows.append(f"{u.rel}\t{u.voice.engine}\t{u.voice.voice}\t{u.voice.variant}\t"
                        f"{json.dumps({**u.params, **u.post}, sort_keys=True)}\n")
            used_voices.add(u.voice)
            pe = per_engine.setdefault(u.voice.engine, {"utterances": 0, "hours": 0.0})
            pe["utterances"] += 1
            pe["hours"] += n / SAMPLE_RATE / 3600
        M.write_tsv(entries, root / f"{split}.tsv")
        tmp = root / f".{split}_utts.tsv.tmp"
        tmp.write_text("path\tengine\tvoice\tvariant\tparams\n" + "".join(rows), encoding="utf-8")
        os.replace(tmp, root / f"{split}_utts.tsv")
        for pe in per_engine.values():
            pe["hours"] = round(pe["hours"], 4)
        meta["splits"][split] = {
            "utterances": len(entries),
            "missing": missing,
            "hours": round(M.total_hours(entries), 4),
            "sentences": len({e.text for e in entries}),
            "voices_used": len(used_voices),
            "voices_available": {k: len(v) for k, v in voices[split].items()},
            "speakers": sorted({v.speaker for vs in voices[split].values() for v in vs}),
            "per_engine": per_engine,
            "voice_ids": sorted({v.id for vs in voices[split].values() for v in vs}),
        }
        if split == "train":
            meta["subsets"] = {}
            for h in cfg.subset_hours:
                if M.total_hours(entries) >= h:
                    name = f"train_{h:g}h.tsv"
                    sub = M.subset_hours(entries, h, seed=cfg.seed)
                    M.write_tsv(sub, root / name)
                    meta["subsets"][name] = {"utterances": len(sub), "hours": round(M.total_hours(sub), 4)}
    return meta
