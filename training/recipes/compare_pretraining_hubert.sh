#!/usr/bin/env bash
# Pretraining pays off? HuBERT tiny: pretrain (iteration 1, MFCC k-means) on 4.9 h
# unlabelled, then CTC on the 1-hour labelled subset vs the same architecture from scratch.
set -euo pipefail
C=${CORPUS:-data/corpus}; R=${RUNS:-runs}
wavstream train pretrain --family hubert --train $C/train.tsv --labels $R/labels_mfcc_k100 --num-clusters 100 \
  --out $R/pt_hubert_it1 --steps 600 --batch-seconds 60 --threads 2 --ckpt-every 100 --max-minutes 18
wavstream train ctc --init $R/pt_hubert_it1 --train $C/train_1h.tsv --dev $C/dev.tsv --out $R/ft_hubert_1h \
  --steps 300 --lr 1e-3 --batch-seconds 80 --threads 2 --eval-every 150 --mask-prob 0.3
wavstream train ctc --init none --family hubert --train $C/train_1h.tsv --dev $C/dev.tsv --out $R/scratch_hubert_1h \
  --steps 300 --lr 1.5e-3 --batch-seconds 80 --threads 2 --eval-every 150 --mask-prob 0.2
