"""Measure each corpus TTS engine: synthesis speed, speech rate, and how well a
reference recogniser reads it.

    pip install pocketsphinx jiwer        # for the WER column only; not a project dependency
    python training/recipes/tts_engines_check.py --n 10 [--engines kokoro pico espeak]
    python training/recipes/tts_engines_check.py --n 20 --default-params \
        --voices espeak/en-us pico/en-US kokoro/jf_alpha kokoro/jm_kumo

For every engine: ``--n`` sentences (the same ones for every engine, drawn
with ``--seed`` from the corpus sentences), each with a voice and parameters
drawn as the corpus builder draws them, rendered by the builder's ``render``
(engine, trim, padding, peak) in this one process on one thread.
``--voices`` keeps only the listed voice ids (``engine/voice[/variant]``) of
the engines that have one; ``--default-params`` uses each engine's default
settings (speed 1, no warp) instead of random ones. Prints:

* ``x_rt``: seconds of audio (padding excluded) per second of synthesis, the
  engine's start-up included (first utterance excluded for in-process models,
  whose one-off load is not per utterance);
* ``chars_per_s``: characters of transcript per second of speech (padding
  excluded), what the planner uses to turn hours into utterances;
* ``wer``: PocketSphinx's (the PyPI wheel's bundled US English model) word
  error rate against the transcript: a rough "is it intelligible" reading.
  Its absolute level is poor even on clear speech; compare engines.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from wavstream.training.data import corpus as C  # noqa: E402
from wavstream.training.data import engines as E  # noqa: E402
from wavstream.training.data import text as T  # noqa: E402


def _recogniser():
    try:
        from pocketsphinx import Decoder
    except ImportError:
        return None
    return Decoder(samprate=C.SAMPLE_RATE, logfn=os.devnull)


def _read(decoder, audio: np.ndarray) -> str:
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr if hyp is not None else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10, help="sentences per engine")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engines", nargs="+", default=None, help="default: every available engine")
    ap.add_argument("--voices", nargs="+", default=[], help="voice ids to keep, e.g. kokoro/jf_alpha")
    ap.add_argument("--default-params", action="store_true", help="engine defaults, not random settings")
    args = ap.parse_args(argv)

    engines, missing = E.available_engines(args.engines)
    for m in missing:
        print(f"# skipped: {m}", file=sys.stderr)
    sentences = T.load_sentences()
    rng = np.random.default_rng(args.seed)
    texts = [sentences[i] for i in rng.choice(len(sentences), size=args.n, replace=False)]
    decoder = _recogniser()
    if decoder is None:
        print("# pocketsphinx not installed: no WER column (pip install pocketsphinx jiwer)", file=sys.stderr)
    else:
        import jiwer

    print(f"{'engine':9s} {'utts':>4s} {'audio_s':>8s} {'x_rt':>7s} {'chars_per_s':>11s} {'wer':>6s}")
    for eng in engines:
        voices = eng.voices()
        chosen = [v for v in voices if v.id in args.voices]
        voices = chosen or voices
        audio_s = synth_s = chars = 0.0
        refs, hyps = [], []
        for i, text in enumerate(texts):
            vrng = np.random.default_rng([args.seed, i, 17])
            voice = voices[int(vrng.integers(len(voices)))]
            params = {} if args.default_params else eng.sample_params(vrng)
            post = {"pad_start": 0.0, "pad_end": 0.0, "peak": 0.9}
            t0 = time.perf_counter()
            audio = C.render(voice, text, params, post)
            dt = time.perf_counter() - t0
            if i > 0 or eng.name not in ("kokoro", "piper"):
                audio_s += len(audio) / C.SAMPLE_RATE
                synth_s += dt
                chars += len(text)
            if decoder is not None:
                refs.append(text)
                hyps.append(_read(decoder, audio) or "<empty>")
        wer = f"{jiwer.wer(refs, hyps):6.3f}" if decoder is not None else "     -"
        name = eng.name if not chosen else ",".join(v.id.split("/", 1)[1] for v in chosen)
        print(f"{name:9s} {len(texts):4d} {audio_s:8.1f} {audio_s / synth_s:7.1f} "
              f"{chars / audio_s:11.2f} {wer}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
