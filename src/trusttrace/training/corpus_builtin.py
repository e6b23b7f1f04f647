"""Cleaning the built-in corpus: one document per GCIDE dictionary entry, and the fortunes.

What is stripped and kept is described in ``trusttrace.training.corpus``; this module holds the parsing.
"""

from __future__ import annotations

import gzip
import re
import unicodedata
from pathlib import Path

MIN_LETTER_SHARE = 0.6  # below this share of letters among non-space characters a fortune is ASCII art


# ---- builtin: GCIDE -----------------------------------------------------------------------------


def gcide_documents(path: Path) -> list[str]:
    """One cleaned document per GCIDE entry (the dictd header entries left out)."""
    with gzip.open(path, "rb") as f:
        text = f.read().decode("utf-8", errors="replace")
    entries = split_gcide_entries(_SPILLED.sub(_drop_spilled_headwords, text))
    return [clean_gcide_entry(entry) for entry in entries if not entry.startswith("00-")]


_UNINDENTED = re.compile(r"^\S", re.MULTILINE)


def split_gcide_entries(text: str) -> list[str]:
    """Split dictd GCIDE text into entries.

    An entry starts at an unindented line that follows a blank or indented line and that (or the next
    line) holds a backslash pronunciation. Unindented lines right after it are more headwords of the same
    entry; unindented lines without a pronunciation (the license text) continue the header entry.
    """
    starts = [0]
    for m in _UNINDENTED.finditer(text):
        pos = m.start()
        if pos == 0:
            continue
        prev_start = text.rfind("\n", 0, pos - 1) + 1
        if text[prev_start:pos - 1][:1] not in ("", " ", "\t"):  # the line before is unindented text
            continue
        line_end = text.find("\n", pos)
        next_end = -1 if line_end == -1 else text.find("\n", line_end + 1)
        if "\\" in text[pos:next_end if next_end != -1 else len(text)]:
            starts.append(pos)
    chunks = (text[a:b].strip("\n") for a, b in zip(starts, [*starts[1:], len(text)]))
    return [chunk for chunk in chunks if chunk.strip()]


# "[1913 Webster] Abelite\n   Abelian\n\nAbelian \A*bel"i*an\ ...": the conversion to dictd appended the
# next entry's headwords after the last source tag of an entry.
_SPILLED = re.compile(r"\](?P<junk>[ \t]+\S[^\n]*(?:\n[ \t]+\S[^\n]*)*)\n\n?(?=(?P<next>\S[^\n]*\n[^\n]*))")


def _drop_spilled_headwords(m: re.Match[str]) -> str:
    junk, following = m.group("junk"), m.group("next")
    if all(word.strip() in following for word in junk.split("\n")):
        return "]" + m.group(0)[1 + len(junk):]
    return m.group(0)


# A syllabified headword "\A*ban"don\" with, optionally, its phonetic form "([.a]*b[a^]n"d[u^]n)".
_PRONUNCIATION = re.compile(r"\\[^\\\n]*(?:\n[^\\\n]*)?\\(?:[ \t]*\n?[ \t]*\((?=[^()]*[\"`*\[])[^(){}]*\))?")
# Phonetic forms elsewhere, e.g. after a run-on "{A*ba"sic} ([.a]*b[=a]"s[i^]k)": a pronunciation code
# or a stress mark between letters, and no cross reference inside.
_PHONETIC = re.compile(r"\((?=[^()]*(?:\[(?:[=.\-~][a-z]{1,2}|[a-z]{1,2}\^|add|udd|asl|ng|imac)\]|\w[\"`*]\w))"
                       r"[^(){}]*\)")
_CHAR_CODE = re.compile(r"\[([a-zA-Z]{2,7}|['`^\"~=,.\-][a-zA-Z]{1,2}|[a-zA-Z]{1,2}\^)\]")
_NAMED_CHARS = {"ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "eth": "ð", "thorn": "þ", "yogh": "ȝ",
                "deg": "°", "sect": "§", "pounds": "£", "root": "√", "imac": "ī", "ng": "ŋ"}
_MARKS = {"'": "\u0301", "`": "\u0300", "^": "\u0302", '"': "\u0308", "~": "\u0303", "=": "\u0304",
          ",": "\u0327", ".": "\u0323", "-": "\u0304"}
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_BRACES = re.compile(r"\{([^{}]*)\}")
_SYLLABLE_MARKS = re.compile(r"(?<=\w)[*\"`]")
_LABELS = re.compile(r"^[ \t]*(Syn|Usage):[ \t]*", re.MULTILINE)
# Spaces that removals leave before punctuation ("Dog \Dog\ (d[o^]g), n." → "Dog , n."); ". . ." stays.
_STRAY_SPACE = re.compile(r"\s+(?=[,;:)])|(?<=\()\s+|(?<!\.) (?=\.(?! \.))")


def clean_gcide_entry(entry: str) -> str:
    """Running English text of one GCIDE entry; see the module docstring for what goes and what stays."""
    text = _PRONUNCIATION.sub("", entry)
    text = _PHONETIC.sub("", text)
    text = _CHAR_CODE.sub(_char_from_code, text)
    for _ in range(3):  # brackets nest a level or two deep ("[... [root]199 ...]")
        text = _BRACKETS.sub(" ", text)
    text = text.replace("[", "").replace("]", "")
    text = _BRACES.sub(lambda m: _SYLLABLE_MARKS.sub("", m.group(1)), text)
    text = _LABELS.sub(lambda m: "Synonyms: " if m.group(1) == "Syn" else "", text)
    text = text.replace("()", "")  # a symbol GCIDE writes as a code with no Unicode equivalent here
    text = _STRAY_SPACE.sub("", " ".join(text.split()))
    return unicodedata.normalize("NFC", text)


def _char_from_code(m: re.Match[str]) -> str:
    """``[ae]`` → æ, ``['e]`` → é, ``[a^]`` → ă, ``[alpha]`` → α; an unknown code stays (removed later)."""
    code = m.group(1)
    if code in _NAMED_CHARS:
        return _NAMED_CHARS[code]
    if code[0] in _MARKS:
        return code[1:] + _MARKS[code[0]]
    if code.endswith("^"):
        return code[:-1] + "\u0306"  # breve, GCIDE's short-vowel mark
    case = "CAPITAL" if code[0].isupper() else "SMALL"
    try:
        return unicodedata.lookup(f"GREEK {case} LETTER {code.upper()}")
    except KeyError:
        return m.group(0)


# ---- builtin: fortunes --------------------------------------------------------------------------


def fortune_documents(text: str) -> list[str]:
    """The fortunes of one file, ASCII art left out (whitespace is collapsed later)."""
    text = re.sub(r".\x08", "", text)  # overstrike: "_\bx" underlines x, "x\bx" bolds it
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)
    chunks = re.split(r"^%[ \t]*$", text, flags=re.MULTILINE)
    return [chunk for chunk in chunks if _letter_share(chunk) >= MIN_LETTER_SHARE]


def _letter_share(text: str) -> float:
    chars = "".join(text.split())
    return sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0
