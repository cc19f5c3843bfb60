"""Output formats of the transcription CLI: txt, json, jsonl, srt, vtt."""

from __future__ import annotations

import json

from asr_engine.decoding import Word
from asr_engine.transcribe import Result

FORMATS = ("txt", "json", "jsonl", "srt", "vtt")
SUBTITLE_FORMATS = ("srt", "vtt")


def cues(words: list[Word], max_words: int = 10, max_seconds: float = 6.0,
         max_gap: float = 1.0) -> list[tuple[float, float, str]]:
    """Group words into subtitle cues, breaking on long pauses, length or word count."""
    out: list[tuple[float, float, str]] = []
    cur: list[Word] = []
    for w in words:
        if cur and (len(cur) >= max_words or w.end - cur[0].start > max_seconds or w.start - cur[-1].end > max_gap):
            out.append((cur[0].start, cur[-1].end, " ".join(x.word for x in cur)))
            cur = []
        cur.append(w)
    if cur:
        out.append((cur[0].start, cur[-1].end, " ".join(x.word for x in cur)))
    return out


def _timestamp(t: float, sep: str) -> str:
    ms = int(round(t * 1000))
    h, ms = divmod(ms, 3600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(res: Result) -> str:
    blocks = [f"{i}\n{_timestamp(a, ',')} --> {_timestamp(b, ',')}\n{text}\n"
              for i, (a, b, text) in enumerate(cues(res.words), 1)]
    return "\n".join(blocks)


def to_vtt(res: Result) -> str:
    blocks = [f"{_timestamp(a, '.')} --> {_timestamp(b, '.')}\n{text}\n" for a, b, text in cues(res.words)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render(results: list[Result], fmt: str) -> str:
    """All results in one document (srt/vtt take exactly one result)."""
    if fmt == "txt":
        if len(results) == 1:
            return (results[0].text if results[0].error is None else "") + "\n"
        return "".join(f"{r.path}\t{r.text if r.error is None else '<error>'}\n" for r in results)
    if fmt == "json":
        return json.dumps([r.to_dict() for r in results], indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(r.to_dict()) + "\n" for r in results)
    if fmt in SUBTITLE_FORMATS:
        if len(results) != 1:
            raise ValueError(f"{fmt} holds one file's subtitles; got {len(results)}")
        return to_srt(results[0]) if fmt == "srt" else to_vtt(results[0])
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
