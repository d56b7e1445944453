"""English normalisation of ECG machine reports (PTB-XL: German, Swedish and English statements).

:func:`normalize_report` is what the store writes as ``report``:

1. lower-case; drop a trailing ``Edit: ...`` annotation (it holds SCP codes and likelihoods added
   when the labels were validated; keeping it would leak the labels into the text);
2. repair the ``#`` that replaces ``ü`` in some exports (``f#r`` -> ``für``); drop the analysis
   program's version stamp before ``unbestätigter bericht`` (``4.46``);
3. German/Swedish reports (:func:`detect_language`): every phrase of the table
   ``resources/ptbxl_phrases.tsv`` is replaced by its English text, longest phrase first, on word
   boundaries; a target ending in "." closes a statement;
4. English clean-up for every report (``ekg`` -> ``ecg``, ...);
5. one sentence per statement: split at "." and at runs of 2+ spaces in the original (how the
   devices separate statements), tidy spaces, join with ". " and end with "." (digits such as ``4.0`` are kept).

:func:`untranslated_words` and :func:`coverage` measure what remains untranslated: a word is
"English" when it occurs in the table's English side or in ``resources/english_words.txt``
(words of the English PTB-XL reports; ECG abbreviations and lead names included).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable
from importlib import resources

_SEP = "\x1e"  # statement separator used internally (ASCII record separator)
_WORD = re.compile(r"[a-zäöüßåæø]+")
_ADJ_ENDINGS = ("", "e", "er", "es", "en", "em")
_TRANSLIT = {"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"}
_BARE = {"ä": "a", "ö": "o", "ü": "u", "ß": "ss"}


def _resource(name: str) -> str:
    return resources.files("melp.data.resources").joinpath(name).read_text(encoding="utf-8")


def _variants(source: str) -> list[str]:
    """Spelling variants seen in the data: ``ä`` as ``ae`` and as bare ``a`` (``ß`` -> ``ss``)."""
    out = [source]
    if any(c in source for c in _TRANSLIT):
        out.append("".join(_TRANSLIT.get(c, c) for c in source))
        out.append("".join(_BARE.get(c, c) for c in source))
    return out


@functools.lru_cache(maxsize=1)
def load_table() -> dict[str, dict[str, str]]:
    """The phrase table: ``{"foreign": {source: target}, "en": {source: target}}``.

    German and Swedish entries are merged (the Swedish devices also write ``infarkt``);
    explicit phrases take precedence over expanded adjective forms and spelling variants.
    """
    explicit: dict[str, str] = {}
    derived: dict[str, str] = {}
    english: dict[str, str] = {}
    language: dict[str, str] = {}  # source phrase -> "de" / "sv"
    for n, line in enumerate(_resource("ptbxl_phrases.tsv").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"ptbxl_phrases.tsv line {n}: expected lang<TAB>source<TAB>target, got {line!r}")
        lang, source, target = parts[0], parts[1].strip().lower(), parts[2].strip()
        if lang == "en":
            english[source] = target
        elif lang in ("de", "sv"):
            explicit[source] = target
            language.setdefault(source, lang)
        elif lang == "de-adj":
            forms = [source] if source.endswith(".") else [source + e for e in _ADJ_ENDINGS]
            derived.update({f: target for f in forms})
            language.update({f: "de" for f in forms if f not in language})
        else:
            raise ValueError(f"ptbxl_phrases.tsv line {n}: unknown language {lang!r}")
    table: dict[str, str] = {}
    langs: dict[str, str] = {}
    for group in (derived, explicit):  # explicit last: it wins over derived forms
        for source, target in group.items():
            for k, variant in enumerate(_variants(source)):
                if k == 0 or variant not in explicit:
                    table[variant] = target
                    langs[variant] = language[source]
    return {"foreign": table, "en": english, "language": langs}


def _pattern(sources: Iterable[str]) -> re.Pattern:
    alternatives = sorted(set(sources), key=lambda s: (-len(s), s))  # longest first
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, alternatives)) + r")(?!\w)")


@functools.lru_cache(maxsize=1)
def _compiled() -> tuple[re.Pattern, dict[str, str], re.Pattern, dict[str, str]]:
    table = load_table()
    return _pattern(table["foreign"]), table["foreign"], _pattern(table["en"]), table["en"]


@functools.lru_cache(maxsize=1)
def english_vocabulary() -> frozenset[str]:
    """Words counted as English: the table's targets plus ``resources/english_words.txt``."""
    table = load_table()
    words = {w for t in (*table["foreign"].values(), *table["en"].values()) for w in _WORD.findall(t)}
    for line in _resource("english_words.txt").splitlines():
        if line and not line.startswith("#"):
            words.add(line.strip())
    return frozenset(words)


