"""Real English speech with its script: the voice acting of *Flight of the Amazon Queen* (1995, John Passfield and
Steven Stamatiadis; freeware, Debian's `flight-of-the-amazon-queen` package), whose CD version ships every spoken
line of its dialogues as a short MP3 beside the text the actors read.

The game keeps everything in one bundle, `queen.1c` (the layout ScummVM's `compress_queen` writes): the magic
`QTBL`, a 6-byte version string ("CEM10": CD, English), 2 bytes, a compression byte (1: MP3), a big-endian entry
count, then per entry a 12-byte name, a bundle number, a 32-bit offset and size, then the entries' bytes.

A conversation is a `.DOG` entry (a 20-byte AmBk header, then big-endian 16-bit fields): the number of levels of
its dialogue tree, a unique key, the talk key, the number of Joe's lines and of the other person's, two game-state
triples, and the offsets of the person's lines, the cutaway and the second-visit lines; Joe's lines start after the
tree (32 + 96 bytes a level). Each line is a 16-bit id, a length byte and its text, padded to 4 bytes. A line is
spoken in segments, split where `*` starts a two-letter stage direction (`*XY` takes a position after it); segment
i of line `id` of talk key k is the speech entry `%2d%4x` % (k, id) + "J" (Joe) or "P" (the other person) +
`%1x` % (i + 1), spaces read as zeros; the opening lines are `kkSSSSJ`, a second visit's `kkXXXXP` and `kkXXXXJ`.
Joe's remarks on what he looks at are voiced too: `QUEEN2.JAS` is a text file of the game's strings, the objects'
descriptions first (as many as `QUEEN.JAS`'s fourth header field says), then object names, room names, 12 verbs
and Joe's 40 stock responses; response k (1-40) is speech entry `JOE%04d` % k + segment, description k
`JOE%04d` % (40 + k) + segment. The cutaway scenes (`.CUT`) have speech too, in a layout this reader does not parse.

Nothing here is downloaded: `apt-get install flight-of-the-amazon-queen` (or `apt-get download` and `dpkg -x`)
puts the bundle at `DEFAULT_BUNDLE`."""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from asr_engine.audio import resample

__all__ = ["DEFAULT_BUNDLE", "Line", "build_corpus", "description_lines", "dialogue_lines", "read_bundle", "speech"]

DEFAULT_BUNDLE = "/usr/share/scummvm/flight-of-the-amazon-queen/queen.1c"
_DOG_HEADER = 20  # the AmBk header of .DOG, .CUT and .JAS entries
_JOE_RESPONSES = 40
_COMMAND = re.compile(r"\*(XY\d\d\(\d+,\d*\)|..)")


@dataclass(frozen=True)
class Line:
    clip: str  # the speech entry, e.g. "020006J1.SB"
    text: str  # the script's words for it, as written
    conversation: str  # the .DOG entry, e.g. "BOB1.DOG"
    speaker: str  # "JOE", or the other person's conversation name without its number ("BOB")


class Bundle:
    """A queen.1c file: its version, compression and table of entries (name -> offset, size)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        data = self.path.read_bytes()
        if len(data) < 15 or data[:4] != b"QTBL":
            raise ValueError(f"{self.path}: not a Flight of the Amazon Queen bundle (no QTBL table)")
        self.version = data[4:10].rstrip(b"\0").decode("latin-1")
        self.compression = data[12]
        (n,) = struct.unpack(">H", data[13:15])
        if 15 + 21 * n > len(data):
            raise ValueError(f"{self.path}: truncated table ({n} entries)")
        self.entries: dict[str, tuple[int, int]] = {}
        for i in range(n):
            p = 15 + 21 * i
            name = data[p:p + 12].split(b"\0")[0].decode("latin-1")
            offset, size = struct.unpack(">II", data[p + 13:p + 21])
            if offset + size > len(data):
                raise ValueError(f"{self.path}: entry {name} runs past the end of the file")
            self.entries[name] = (offset, size)
        self._data = data

    def read(self, name: str) -> bytes:
        offset, size = self.entries[name]
        return self._data[offset:offset + size]


def read_bundle(path: str | Path = DEFAULT_BUNDLE) -> Bundle:
    return Bundle(path)


def _i16(b: bytes, o: int) -> int:
    return struct.unpack(">h", b[o:o + 2])[0]


def _string(b: bytes, o: int, align: int = 2) -> tuple[str, int]:
    n = b[o]
    o += 1
    if n == 0:
        return "", o
    return b[o:o + n].decode("latin-1"), (o + n + align - 1) & ~(align - 1)


def _lines(b: bytes, o: int, count: int) -> list[tuple[int, str]]:
    out = []
    for _ in range(count):
        o += 2
        ident = _i16(b, o)
        o += 2
        text, o = _string(b, o, 4)
        out.append((ident, text))
    return out


def _segments(sentence: str) -> list[tuple[int, str]]:
    out, start = [], 0
    for i, m in enumerate(_COMMAND.finditer(sentence)):
        out.append((i, sentence[start:m.start()]))
        start = m.end()
    out.append((len(out), sentence[start:]))
    return [(i, s.strip()) for i, s in out if s.strip()]


def _conversation(name: str, b: bytes) -> list[tuple[str, str, str]]:
    """(voice file prefix, speaker letter, line) of every line of one .DOG entry's data (its header skipped)."""
    levels, talk_key, joe_max, person_max = abs(_i16(b, 0)), _i16(b, 4), _i16(b, 6), _i16(b, 8)
    person1, _cutaway, person2 = struct.unpack(">HHH", b[22:28])
    joe = 32 + levels * 96
    out = [(f"{talk_key:2d}{ident:4x}J", text) for ident, text in _lines(b, joe, joe_max + 1)]
    out += [(f"{talk_key:2d}{ident:4x}P", text) for ident, text in _lines(b, person1, person_max)]
    out.append((f"{talk_key:2d}SSSSJ", _lines(b, joe, 1)[0][1]))  # the opening line, voiced apart
    second_person, o = _string(b, person2)
    second_joe, _ = _string(b, o)
    out += [(f"{talk_key:2d}XXXXP", second_person), (f"{talk_key:2d}XXXXJ", second_joe)]
    return out


