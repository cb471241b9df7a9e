#!/usr/bin/env bash
# Make a finished CTC run the package's default model (issue 12, "ship it").
#
#   RUN=runs/ctc_v2 bash training/recipes/ship_default.sh
#
# 1. every README number from the torch checkpoint (eval_v2.sh: 160/320/640 ms and
#    full context per engine, telephone channel, human speech);
# 2. export with every latency the runtime offers and int8, into a scratch
#    folder first, so a failed export leaves the shipped default untouched;
# 3. the word-time delay measured on the new bundle, written into its config;
# 4. the bundle's own numbers (fp32 and int8 through ONNX Runtime);
# 5. swap it into stream/default_model, pack the fixed fp16 checkpoint the
#    tests pin, copy the training curve, print the README table.
# What it leaves to a person: the README text around the table, and the
# figures tests pin to the default (see the list it prints at the end).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${RUN:-runs/ctc_v2}
CKPT=${CKPT:-training/recipes/checkpoints/wav2vec2_ctc_v2}
NEW=${NEW:-$RUN/bundle}
THREADS=${THREADS:-2}

MODEL=$RUN OUT=$RUN/eval THREADS=$THREADS bash training/recipes/eval_v2.sh

rm -rf "$NEW"
wavstream export "$RUN" --out "$NEW" --chunk-ms 320 --latencies-ms 160,320,640 --int8

delay=$(python -m wavstream.bench.word_times "$NEW" --tuning | tee "$RUN/word_times.json" \
  | python -c "import json,sys; print(json.load(sys.stdin)['suggested_word_time_delay_frames'])")
python - "$NEW/config.json" "$delay" <<'EOF'
import json, sys
path, delay = sys.argv[1], int(sys.argv[2])
cfg = json.load(open(path))
cfg["word_time_delay_frames"] = delay
open(path, "w").write(json.dumps(cfg, indent=2) + "\n")
EOF

MODEL=$NEW OUT=$RUN/eval_bundle THREADS=$THREADS bash training/recipes/eval_v2.sh

# the swap: only now is the shipped default replaced
rm -rf stream/default_model
cp -r "$NEW" stream/default_model
rm -rf stream/default_model/eval
# the fixed checkpoint the tests pin, kept resumable (a later recipe may continue it)
python training/recipes/pack_checkpoint.py --resumable "$RUN/last" "$CKPT"
cp "$RUN/loss.png" docs/default_model_loss.png

python training/recipes/default_table.py "$RUN/eval/eval.jsonl" "$RUN/eval_bundle/eval.jsonl" \
  | tee "$RUN/readme_table.md"
cat <<EOF

Now by hand: paste the table above into README.md ("Trained models and results"), then re-pin what
the tests measure on the default model (run the suite; these are the known pins):
  tests/training/test_eval_ctc.py        KNOWN_CER and the checkpoint it evaluates ($CKPT)
  tests/stream/test_word_times.py        start/end error bounds of the default
  README.md / docs                       sample transcript, dev CER, endpoint latency, server capacity
EOF
