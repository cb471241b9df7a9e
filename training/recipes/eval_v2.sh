#!/usr/bin/env bash
# Every number of the default model's README table (issue 12), from a
# checkpoint folder or an exported bundle: dev per engine at 160/320/640 ms and
# full context, dev through the telephone channel, the human speech sets, and
# int8 beside fp32 for bundles. Writes one JSON line per measurement to
# $OUT/eval.jsonl (each line says its model, chunk, channel and data).
#
#   MODEL=runs/ctc_v2 bash training/recipes/eval_v2.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${MODEL:-runs/ctc_v2}
CORPUS=${CORPUS:-data/corpus_v2}
OUT=${OUT:-$MODEL/eval}
THREADS=${THREADS:-2}
mkdir -p "$OUT"
: > "$OUT/eval.jsonl"
ev() { wavstream eval --model "$MODEL" --threads "$THREADS" "$@" | tail -n 1 >> "$OUT/eval.jsonl"; }

[ -d runs/human/alsa ] || python training/recipes/human_testset.py runs/human >/dev/null
if [ -f "$MODEL/model.onnx" ]; then
  # a bundle runs at the latencies it serves (320 ms by default; 160/640 when exported with --latencies-ms)
  ev "$CORPUS/dev.tsv" --by-engine --per-utt "$OUT/dev_320.tsv"
  for ms in 160 640; do
    served=$(wavstream info --model "$MODEL" --json | python -c "import json,sys; print(json.load(sys.stdin)['latencies_ms'])")
    case "$served" in *"$ms"*) ev "$CORPUS/dev.tsv" --chunk-ms $ms --by-engine ;; esac
  done
  ev "$CORPUS/dev.tsv" --int8
  ev "$CORPUS/dev.tsv" --channel telephone
  ev runs/human/pocketsphinx
  ev runs/human/alsa
else
  for ms in 160 320 640; do ev "$CORPUS/dev.tsv" --chunk-ms $ms --by-engine; done
  ev "$CORPUS/dev.tsv" --full-context --by-engine
  ev "$CORPUS/dev.tsv" --chunk-ms 320 --channel telephone
  ev runs/human/pocketsphinx --chunk-ms 320
  ev runs/human/alsa --chunk-ms 320
fi
cat "$OUT/eval.jsonl"
