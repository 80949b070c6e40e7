"""Rules about text shared by the task kinds: normalization, invisible characters, near-duplicate keys.

The clean step applies them to NER tokens and to whole texts alike, and the data contract checks the
same characters, so a rule lives here once rather than in one stage that the others import.
"""

from __future__ import annotations

import re
import string
import unicodedata

# Zero-width and control characters carry no meaning for a tagger but make identical words differ.
_INVISIBLE = re.compile(r"[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200d\u2060\ufeff]")
_WHITESPACE = re.compile(r"\s+")


def normalize_token(token: str, form: str) -> str:
    """NFC/NFKC/... normalization, invisible characters removed, inner whitespace collapsed."""
    token = unicodedata.normalize(form, token)
    token = _INVISIBLE.sub("", token)
    return _WHITESPACE.sub(" ", token).strip()


def has_control_character(token: str) -> bool:
    """Control (Cc) or format (Cf: zero-width, bidi marks) characters: invisible, and they split
    differently in tokenizers than they look. Tab and line breaks are whitespace to a tokenizer (as in
    BERT's), so a text of several lines has none."""
    return any(unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\t\n\r" for ch in token)


def near_duplicate_key_of_tokens(tokens: tuple[str, ...]) -> tuple[str, ...]:
    """Words ignoring letter case and punctuation-only tokens: "Hi , Bob !" ~ "hi bob"."""
    return tuple(t.casefold() for t in tokens if any(ch.isalnum() for ch in t))


def near_duplicate_key_of_text(text: str) -> tuple[str, ...]:
    """Words ignoring case and punctuation: "Great game!!" ~ "great game"."""
    words = (word.strip(string.punctuation).casefold() for word in text.split())
    return tuple(word for word in words if word)
