"""Output formats of the transcription CLI: txt, json, jsonl, srt, vtt."""

from __future__ import annotations

import json

from asr_engine.decoding import Word
from asr_engine.results import Result

FORMATS = ("txt", "json", "jsonl", "srt", "vtt")
SUBTITLE_FORMATS = ("srt", "vtt")


# subtitle conventions (Netflix's and the BBC's guides, what whisper's and ffmpeg users get): at most
# two lines of 42 characters, at most ~7 s on screen, and a new cue where the speaker pauses
LINE_CHARS = 42
MAX_LINES = 2
MAX_SECONDS = 7.0
PAUSE_SECONDS = 0.5


def cues(words: list[Word], max_chars: int = LINE_CHARS * MAX_LINES, max_seconds: float = MAX_SECONDS,
         pause: float = PAUSE_SECONDS, line_chars: int = LINE_CHARS) -> list[tuple[float, float, str]]:
    """Group words into subtitle cues: a cue ends where the speaker pauses (a gap >= `pause`);
    a stretch of speech too long for one cue (over `max_chars` characters or `max_seconds`) is
    split after a sentence's end when its words are written with punctuation, else at its longest gap (the middle
    one among equals), again until every piece fits. Each
    cue's text is broken into balanced lines of at most `line_chars` where it can be."""
    out: list[tuple[float, float, str]] = []
    phrase: list[Word] = []
    for w in words:
        if phrase and w.start - phrase[-1].end >= pause:
            out += _split(phrase, max_chars, max_seconds, line_chars)
            phrase = []
        phrase.append(w)
    if phrase:
        out += _split(phrase, max_chars, max_seconds, line_chars)
    return out


def _split(ws: list[Word], max_chars: int, max_seconds: float, line_chars: int) -> list[tuple[float, float, str]]:
    text = " ".join(w.word for w in ws)
    if len(ws) == 1 or (len(text) <= max_chars and ws[-1].end - ws[0].start <= max_seconds):
        return [(ws[0].start, ws[-1].end, _lines(text, line_chars))]
    # a written transcript (--punctuate) is cut after a sentence's end first, as subtitlers do; else at the widest gap
    cuts = [i + 1 for i, w in enumerate(ws[:-1]) if w.word[-1:] in (".", "?", "!")]
    if not cuts:
        gaps = [ws[i].start - ws[i - 1].end for i in range(1, len(ws))]
        widest = max(gaps)
        cuts = [i + 1 for i, g in enumerate(gaps) if g >= widest - 1e-6]
    cut = min(cuts, key=lambda i: abs(i - len(ws) / 2))  # among equals, the one nearest the middle
    return _split(ws[:cut], max_chars, max_seconds, line_chars) + _split(ws[cut:], max_chars, max_seconds, line_chars)


def _lines(text: str, line_chars: int) -> str:
    """One line if it fits, else two lines split at the space that balances them best."""
    if len(text) <= line_chars or " " not in text:
        return text
    spaces = [i for i, c in enumerate(text) if c == " "]
    best = min(spaces, key=lambda i: (max(i, len(text) - i - 1) > line_chars, abs(len(text) - 2 * i - 1)))
    return text[:best] + "\n" + text[best + 1:]


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


def txt_line(r: Result) -> str:
    """One of several files in txt: its path, a tab, its transcript (`<error>` for a file that failed)."""
    return f"{r.path}\t{r.text if r.error is None else '<error>'}\n"


def render(results: list[Result], fmt: str) -> str:
    """All results in one document (srt/vtt take exactly one result)."""
    if fmt == "txt":
        if len(results) == 1:
            return (results[0].text if results[0].error is None else "") + "\n"
        return "".join(txt_line(r) for r in results)
    if fmt == "json":
        return json.dumps([r.to_dict() for r in results], indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(r.to_dict()) + "\n" for r in results)
    if fmt in SUBTITLE_FORMATS:
        if len(results) != 1:
            raise ValueError(f"{fmt} holds one file's subtitles; got {len(results)}")
        return to_srt(results[0]) if fmt == "srt" else to_vtt(results[0])
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
