"""``wavstream corpus``: build the synthetic speech corpus.

    wavstream corpus build --out DIR [--hours H | --train N --dev N --test N]
                           [--seed S] [--jobs J] [--engines espeak flite ...]
    wavstream corpus subset --manifest DIR/train.tsv --hours 1 --out DIR/train_1h.tsv
    wavstream corpus engines            # which engines are installed

Module-level imports are stdlib only; the heavy ones happen inside ``run``.
"""

from __future__ import annotations

import argparse
import os
import sys

ENGINE_NAMES = ("espeak", "mbrola", "flite", "festival", "pico", "piper", "kokoro")


def _weights(spec: str) -> dict[str, float]:
    out = {}
    for part in spec.split(","):
        if part.strip():
            k, _, v = part.partition("=")
            out[k.strip()] = float(v)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="corpus_action", metavar="ACTION")
    b = sub.add_parser("build", help="synthesise a corpus (resumable)",
                       description="Synthesise a transcribed corpus with the offline TTS engines. "
                       "Rerunning the same command resumes an interrupted build; rerunning it with "
                       "a larger --hours (or --train) keeps every utterance and appends new ones.")
    b.add_argument("--out", required=True, help="corpus folder")
    g = b.add_argument_group("size (either --hours, or --train)")
    g.add_argument("--hours", type=float, default=None,
                   help="hours of train audio, estimated from each engine's speech rate (default 1)")
    g.add_argument("--train", type=int, default=None, help="number of train utterances")
    g.add_argument("--dev", type=int, default=300, help="dev utterances (default 300)")
    g.add_argument("--test", type=int, default=300, help="test utterances (default 300)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--jobs", type=int, default=max(1, min(os.cpu_count() or 1, 8)),
                   help="parallel synthesis processes (default: cores)")
    b.add_argument("--engines", nargs="+", choices=ENGINE_NAMES, default=None,
                   help="engines to use (default: every available one)")
    b.add_argument("--weights", type=_weights, default={},
                   help="engine shares of the hours, e.g. espeak=0.3,festival=0.05 (default: built-in)")
    b.add_argument("--holdout-frac", type=float, default=0.1,
                   help="share of an engine's speakers held out for dev and for test each")
    b.add_argument("--subset-hours", type=float, nargs="*", default=[1.0],
                   help="also write train_<H>h.tsv subsets (default: 1)")
    b.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("subset", help="write a deterministic ~N-hour subset of a manifest")
    s.add_argument("--manifest", required=True, help="TSV manifest or folder of wav+txt")
    s.add_argument("--hours", type=float, required=True)
    s.add_argument("--out", required=True, help="output TSV")
    s.add_argument("--seed", type=int, default=0)

    sub.add_parser("engines", help="list the text-to-speech engines and their voices")


def _log(msg: str) -> None:
    print(f"[corpus] {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "corpus_action", None)
    if action == "build":
        from wavstream.training.data.corpus import BuildConfig, build

        if args.hours is not None and args.train is not None:
            print("wavstream corpus build: give --hours or --train, not both", file=sys.stderr)
            return 2
        cfg = BuildConfig(out=args.out, train=args.train, dev=args.dev, test=args.test,
                          hours=args.hours if args.train is None else None, seed=args.seed,
                          jobs=args.jobs, engines=args.engines, weights=args.weights,
                          holdout_frac=args.holdout_frac, subset_hours=list(args.subset_hours),
                          progress=not args.no_progress)
        try:
            meta = build(cfg, log=_log)
        except RuntimeError as exc:
            print(f"wavstream corpus build: {exc}", file=sys.stderr)
            return 1
        for split, m in meta["splits"].items():
            per_engine = ", ".join(f"{k} {v['utterances']}" for k, v in sorted(m["per_engine"].items()))
            print(f"{split}: {m['utterances']} utterances, {m['hours']:.2f} h, "
                  f"{m['voices_used']} voices used ({sum(m['voices_available'].values())} available), "
                  f"engines: {per_engine}"
                  + (f", {m['missing']} MISSING" if m["missing"] else ""))
        print(f"wrote {args.out} in {meta['build']['wall_seconds']:.0f} s")
        return 0 if all(m["missing"] == 0 for m in meta["splits"].values()) else 1
    if action == "subset":
        from wavstream.training.data import manifest as M

        entries = M.read_manifest(args.manifest)
        sub = M.subset_hours(entries, args.hours, seed=args.seed)
        M.write_tsv(sub, args.out)
        print(f"{args.out}: {len(sub)} utterances, {M.total_hours(sub):.3f} h of {M.total_hours(entries):.2f} h")
        return 0
    if action == "engines":
        from wavstream.training.data import engines as E

        ok, missing = E.available_engines()
        for e in ok:
            vs = e.voices()
            print(f"{e.name:9s} {len(vs):4d} voices, {len({v.speaker for v in vs})} speakers  "
                  f"e.g. {', '.join(v.id for v in vs[:3])}")
        for m in missing:
            print(f"missing   {m}")
        return 0
    print("usage: wavstream corpus {build,subset,engines} ... (see --help)", file=sys.stderr)
    return 2
