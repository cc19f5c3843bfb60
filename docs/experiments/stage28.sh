#!/bin/bash
# Stage 28 as declared in whisper-import.md (thirty-second session, 2026-12-06): stage 24's recipe from the bundled
# model (the mean of stage 24 and its start) on data/v3e plus data/v3r, new dry speech from three synthesizer families
# the heads have never heard (RHVoice, SVOX Pico, MBROLA; Debian's contrib and non-free components). Its candidates,
# stage 28 and the mean of stage 28 and its start, are judged against the bundled model. Runnable on a fresh machine
# with those packages installed (README, training section).
set -ex
cd "$(dirname "$0")/../.." && source .venv/bin/activate
bash docs/experiments/heldout_sets.sh
asr-engine data synth --out data/v3e --num 15000 --mix configs/synth/mix-fast-dry.json --seed 29 --prefix d29 --workers 2
asr-engine data synth --out data/v3r --num 9000 --mix configs/synth/mix-new-dry.json --seed 32 --prefix r32 --workers 2
BUNDLED_COMMIT=${BUNDLED_COMMIT:-df4f616}  # the model shipped with stage 24 (the mean of stage 24 and its start)
bash docs/experiments/model_from_git.sh avg24 $BUNDLED_COMMIT
asr-engine train configs/whisper-heads-s28.json --resume  # starts afresh, or resumes an interrupted run
bash docs/experiments/package_stage.sh 28 avg24 \
  "the bundled model of commit $BUNDLED_COMMIT (the mean of stage 24 and its start)" \
  "dry synthetic speech (no noise, babble, sound bed, room or clipping): data/v3e (piper, hibari and flite) and \
data/v3r (RHVoice's alan, bdl, clb, evgeniy-eng and lyubov, SVOX Pico's two English voices, MBROLA's us1, us2, us3 and \
en1 through espeak-ng), both speaking WordNet, fortunes, State of the Union and chatterbot text and lists of wordfreq's \
20,000 most frequent English words, the cached block outputs masked as SpecAugment masks features (4 time spans of \
up to 5% of each utterance, 10% of the channels)"
bash docs/experiments/judge.sh avg24 s28-pkg avg28
