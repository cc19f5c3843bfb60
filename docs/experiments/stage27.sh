#!/bin/bash
# Stage 27 as declared in whisper-import.md (thirty-first session, 2026-12-06): blocks 4-6 taught to read compacted
# sequences by a fixed teacher, the start model's whole pass (skip_teacher_from; no transcripts, no dropout; as stage
# 26 with more learning: 3e-4, conv modules and heads too, three steps in four compacted), from the bundled model of
# commit df4f616 on data/v3e, then judged by the rule declared there (the block-3 cache is stage 25's).
exec bash "$(dirname "$0")/self_stage.sh" 27 "trained 400 steps to read sequences with the gate's blank frames \
removed (threshold 0.9), with their conv modules and the heads, taught only by the start model's whole pass (no \
transcripts)"
