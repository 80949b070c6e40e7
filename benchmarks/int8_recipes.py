"""Which int8 recipe keeps the tagger's F1: the evidence behind tasks/variants.py's choice of layers.

Usage:
    .venv/bin/python benchmarks/int8_recipes.py [--model data/models/candidate] [--test data/augmented/test.jsonl]

For a trained NER model and its test split, prints strict entity F1 of the fp32 model and of each recipe:
PyTorch dynamic int8 per tensor or per channel, of every Linear layer or of every one but the
down-projections (FFN output, classifier); onnxruntime dynamic int8 of every MatMul and embedding (its
default), per channel, of the MatMuls only, and without the down-projections (the shipped `onnx-int8`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def torch_recipes(model_dir: Path) -> dict[str, torch.nn.Module]:
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    from tasks.kinds.saved import load_saved_model as load_model
    from tasks.variants import int8_layers

    def quantized(qconfig, every_layer: bool) -> torch.nn.Module:
        model = load_model(model_dir, device="cpu")
        layers = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)] if every_layer \
            else int8_layers(model)
        return quantize_dynamic(model, dict.fromkeys(layers, qconfig), dtype=torch.qint8)

    return {"torch int8, per tensor, every Linear": quantized(default_dynamic_qconfig, True),
            "torch int8, per channel, every Linear": quantized(per_channel_dynamic_qconfig, True),
            "torch int8, per channel, down-projections fp32 (shipped `int8`)": quantized(per_channel_dynamic_qconfig,
                                                                                       False)}


def onnx_recipes(model_dir: Path, folder: Path) -> dict[str, object]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from tasks.kinds.saved import head_class
    from tasks.kinds.saved import load_saved_model as load_model
    from tasks.variants import ONNX_FILE, OnnxModel, build

    config = load_model(model_dir, device="cpu").config
    exported = build("onnx", model_dir, folder / "onnx", auto_class=head_class(model_dir)) / ONNX_FILE
    shipped = build("onnx-int8", model_dir, folder / "onnx-int8", exported,
                    auto_class=head_class(model_dir)) / ONNX_FILE
    recipes = {"onnxruntime int8 default (MatMul + Gather, per tensor)": {},
               "onnxruntime int8, per channel": {"per_channel": True},
               "onnxruntime int8, MatMul only, per channel": {"op_types_to_quantize": ["MatMul"], "per_channel": True}}
    models = {"onnxruntime fp32 (`onnx`)": OnnxModel(exported, config)}
    for index, (name, options) in enumerate(recipes.items()):
        path = folder / f"recipe-{index}.onnx"
        quantize_dynamic(str(exported), str(path), weight_type=QuantType.QInt8, **options)
        models[name] = OnnxModel(path, config)
    models["onnxruntime int8, MatMul only, per channel, down-projections fp32 (shipped `onnx-int8`)"] = \
        OnnxModel(shipped, config)
    return models


def main() -> None:
    from transformers import AutoTokenizer

    from tasks.kinds.ner.modeling import predict_tags, strict_f1
    from tasks.kinds.ner.records import load_jsonl
    from tasks.kinds.saved import load_saved_model as load_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "data/models/candidate")
    parser.add_argument("--test", type=Path, default=ROOT / "data/augmented/test.jsonl")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    records = load_jsonl(args.test)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    gold, sentences = [list(r.tags) for r in records], [r.tokens for r in records]
    folder = Path(tempfile.mkdtemp())
    try:
        models = {"fp32": load_model(args.model, device="cpu"), **torch_recipes(args.model),
                  **onnx_recipes(args.model, folder)}
        print(f"{args.model}, {len(records)} test sentences\n\n| recipe | strict F1 | vs fp32 |\n|---|---|---|")
        base = None
        for name, model in models.items():
            f1 = strict_f1(gold, predict_tags(model, tokenizer, sentences, 32, 128))
            base = f1 if base is None else base
            print(f"| {name} | {f1:.4f} | {f1 - base:+.4f} |", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
