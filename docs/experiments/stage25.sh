#!/bin/bash
# Stage 25 as declared in whisper-import.md (thirtieth session, 2026-12-06): blocks 4-6 taught to read compacted
# sequences by their own unskipped pass alone (skip_distill; no transcripts, heads and conv modules fixed, an L2-SP
# anchor on the start), from the bundled model of commit df4f616 on data/v3e, then judged by the rule declared there.
exec bash "$(dirname "$0")/self_stage.sh" 25 "trained 400 steps to read sequences with the gate's blank frames \
removed (threshold 0.9), taught only by their own unskipped pass (no transcripts; heads and conv modules fixed; an \
L2-SP anchor on the start)"
