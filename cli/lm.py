"""`wavstream lm build`: a word n-gram language model (ARPA) for the beam search.

The text: the corpus builder's sentences without its dev and test pools
(training/lm/text.py), plus any --text files. The estimate is modified
Kneser-Ney (training/lm/kneser_ney.py); --prune drops rare n-grams to keep
the file small. docs/decoding.md shows how to build and use your own.
"""

from __future__ import annotations

import argparse
import sys
import time

from .args import int_at_least


def _counts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be counts separated by commas, e.g. 1,2,2, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"counts must be >= 1, got {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="lm_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="estimate a modified Kneser-Ney n-gram and write it as ARPA",
                       description="Estimate a modified Kneser-Ney word n-gram and write it as ARPA (.gz to compress).")
    b.add_argument("output", help="ARPA file to write (.arpa or .arpa.gz)")
    b.add_argument("--order", type=int_at_least(1), default=4, help="n-gram order (1..6)")
    b.add_argument("--prune", type=_counts, default=(1,),
                   help="minimum count to keep an n-gram, per order from 2 up, e.g. 1,2,2 (1 keeps all)")
    b.add_argument("--text", action="append", default=[], metavar="FILE",
                   help="more text, one sentence per line (repeatable)")
    b.add_argument("--no-corpus-text", dest="corpus_text", action="store_false",
                   help="only the --text files, not the corpus sentence sources")
    b.add_argument("--exclude", action="append", default=[], metavar="MANIFEST",
                   help="leave out every sentence of this manifest (TSV, or a folder of .wav + .txt; e.g. a corpus's dev.tsv; repeatable)")
    b.add_argument("--seed", type=int, default=0, help="the corpus build's seed (which sentences went to dev/test)")
    b.add_argument("--dev", type=int_at_least(0), default=300, help="the corpus build's dev sentence count")
    b.add_argument("--test", type=int_at_least(0), default=300, help="the corpus build's test sentence count")


def run(args: argparse.Namespace) -> int:
    from wavstream.training.lm import KneserNeyConfig, build_arpa
    from wavstream.training.lm.text import manifest_texts, read_text_file, training_sentences

    t0 = time.perf_counter()
    try:
        config = KneserNeyConfig(args.order, args.prune)
        extra = [s for path in args.text for s in read_text_file(path)]
        if args.corpus_text:
            sents = training_sentences(args.seed, args.dev, args.test, args.exclude, extra)
        else:
            held = set().union(*(manifest_texts(m) for m in args.exclude)) if args.exclude else set()
            sents = [s for s in extra if s not in held]
        model = build_arpa(sents, args.output, config)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"wavstream lm build: {exc}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{n}-grams {len(g)}" for n, g in enumerate(model.grams, 1))
    words = sum(len(s.split()) for s in sents)
    print(f"{args.output}: {len(sents)} sentences, {words} words; {counts} ({time.perf_counter() - t0:.1f} s)")
    return 0
