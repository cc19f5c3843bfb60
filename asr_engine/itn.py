"""Numbers written as people write them: the recognizer's "press one for extension one two three four at three
thirty p m" becomes "press 1 for extension 1234 at 3:30 p.m." (inverse text normalization).

Which stretches of words are numbers, and their values, is text2num's (`find_numbers`, MIT, Allo-Media: cardinals,
ordinals, decimals, numbers read digit by digit with leading zeros). On top of it, a short list of rules for how
English writes what it finds, as style guides (AP, Chicago) and other recognizers (Whisper, NeMo's ITN) write it:

- a number of two words or more, or of 10 and over, in digits ("23", "105", "12,500", "3.14"); a lone "one"
  to "nine" stays a word ("one of them", "two of us"), except after words that take a figure ("press 1",
  "page 3", "extension 4") or before a unit ("5%", "$5", "5 cents");
- three digits or more read one by one ("nine one one", "five five five one two one two") as one figure, a
  toll-free prefix said as a number before seven of them too ("one eight hundred five five five ...");
- years read in pairs ("nineteen ninety nine" 1999, "twenty oh five" 2005) and decades ("the nineteen sixties");
- times ("three thirty p m" 3:30 p.m., "at seven fifteen" 7:15, "nine a m" 9 a.m.);
- money and percentages ("five dollars and fifty cents" $5.50, "two point five million dollars" $2.5 million,
  "forty percent" 40%), "minus"; ordinals from 10th on, and after a month ("March 1st").

A stretch of words never spans punctuation (the punctuation model's commas and full stops keep "one, two,
three" a list). It works on the written words of a result (after punctuation and casing), keeps the
recognizer's words in `Result.spoken`, and gives a number the times of its first and last words.
"""

from __future__ import annotations

import re
from dataclasses import replace

from text_to_num import find_numbers

from asr_engine.decoding import Word
from asr_engine.text import normalize

__all__ = ["figures_when", "number_spans", "numbers_written", "write_numbers", "written_result"]

_SCALES = ("hundred", "thousand", "million", "billion", "trillion")
_BIG = {"million": 10**6, "billion": 10**9, "trillion": 10**12}
_DECADES = {w: 10 * (i + 2) for i, w in enumerate(
    "twenties thirties forties fifties sixties seventies eighties nineties".split())}
_MONTHS = frozenset("january february march april may june july august september october november december".split())
# words after which a number from zero to nine is written as a figure: keys and menus of a phone system, and the
# numbered parts of a document or a building
_FIGURE_AFTER = frozenset("press dial extension option folder room page chapter section part step level version "
                          "track platform gate channel".split())
_TIME_AFTER = frozenset(["at", "by", "until", "till", "around", "from", "before", "after"])
_CURRENCY = {"dollar": "$", "dollars": "$", "euro": "€", "euros": "€"}
_CENTS = frozenset(["cent", "cents"])
_OH = frozenset(["oh", "o"])
_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TRAIL = re.compile(r"[^\w'%$€]+$")
_LEAD = re.compile(r"^[^\w'$€-]+")


class _Token:
    """What find_numbers reads: a word, and whether punctuation separates it from the one before."""

    __slots__ = ("word", "separated")

    def __init__(self, word: str, separated: bool):
        self.word, self.separated = word, separated

    def text(self) -> str:
        return self.word

    def nt_separated(self, previous) -> bool:
        return self.separated

    def not_a_number_part(self) -> bool:
        return False


class _Number:
    __slots__ = ("start", "end", "text", "value", "ordinal")

    def __init__(self, o):
        self.start, self.end, self.text, self.value, self.ordinal = o.start, o.end, o.text, o.value, o.is_ordinal

    @property
    def words(self) -> int:
        return self.end - self.start

    def integer(self, lo: int, hi: int, words: int = 1) -> bool:
        """A cardinal integer in [lo, hi] of at most `words` words (not one read with leading zeros, "007")."""
        if self.ordinal or "." in self.text or self.words > words or not lo <= self.value <= hi:
            return False
        return self.text == "0" or not self.text.startswith("0")


