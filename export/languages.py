"""Language presets for vocabulary trimming, by writing system: a language keeps every piece
whose letters are all in its scripts (and every piece without letters: digits, punctuation,
the word-start mark). No corpus is needed, and the guarantee is stronger than a corpus's: a
Unigram tokenizer's best segmentation of a text only uses pieces made of that text's
characters, so any text written in the kept scripts comes out as the same pieces, with the
same logits, as from the untrimmed model."""
from __future__ import annotations

import unicodedata
from functools import lru_cache

from .errors import ExportError

# the scripts each language is written in (Unicode character-name prefixes)
LATIN = ("LATIN",)
CYRILLIC = ("CYRILLIC",)
ARABIC = ("ARABIC",)
DEVANAGARI = ("DEVANAGARI",)
LANGUAGE_SCRIPTS: dict[str, tuple[str, ...]] = {
    **{code: LATIN for code in (
        "af", "az", "ca", "cs", "cy", "da", "de", "en", "eo", "es", "et", "eu", "fi", "fr",
        "ga", "gl", "hr", "hu", "id", "is", "it", "lt", "lv", "ms", "nl", "no", "pl", "pt",
        "ro", "sk", "sl", "so", "sq", "sv", "sw", "tl", "tr", "uz", "vi")},
    **{code: CYRILLIC for code in ("be", "bg", "kk", "ky", "mk", "mn", "ru", "sr", "uk")},
    **{code: ARABIC for code in ("ar", "fa", "ps", "ur")},
    **{code: DEVANAGARI for code in ("hi", "mr", "ne", "sa")},
    "el": ("GREEK",), "he": ("HEBREW",), "hy": ("ARMENIAN",), "ka": ("GEORGIAN",),
    "th": ("THAI",), "ko": ("HANGUL",), "zh": ("CJK",),
    "ja": ("CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA"),
    "bn": ("BENGALI",), "ta": ("TAMIL",), "te": ("TELUGU",), "ml": ("MALAYALAM",),
    "kn": ("KANNADA",), "gu": ("GUJARATI",), "pa": ("GURMUKHI",), "si": ("SINHALA",),
    "am": ("ETHIOPIC",), "km": ("KHMER",), "lo": ("LAO",), "my": ("MYANMAR",),
}


def scripts_for(languages: tuple[str, ...]) -> frozenset[str]:
    """The scripts of the given ISO 639-1 codes, or an ExportError listing the known codes."""
    unknown = [code for code in languages if code not in LANGUAGE_SCRIPTS]
    if unknown:
        raise ExportError(f"unknown language(s) {', '.join(unknown)} for --trim-languages; "
                          f"known: {', '.join(sorted(LANGUAGE_SCRIPTS))}")
    return frozenset(s for code in languages for s in LANGUAGE_SCRIPTS[code])


@lru_cache(maxsize=4096)
def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return name.split(" ")[0] if name else "?"


def piece_scripts(piece: str) -> frozenset[str]:
    """The scripts of a piece's letters (empty for digits, punctuation, the word-start mark)."""
    return frozenset(_script(ch) for ch in piece if ch.isalpha())
