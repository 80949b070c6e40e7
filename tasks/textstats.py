"""Statistics of one input text for production monitoring, the same for every task kind.

`text_statistics` counts what a text is made of (words, characters, URLs, emoji, letters outside the
Latin script, all-caps words); `piece_statistics` what a tokenizer makes of it (sub-word pieces, unknown
pieces, words split into many pieces). A served model's predictor reports both per item
(`ModelPredictor.describe`, tasks/kinds/base.py), and the drift monitor's reference profile is computed
with the same functions, so serve and reference never count differently.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
# Emoji and pictographs: the Unicode blocks that hold them (no extra package). Skin-tone modifiers, variation
# selectors and zero-width joiners are parts of one emoji, not emoji of their own, so they are not counted.
EMOJI_RANGES = (
    (0x1F000, 0x1F2FF),  # mahjong, cards, enclosed alphanumerics (regional-indicator flags)
    (0x1F300, 0x1F3FA),  # misc symbols and pictographs (before the skin-tone modifiers 1F3FB-1F3FF)
    (0x1F400, 0x1F64F),  # ... and emoticons
    (0x1F680, 0x1F6FF),  # transport and map
    (0x1F900, 0x1FAFF),  # supplemental symbols and pictographs, extended-A
    (0x2600, 0x27BF),  # misc symbols, dingbats
    (0x2B00, 0x2BFF),  # arrows and stars (e.g. U+2B50)
)
FRAGMENTED_PIECES = 3  # a word split into this many pieces or more counts as fragmented


def is_emoji(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in EMOJI_RANGES)


@lru_cache(maxsize=4096)
def is_non_latin_letter(char: str) -> bool:
    """A letter of another script than Latin (Cyrillic, CJK, Arabic, ...); digits and symbols are not letters."""
    if char.isascii() or not char.isalpha():
        return False
    return not unicodedata.name(char, "").startswith("LATIN")


def is_upper_word(word: str) -> bool:
    """All its letters upper case, and at least two of them ("NASA", "U.S.", not "I" or "A1")."""
    letters = [c for c in word if c.isalpha()]
    return len(letters) >= 2 and all(c.isupper() for c in letters)


def text_statistics(text: str) -> dict[str, int]:
    """Counts of one text: `words` (whitespace-separated), `chars`, `urls`, `emoji`, `non_latin` (letters
    outside the Latin script) and `upper_words` (all-caps words of two letters or more)."""
    words = text.split()
    return {
        "words": len(words),
        "chars": len(text),
        "urls": len(URL.findall(text)),
        "emoji": sum(is_emoji(c) for c in text),
        "non_latin": sum(is_non_latin_letter(c) for c in text),
        "upper_words": sum(is_upper_word(w) for w in words),
    }


def piece_statistics(tokenizer, text: str) -> dict[str, int]:
    """What a (fast, Hugging Face) tokenizer makes of the text: `pieces` (special tokens excluded),
    `unknown_pieces` (the tokenizer's unknown id) and `fragmented_words` (whitespace words cut into
    FRAGMENTED_PIECES pieces or more; pieces are assigned to words by their character offsets, which works
    for WordPiece, BPE and SentencePiece tokenizers alike)."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    ends = [match.end() for match in re.finditer(r"\S+", text)]
    per_word = [0] * len(ends)
    word = 0
    for start, end in offsets:
        if end <= start:
            continue  # a piece that covers no character (e.g. a SentencePiece word-start marker)
        while word < len(ends) - 1 and start >= ends[word]:
            word += 1
        if per_word:
            per_word[word] += 1
    unk = getattr(tokenizer, "unk_token_id", None)
    return {
        "pieces": len(ids),
        "unknown_pieces": sum(piece == unk for piece in ids) if unk is not None else 0,
        "fragmented_words": sum(count >= FRAGMENTED_PIECES for count in per_word),
    }
