#!/usr/bin/env bash
# The embedded default model: tiny wav2vec 2.0 (streaming form), CTC from
# scratch on the synthetic corpus, dynamic chunk training. ~55 min on 2 cores.
# Exact commands that produced stream/default_model/.
set -euo pipefail
CORPUS=${CORPUS:-data/corpus}
RUN=${RUN:-runs/ctc_w2v2_scratch}

# 1. corpus (4.9 h train, 300 dev, 300 test; ~5 min with 2 jobs). The corpus
#    builder has changed since (hour-share weights, shared MBROLA speaker keys,
#    Kokoro): this exact corpus comes from the builder at commit b8c4524, e.g.
#    git worktree add /tmp/ws_b8c4524 b8c4524 && (cd /tmp/ws_b8c4524 && pip install . && wavstream corpus build ...)
bash training/data/install_engines.sh
wavstream corpus build --out "$CORPUS" --hours 5 --dev 300 --test 300 --seed 0 --jobs 2

# 2. CTC training (from scratch; dynamic chunks 4..32 frames, 10% full context)
wavstream train ctc --init none --family wav2vec2 --train "$CORPUS/train.tsv" --dev "$CORPUS/dev.tsv" \
  --out "$RUN" --steps 1500 --lr 1.5e-3 --batch-seconds 80 --eval-every 250 --ckpt-every 100 \
  --threads 2 --mask-prob 0.2 --max-minutes 75

# 3. evaluation at several latencies, streaming, and at full context
for ms in 160 320 640; do
  wavstream eval --model "$RUN" "$CORPUS/dev.tsv" --chunk-ms $ms
done
wavstream eval --model "$RUN" "$CORPUS/dev.tsv" --full-context

# 4. export the bundle the package embeds (320 ms chunks)
wavstream export "$RUN" --out stream/default_model --chunk-ms 320 --int8
