"""asr-engine: streaming Conformer/CTC speech recognition with blank-triggered layer skipping."""

__version__ = "0.1.0"
