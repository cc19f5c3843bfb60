#!/bin/bash
# Issue 25's ablation (2026-11-30, fourteenth session): the same fine-tune on 10 h of the corpus before the
# issue (configs/synth/mix-old.json: espeak-ng, flite, festival, piper, hibari; rooms, telephone band, colored
# noise) and on the first 10 h of v3b (Kokoro's voices and mixed speakers, codecs, babble, sound beds).
# The recipe: stage 4's (configs/whisper-top-r16.json) from Whisper's import, 800 steps: blocks 1-5 cached
# as imported, block 6 (Whisper's weights at 0.2x the rate, its conv module at 1x) and the CTC heads learn.
# Declared before measuring: dev_real greedy WER without skipping and at 0.99, and a sign test on dev_real's
# utterances (paired.py). About 80 min on 2 cores.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
asr-engine data synth --out data/old --num 11800 --mix configs/synth/mix-old.json --seed 6 --prefix s6 --workers 2
python docs/experiments/first_hours.py data/old/manifest.jsonl 10 data/old/first10h.jsonl
python docs/experiments/first_hours.py data/v3b/manifest.jsonl 10 data/v3b/first10h.jsonl
[ -d runs/whisper-import-fresh ] || asr-engine import-whisper runs/whisper-import-fresh --chunk-size 32 --left-chunks 4 --skip-layer 3
for c in old v3b; do
  asr-engine train configs/corpus-ablation-$c.json
  asr-engine package runs/corpus-ablation-$c/last runs/abl-$c-pkg --trained-on "corpus ablation: whisper-base encoder (MIT, OpenAI) with block 6 and the CTC heads trained 800 steps on data/$c/first10h.jsonl (10.0 h of synthetic speech)"
  asr-engine eval ../shared/data/dev_real/manifest.jsonl data/heldout/manifest.jsonl data/heldout2/manifest.jsonl \
    --model runs/abl-$c-pkg --backend torch --thresholds 1.0,0.99 --threads 2
done
(cd docs/experiments && python paired.py ../../runs/abl-old-pkg ../../runs/abl-v3b-pkg ../../../shared/data/dev_real/manifest.jsonl)