@functools.lru_cache(maxsize=1)
def _language_words() -> dict[str, frozenset[str]]:
    """Per language ("de", "sv"), the source words that are not English words."""
    english = english_vocabulary()
    table = load_table()
    out: dict[str, set[str]] = {"de": set(), "sv": set()}
    for source, lang in table["language"].items():
        out[lang].update(w for w in _WORD.findall(source) if w not in english)
    return {k: frozenset(v) for k, v in out.items()}


def foreign_vocabulary() -> frozenset[str]:
    """Words of the table's German/Swedish sources that are not also English words."""
    words = _language_words()
    return words["de"] | words["sv"]


def _preclean(text: str) -> str:
    t = str(text).lower()
    t = re.sub(r"\bedit:.*$", " ", t, flags=re.S)
    t = re.sub(r"(?<=[a-zäöüå])#|#(?=[a-zäöüå])", "ü", t)
    t = re.sub(r"\b\d+\.\d+\s+(?=unbest)", "  ", t)
    t = t.replace("\r", " ").replace("\t", "  ").replace("\n", "  ")
    return re.sub(r"\s{2,}", f" {_SEP} ", t)  # the devices separate statements by 2+ spaces


def detect_language(text: str) -> str:
    """``"de"``, ``"sv"`` (whichever has more words of the table's vocabulary that are not English;
    ties go to German), ``"en"`` when no such word occurs, ``"empty"`` when there are no words."""
    words = _WORD.findall(_preclean(text))
    if not words:
        return "empty"
    vocab = _language_words()
    n_de = sum(w in vocab["de"] for w in words)
    n_sv = sum(w in vocab["sv"] and w not in vocab["de"] for w in words)
    if n_de == n_sv == 0:
        return "en"
    return "sv" if n_sv > n_de else "de"


def _sentences(text: str) -> str:
    """Split at "." (not inside numbers) and 2+ spaces; tidy; join with ". " and end with "."."""
    parts = re.split(rf"(?<!\d)\.(?!\d)|\.(?=\s|$)|{_SEP}", text)
    out = []
    for part in parts:
        part = re.sub(r"\s+", " ", part)
        part = re.sub(r"\s+([,;:)])", r"\1", part).strip(" ,;:-*=")
        if part:
            out.append(part)
    return ". ".join(out) + "." if out else ""


def translate(text: str) -> str:
    """Replace German/Swedish phrases of ``text`` (already pre-cleaned, lower-case) by English."""
    pattern, table, _, _ = _compiled()
    return pattern.sub(lambda m: f" {table[m.group(0)]} ", text)


def normalize_report(text: str) -> str:
    """English, cleaned, lower-case report: one sentence per statement, joined by ". "."""
    if text is None or not str(text).strip():
        return ""
    t = _preclean(text)
    if detect_language(t) in ("de", "sv"):
        t = translate(t)
    _, _, en_pattern, en_table = _compiled()
    t = en_pattern.sub(lambda m: en_table[m.group(0)], t)
    return _sentences(t)


def untranslated_words(normalized: str) -> list[str]:
    """Words of a normalised report that are not known English words (empty = fully translated)."""
    english = english_vocabulary()
    return [w for w in _WORD.findall(normalized) if w not in english]


def coverage(reports: Iterable[str], languages: tuple[str, ...] = ("de",)) -> dict:
    """Translation coverage over the raw ``reports`` detected as one of ``languages``.

    A report is fully translated when :func:`untranslated_words` of its normalised text is empty.
    Returns ``{"reports": n, "fully_translated": n, "fraction": float,
    "top_untranslated": [(word, n_reports), ...20]}``.
    """
    n = full = 0
    missing: Counter = Counter()
    for text in reports:
        if detect_language(text) not in languages:
            continue
        n += 1
        left = set(untranslated_words(normalize_report(text)))
        full += not left
        missing.update(left)
    return {
        "reports": n,
        "fully_translated": full,
        "fraction": full / n if n else 1.0,
        "top_untranslated": missing.most_common(20),
    }
