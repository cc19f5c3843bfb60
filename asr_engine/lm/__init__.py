"""Token-level language models over the acoustic model's vocabulary: gated linear recurrences
(GILR), trained over whole sequences with a parallel scan, stepped one token at a time in decoding."""

from asr_engine.lm.model import GILRLanguageModel, LMConfig, load_lm, save_lm

__all__ = ["GILRLanguageModel", "LMConfig", "load_lm", "save_lm"]