def figures_when(numbers: bool | None, punctuated: bool) -> bool:
    """Whether written text has its numbers as figures: `numbers` (DecodeOptions.numbers, --numbers) when given,
    else when the text is punctuated."""
    return punctuated if numbers is None else numbers


def number_spans(words: list[str], breaks: frozenset[int] | set[int] = frozenset()) -> list[tuple[int, int, str]]:
    """Spoken words (lower case, no punctuation) -> [(start, end, written)] for each stretch words[start:end]
    written otherwise; `breaks`: the indices of words that punctuation separates from the word before."""
    if not words:
        return []
    found = [_Number(o) for o in find_numbers([_Token(w, i in breaks) for i, w in enumerate(words)], "en", 0)]

    def joined(i: int) -> bool:  # word i exists and continues the word before it
        return i < len(words) and i not in breaks

    def word(i: int) -> str:
        return words[i] if 0 <= i < len(words) else ""

    out: list[tuple[int, int, str]] = []
    as_said: set[int] = set()  # lone numbers under ten left as words
    k = 0
    while k < len(found):
        n = found[k]
        nxt = found[k + 1] if k + 1 < len(found) else None
        span = (_digit_run(found, k, words, breaks) or _time(n, nxt, words, joined) or _year(n, nxt, words, joined)
                or _scaled(n, nxt, words, joined))
        if span is None:
            if words[n.start].startswith(_SCALES) or any(  # "a hundred", "a millionth", "the two thousands": as said
                    words[i].startswith(_SCALES) and words[i].endswith("s") for i in range(n.start, n.end)):
                k += 1
                continue
            text = f"{int(n.value):,}" if not n.ordinal and "." not in n.text and n.value >= 10_000 else n.text
            span = (n.start, n.end, text)
        start, end, text = span[:3]
        cut = span[3] if len(span) > 3 else None  # where a second word ("p.m.", "million") starts
        # units and signs around a figure
        small = end - start == 1 and text.isdigit() and int(text) < 10
        forced = False
        if joined(end) and words[end] == "percent":
            text, end, forced = text + "%", end + 1, True
        elif joined(end) and words[end] in _CURRENCY and not n.ordinal and ":" not in text:
            symbol, end, forced = _CURRENCY[words[end]], end + 1, True
            cents = _cents(found, end, words, joined)
            if cents:
                text, end = text + f".{cents[0]:02d}", cents[1]
            text = symbol + text
        elif joined(end) and words[end] in _CENTS:
            forced = True
        while k < len(found) and found[k].start < end:
            k += 1
        if joined(start) and word(start - 1) == "minus" and not n.ordinal and text[:1].isdigit():
            start, text, forced = start - 1, "-" + text, True
        dated = (word(start - 1) in _MONTHS or word(end) in _MONTHS) and "may" not in (word(start - 1), word(end))
        if small and not forced and not dated and word(start - 1) not in _FIGURE_AFTER:
            as_said.add(start)
            continue  # a lone number under ten stays a word
        if n.ordinal and n.value < 10 and word(n.start - 1) not in _MONTHS:
            continue  # "first", "second": words, but "March 1st"
        if cut is None:
            out.append((start, end, text))
        else:  # two words, each over its own spoken words: "3:30" "p.m.", "$5" "million"
            first, second = text.split(" ")
            out += [(start, cut, first), (cut, end, second)]
    # a plain figure right after or before a number left as a word stays a word too: "one thirty", "seven eleven"
    # rather than "one 30", "seven 11"
    return [(a, b, t) for a, b, t in out if not t.isdigit() or not (
        (a - 1 in as_said and joined(a)) or (b in as_said and joined(b)))]


def numbers_written(spoken: str) -> str:
    """A spoken text (lower-case words) with its numbers written: "call nine one one" -> "call 911"."""
    words = spoken.split()
    out, at = [], 0
    for start, end, text in number_spans(words):
        out += words[at:start] + [text]
        at = end
    return " ".join(out + words[at:])