def dialogue_lines(bundle: Bundle) -> list[Line]:
    """Every spoken segment of the game's conversations that has a speech entry, with its script, sorted by clip.
    A clip that two lines name with different words (3 in the English CD version) is left out."""
    found: dict[str, set[tuple[str, str, str]]] = {}
    for name in sorted(n for n in bundle.entries if n.endswith(".DOG")):
        data = bundle.read(name)[_DOG_HEADER:]
        person = re.sub(r"\d+$", "", name.rsplit(".", 1)[0])
        try:
            lines = _conversation(name, data)
        except (struct.error, IndexError) as e:
            raise ValueError(f"{bundle.path}: {name} is not a conversation this reader knows ({e})") from e
        for prefix, sentence in lines:
            speaker = "JOE" if prefix.endswith("J") else person
            for i, text in _segments(sentence):
                clip = f"{prefix}{i + 1:1x}".replace(" ", "0").upper() + ".SB"
                if clip in bundle.entries:
                    found.setdefault(clip, set()).add((text, name, speaker))
    return [Line(clip, *next(iter(v))) for clip, v in sorted(found.items()) if len({t for t, _, _ in v}) == 1]


def description_lines(bundle: Bundle) -> list[Line]:
    """Joe's spoken descriptions and stock responses (see the module's docstring), sorted by clip."""
    try:
        head = bundle.read("QUEEN.JAS")[_DOG_HEADER:_DOG_HEADER + 8]
        rooms, names, _objects, descriptions = struct.unpack(">HHHH", head)
        strings = [s.rstrip("\r") for s in bundle.read("QUEEN2.JAS").decode("latin-1").split("\n")]
    except (KeyError, struct.error) as e:
        raise ValueError(f"{bundle.path}: no QUEEN.JAS / QUEEN2.JAS string tables ({e})") from e
    responses_at = descriptions + names + rooms + 12
    if len(strings) < responses_at + _JOE_RESPONSES:
        raise ValueError(f"{bundle.path}: QUEEN2.JAS has {len(strings)} lines, fewer than its tables need")
    numbered = [(k, strings[responses_at + k - 1]) for k in range(1, _JOE_RESPONSES + 1)]
    numbered += [(_JOE_RESPONSES + k, strings[k - 1]) for k in range(1, descriptions + 1)]
    out = []
    for number, sentence in numbered:
        for i, text in _segments(sentence):
            clip = f"JOE{number:04d}{i + 1:1x}".upper() + ".SB"
            if clip in bundle.entries:
                out.append(Line(clip, text, "QUEEN2.JAS", "JOE"))
    return sorted(out, key=lambda ln: ln.clip)


def speech(bundle: Bundle, clip: str, sample_rate: int = 16000) -> np.ndarray:
    """One speech entry decoded (MP3 in the compressed CD bundle; libsndfile reads it) to mono float32."""
    if bundle.compression != 1:
        raise ValueError(f"{bundle.path}: compression {bundle.compression} (only the MP3 bundle, 1, is read)")
    samples, sr = sf.read(io.BytesIO(bundle.read(clip)), dtype="float32")
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    return resample(samples, sr, sample_rate).astype(np.float32)


def build_corpus(bundle: Bundle, out: str | Path, words, heldout_fraction: float = 0.12,
                 descriptions: bool = False, sample_rate: int = 16000) -> dict:
    """The game's dialogue as a corpus (`asr_engine.data.recorded.write_corpus`): each conversation's lines, Joe's
    side too, grouped under the character he talks to, so that holding a group out holds that voice out. With
    `descriptions`, Joe's descriptions and responses are added to training (never held out; the split is the same
    as without them)."""
    from asr_engine.data.recorded import Recording, write_corpus

    def recording(line: Line, group: str | None = None) -> Recording:
        group = group or re.sub(r"\d+$", "", line.conversation.rsplit(".", 1)[0])
        return Recording(line.clip.rsplit(".", 1)[0], line.text, line.speaker, group,
                         lambda: speech(bundle, line.clip, sample_rate),
                         {"conversation": line.conversation, "source": "fotaq"})

    extra = [recording(ln, "JOE") for ln in description_lines(bundle)] if descriptions else []
    return write_corpus([recording(ln) for ln in dialogue_lines(bundle)], out, words, heldout_fraction,
                        train_only=extra, sample_rate=sample_rate)
