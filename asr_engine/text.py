"""English text normalisation shared by training, decoding and scoring.

`normalize("Dial 911, then press #2.")` -> "dial nine one one then press pound two"
is *not* what this does: numbers are read as cardinals ("nine hundred eleven"),
because that is how the synthesizers used for training read them and because a
single canonical form is what matters for WER. The same function is applied to
references and hypotheses, so scoring is consistent whatever the convention.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["normalize", "number_to_words", "ordinal_to_words", "word_error_counts", "char_error_counts"]

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}
_SYMBOLS = {"&": " and ", "%": " percent ", "+": " plus ", "@": " at ", "=": " equals ", "#": " number "}
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
             "€": ("euro", "euros", "cent", "cents")}


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10])
        n %= 10
        if n:
            words.append(_ONES[n])
    elif n or not words:
        words.append(_ONES[n])
    return words


# Our own, not num2words: num2words writes 1205 as "one thousand, two hundred and five" and 21 as
# "twenty-one", while every corpus here (training targets, the bundled model's vocabulary, the
# dev sets' normalised references) uses the American form without "and" or hyphens (checked
# against num2words 0.5.14 on 1205, 21, 1999). Switching would change the references the bundled
# model was trained and scored on; after normalisation both forms differ only by "and".
def number_to_words(n: int) -> str:
    """Cardinal English words for an integer: 1205 -> "one thousand two hundred five"."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 1000:
        return " ".join(_below_thousand(n))
    words: list[str] = []
    for value, name in _SCALES:
        if n >= value:
            words += number_to_words(n // value).split() + [name]
            n %= value
    if n:
        words += _below_thousand(n)
    return " ".join(words)


def ordinal_to_words(n: int) -> str:
    """21 -> "twenty first"."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _year_to_words(n: int) -> str:
    hi, lo = divmod(n, 100)
    if lo == 0:
        return number_to_words(hi) + " hundred"
    if lo < 10:
        return number_to_words(hi) + " oh " + number_to_words(lo)
    return number_to_words(hi) + " " + number_to_words(lo)


def _digits(s: str) -> str:
    return " ".join(_ONES[int(c)] for c in s)


def _currency(m: re.Match) -> str:
    one, many, sub_one, sub_many = _CURRENCY[m.group(1)]
    whole = int(m.group(2).replace(",", ""))
    out = f"{number_to_words(whole)} {one if whole == 1 else many}"
    if m.group(3):
        cents = int((m.group(3) + "0")[:2])
        if cents:
            out += f" {number_to_words(cents)} {sub_one if cents == 1 else sub_many}"
    return f" {out} "


def _number(m: re.Match) -> str:
    text = m.group(0)
    whole, _, frac = text.replace(",", "").partition(".")
    if frac:
        return f" {number_to_words(int(whole or 0))} point {_digits(frac)} "
    if len(whole) > 1 and whole.startswith("0"):
        return f" {_digits(whole)} "  # "007", zip codes: read digit by digit
    n = int(whole)
    if len(whole) == 4 and 1100 <= n <= 2099 and "," not in text and n % 1000 >= 10:
        return f" {_year_to_words(n)} "
    return f" {number_to_words(n)} "


_RE_CURRENCY = re.compile(r"([$£€])\s?(\d[\d,]*)(?:\.(\d{1,2}))?")
_RE_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_RE_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?|\.\d+")
_RE_NOT_ALLOWED = re.compile(r"[^a-z' ]+")
_RE_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Canonical spoken form: lower case a-z, apostrophes inside words, single spaces.

    Numbers, ordinals, currency and a few symbols become words; other punctuation is
    dropped; hyphens and slashes separate words; accents are stripped.
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.replace("’", "'").replace("‘", "'")
    text = _RE_CURRENCY.sub(_currency, text)
    text = _RE_ORDINAL.sub(lambda m: f" {ordinal_to_words(int(m.group(1)))} ", text)
    text = _RE_NUMBER.sub(_number, text)
    for sym, word in _SYMBOLS.items():
        text = text.replace(sym, word)
    text = text.lower()
    text = re.sub(r"[-/_]", " ", text)
    text = _RE_NOT_ALLOWED.sub(lambda m: "" if m.group(0) in {".", ","} else " ", text)
    # apostrophes only inside words ("don't", "o'clock"), not as quotes
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)
    return _RE_SPACES.sub(" ", text).strip()


def _edit_distance(r: list | str, h: list | str) -> int:
    """Levenshtein distance between two sequences (words or characters), by rapidfuzz (C++)."""
    from rapidfuzz.distance import Levenshtein

    return Levenshtein.distance(r, h)


def word_error_counts(ref: str, hyp: str) -> tuple[int, int]:
    """(edit distance in words, number of reference words) after normalisation."""
    r, h = normalize(ref).split(), normalize(hyp).split()
    return _edit_distance(r, h), len(r)


def char_error_counts(ref: str, hyp: str) -> tuple[int, int]:
    """(edit distance in characters, spaces included, number of reference characters) after normalisation."""
    r, h = normalize(ref), normalize(hyp)  # normalize collapses runs of spaces
    return _edit_distance(r, h), len(r)
