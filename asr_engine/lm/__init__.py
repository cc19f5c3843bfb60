"""Token-level language models over the acoustic model's vocabulary: gated linear recurrences
(GILR), trained over whole sequences with a parallel scan, stepped one token at a time in decoding.

`asr_engine.lm.model` (torch): the model, training-side loading and saving; `asr_engine.lm.fusion`
(numpy and ONNX Runtime): shallow fusion into beam search; `asr_engine.lm.export` (torch): the
torch step and its ONNX export."""
