#!/bin/bash
# Stage 26 as declared in whisper-import.md (thirty-first session, 2026-12-06): blocks 4-6 taught to read compacted
# sequences by a fixed teacher, the start model's whole pass (skip_teacher_from; no transcripts, no dropout, heads
# and conv modules fixed, half of the steps compacted at 0.9 and half whole), from the bundled model of commit
# df4f616 on data/v3e, then judged by the rule declared there (the block-3 cache is stage 25's).
exec bash "$(dirname "$0")/self_stage.sh" 26 "trained 300 steps to read sequences with the gate's blank frames \
removed (threshold 0.9), taught only by the start model's whole pass (no transcripts; heads and conv modules fixed)"