def _digit_run(found: list[_Number], k: int, words: list[str], breaks) -> tuple | None:
    """Three digits or more read one by one ("nine one one", "oh five five"): one figure. A toll-free prefix said
    as a number before seven digits ("(one) eight hundred five five five ..."; text2num reads "eight hundred five"
    as 805) is the figure's "(1)800"."""
    start = found[k].start
    said = words[start:found[k].end]
    # "eight hundred" (+ a digit): the head of a ten-digit figure, if seven digits follow in all (an area code
    # never starts with 0 or 1)
    head = found[k].text[0] + "00" + (found[k].text[-1] if len(said) == 3 else "") if (
        2 <= len(said) <= 3 and said[0] in _DIGITS[2:] and said[1] == "hundred" and all(w in _DIGITS for w in said[2:])
        and not found[k].ordinal) else ""
    while not head and start > 0 and words[start - 1] in _OH and start not in breaks:  # "oh five five"
        start -= 1
    digits, j, end = head or "0" * (found[k].start - start), k + bool(head), found[k].end if head else found[k].start
    while j < len(found):
        n = found[j]
        gap = words[end:n.start]
        if any(g not in _OH for g in gap) or (j > k and any(i in breaks for i in range(end, n.start + 1))):
            break
        if not (n.text.isdigit() and all(w in _DIGITS or w in _OH for w in words[n.start:n.end]) and not n.ordinal):
            break  # each word a digit ("007" too; not "eight hundred five", whose three figures are not its words)
        digits += "0" * len(gap) + n.text
        end, j = n.end, j + 1
    if head:
        if len(digits) != 10:
            return None
        if start > 0 and words[start - 1] == "one" and start not in breaks:  # "one eight hundred ..."
            start, digits = start - 1, "1" + digits
        return start, end, digits
    if len(digits) < 3:
        return None
    return start, end, digits


def _year(n: _Number, nxt: _Number | None, words: list[str], joined) -> tuple | None:
    """"nineteen ninety nine" 1999, "twenty oh five" 2005, "twelve thirty four" 1234; "the nineteen sixties"."""
    if not n.integer(11, 20):
        return None
    if joined(n.end) and words[n.end] in _DECADES:
        return n.start, n.end + 1, f"{int(n.value)}{_DECADES[words[n.end]]}s"
    if nxt is None or not joined(nxt.start):
        return None
    if nxt.start == n.end and nxt.integer(10, 99, words=2):
        return n.start, nxt.end, f"{int(n.value)}{int(nxt.value)}"
    if nxt.start == n.end + 1 and words[n.end] in _OH and joined(n.end) and nxt.integer(1, 9):
        return n.start, nxt.end, f"{int(n.value)}0{int(nxt.value)}"
    return None


def _ampm(words: list[str], i: int, joined) -> tuple[str, int] | None:
    """"am" / "a m" / "pm" / "p m" at word i: (written, the word after it)."""
    if not joined(i):
        return None
    if words[i] in ("am", "pm"):
        return f"{words[i][0]}.m.", i + 1
    if words[i] in ("a", "p") and joined(i + 1) and words[i + 1] == "m":
        return f"{words[i]}.m.", i + 2
    return None


def _time(n: _Number, nxt: _Number | None, words: list[str], joined) -> tuple | None:
    """"three thirty p m" 3:30 p.m., "at seven fifteen" 7:15, "nine a m" 9 a.m., "ten oh five" 10:05."""
    if not n.integer(1, 12):
        return None
    minutes, end = None, n.end
    if nxt is not None and joined(nxt.start):
        if nxt.start == n.end and nxt.integer(10, 59, words=2):
            minutes, end = int(nxt.value), nxt.end
        elif nxt.start == n.end + 1 and words[n.end] in _OH and joined(n.end) and nxt.integer(1, 9):
            minutes, end = int(nxt.value), nxt.end
    ampm = _ampm(words, end, joined)
    timed = n.start > 0 and words[n.start - 1] in _TIME_AFTER and joined(n.start)  # "at three thirty"
    if ampm is None and (minutes is None or not timed):
        return None
    if ampm is not None and words[end] == "am" and minutes is None and not timed:
        return None  # "which one am I": the verb, not a.m. (after "at", or with minutes, "am" is a.m.)
    text = f"{int(n.value)}" + (f":{minutes:02d}" if minutes is not None else "")
    if ampm:
        return n.start, ampm[1], f"{text} {ampm[0]}", end
    return n.start, end, text


