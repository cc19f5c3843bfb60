"""Real English speech with its script: the voice acting of *Drascula: The Vampire Strikes Back* (1996, Alcachofa
Soft; freeware, Debian's `drascula` package), whose English version ships each spoken line as a raw audio file
beside the game's texts.

The lines are `<character><number>.ALS` files in the English folder: unsigned 8-bit mono PCM at 11,025 Hz. The
character prefix picks one of the game's text arrays and the number indexes it (ScummVM's `talk_*` functions):
"" the hero John Hacker, D Count Drascula, B the drunk, BJ Billie Jean, E, I Igor, L, P the pianist, T the
bartender, VB Von Braun. The arrays are in `drascula.dat` (the engine data file of ScummVM's `create_drascula`,
version 6): a magic, a version byte, thirteen tables of big-endian numbers (skipped here: their lengths are all
that is read), the number of languages, then fifteen text arrays; each gives its count, then per language a length
and a block of NUL-terminated strings, the first at the block's start and each later one 2 bytes after the end of
a big-endian length that stands 2 bytes before where the previous one's reading left off. English is language 0.

Nothing here is downloaded: `apt-get install drascula` puts the files at `DEFAULT_FOLDER`."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

from asr_engine.audio import resample

__all__ = ["DEFAULT_FOLDER", "PREFIXES", "build_corpus", "read_texts", "spoken_lines", "speech"]

DEFAULT_FOLDER = "/usr/share/scummvm/drascula/en"
_ARRAYS = ("text", "textd", "textb", "textbj", "texte", "texti", "textl", "textp", "textt", "textvb", "textsys",
           "texthis", "textverbs", "textmisc", "textd1")
# the file prefix of each character's lines -> (its text array, the speaker's name)
PREFIXES = {"": ("text", "JOHN"), "D": ("textd", "DRASCULA"), "B": ("textb", "DRUNK"), "BJ": ("textbj", "BJ"),
            "E": ("texte", "E"), "I": ("texti", "IGOR"), "L": ("textl", "L"), "P": ("textp", "PIANIST"),
            "T": ("textt", "BARTENDER"), "VB": ("textvb", "VONBRAUN")}
# the sizes in bytes of one entry of each of the tables before the texts (char map, item locations, polygons, verb
# bar, menu, frames, candles, pianist, drunk, room pre-updates, room updates, room actions, talk sequences)
_TABLE_ENTRY = (4, 4, 4, 2, 4, 2, 4, 2, 2, 20, 20, 10, 8)
_DATAALIGNMENT = 4


def _strings(count: int, block: bytes) -> list[str]:
    starts, pos = [0], _DATAALIGNMENT
    for _ in range(1, count):
        pos -= 2
        (n,) = struct.unpack(">H", block[pos:pos + 2])
        pos += 2 + n
        starts.append(pos)
    out = []
    for s in starts:
        end = block.index(b"\0", s)
        out.append(block[s:end].decode("latin-1"))
    return out


def read_texts(path: str | Path, language: int = 0) -> dict[str, list[str]]:
    """drascula.dat's text arrays in one language (0: English), by name ("text", "textd", ...)."""
    data = Path(path).read_bytes()
    if data[:8] != b"DRASCULA":
        raise ValueError(f"{path}: not a drascula.dat (no DRASCULA magic)")
    if data[8] != 6:
        raise ValueError(f"{path}: drascula.dat version {data[8]} (this reader knows version 6)")
    try:
        p = 9
        for size in _TABLE_ENTRY:
            (n,) = struct.unpack(">H", data[p:p + 2])
            p += 2 + n * size
        (languages,) = struct.unpack(">H", data[p:p + 2])
        p += 2
        if not 0 <= language < languages:
            raise ValueError(f"{path}: no language {language} (it has {languages})")
        out = {}
        for name in _ARRAYS:
            (count,) = struct.unpack(">H", data[p:p + 2])
            p += 2
            for lang in range(languages):
                (length,) = struct.unpack(">H", data[p:p + 2])
                block = data[p + 2:p + 2 + length]
                if len(block) < length:
                    raise ValueError(f"{path}: truncated in the text array {name}")
                if lang == language:
                    out[name] = _strings(count, block)
                p += 2 + length
    except (struct.error, IndexError) as e:
        raise ValueError(f"{path}: truncated or not version 6 ({e})") from e
    return out


def spoken_lines(folder: str | Path = DEFAULT_FOLDER) -> list[tuple[Path, str, str]]:
    """(audio file, its line as the script writes it, speaker) for every .ALS file of a known character whose
    number indexes its text array, sorted by file name. Links (the package shares some files) are skipped."""
    folder = Path(folder)
    texts = read_texts(folder / "drascula.dat")
    out = []
    for f in sorted(folder.iterdir()):
        m = re.fullmatch(r"([A-Za-z]*?)(\d+)\.als", f.name, flags=re.IGNORECASE)
        if not m or f.is_symlink() or m.group(1).upper() not in PREFIXES:
            continue
        array, speaker = PREFIXES[m.group(1).upper()]
        lines = texts[array]
        number = int(m.group(2))
        if number < len(lines) and lines[number].strip():
            out.append((f, lines[number].strip(), speaker))
    return out


def speech(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """One .ALS file (unsigned 8-bit mono at 11,025 Hz) as float32 at `sample_rate`."""
    raw = np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
    x = (raw.astype(np.float32) - 128.0) / 128.0
    return resample(x, 11025, sample_rate).astype(np.float32)


def build_corpus(folder: str | Path, out: str | Path, words, heldout_fraction: float = 0.12,
                 sample_rate: int = 16000) -> dict:
    """The game's spoken lines as a corpus (`asr_engine.data.recorded.write_corpus`), grouped by speaker; the hero,
    John Hacker, who speaks most of them, is never held out."""
    from asr_engine.data.recorded import Recording, write_corpus

    recordings = [Recording(path.stem.upper(), text, speaker, speaker,
                            lambda path=path: speech(path, sample_rate), {"source": "drascula"})
                  for path, text, speaker in spoken_lines(folder)]
    return write_corpus(recordings, out, words, heldout_fraction, always_train=frozenset({"JOHN"}),
                        names=False, sample_rate=sample_rate)