def _scaled(n: _Number, nxt: _Number | None, words: list[str], joined) -> tuple | None:
    """"five million" 5 million, "two point five billion" 2.5 billion: the scale stays a word."""
    if n.ordinal:
        return None
    if nxt is not None and nxt.start == n.end and nxt.words == 1 and words[nxt.start] in _BIG and joined(nxt.start) \
            and not words[n.start].startswith(_SCALES):
        return n.start, nxt.end, f"{n.text} {words[nxt.start]}", nxt.start
    last = words[n.end - 1]
    if n.words > 1 and last in _BIG and "." not in n.text:
        head = n.value / _BIG[last]
        if head == int(head) and head < 1000 and not words[n.start].startswith(_SCALES):
            return n.start, n.end, f"{int(head)} {last}", n.end - 1
    return None


def _cents(found: list[_Number], end: int, words: list[str], joined) -> tuple[int, int] | None:
    """After "N dollars": "and fifty cents" / "fifty cents" -> (cents, the word after them)."""
    i = end + 1 if joined(end) and words[end] == "and" else end
    for c in found:
        if c.start == i and joined(i) and c.integer(1, 99, words=2) and joined(c.end) and words[c.end] in _CENTS:
            return int(c.value), c.end + 1
    return None


def write_numbers(forms: list[str], spoken: list[str] | None = None) -> list[tuple[int, int, str]]:
    """Written words (each one recognizer word, with its punctuation and casing) -> [(start, end, written)]: the
    stretches forms[start:end] that are numbers, written with their punctuation (and a word such as "press" that the
    punctuation model gave a comma before its number, without it). `spoken`: the recognizer's words (default: the
    forms in lower case without punctuation)."""
    spoken = spoken if spoken is not None else [normalize(f) or f.lower() for f in forms]
    breaks = {i for i in range(1, len(forms)) if _TRAIL.search(forms[i - 1])}
    out = []
    for start, end, text in number_spans(spoken, breaks):
        before = start - 1
        if before >= 0 and spoken[before] in _FIGURE_AFTER and forms[before].endswith(",") \
                and (not out or out[-1][1] <= before):
            out.append((before, start, forms[before][:-1]))  # "Press, 1": no comma between a key word and its number
        lead = _LEAD.match(forms[start])
        trail = _TRAIL.search(forms[end - 1])
        t = trail.group(0) if trail else ""
        if text.endswith(".") and t.startswith("."):
            t = t[1:]
        out.append((start, end, (lead.group(0) if lead else "") + text + t))
    return out


def written_result(r, forms: list[str] | None = None):
    """A Result with its numbers written as figures (its words merged where a number spans several; a merged
    word has the times of its first and last words and the lowest confidence among them). `forms`: its words
    written otherwise (punctuation and casing), one a recognizer word; default: its words as they are (a result
    whose numbers were written already: its spoken words). The recognizer's words are kept in `spoken`."""
    if r.error is not None or not r.words:
        return r
    spoken_words = r.spoken if r.spoken is not None else r.words
    raw = [normalize(w.word) or w.word for w in spoken_words]
    if forms is None:  # the words as written so far, while they are still one a spoken word
        forms = [w.word for w in (r.words if len(r.words) == len(spoken_words) else spoken_words)]
    words: list[Word] = []
    at = 0
    for start, end, text in write_numbers(forms, raw):
        words += [replace(w, word=f) for w, f in zip(spoken_words[at:start], forms[at:start])]
        part = spoken_words[start:end]
        words.append(Word(text, part[0].start, part[-1].end, min(w.confidence for w in part)))
        at = end
    words += [replace(w, word=f) for w, f in zip(spoken_words[at:], forms[at:])]
    return replace(r, words=words, text=" ".join(w.word for w in words), spoken=list(spoken_words))
