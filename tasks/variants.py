"""Compressed variants of a saved model, and one loader for every model folder flowtune reads.

A variant is a folder like a saved model: `config.json` (labels, architecture, flowtune's training
block), the tokenizer files, its weights, and `variant.json` saying which kind of weights they are:

- `int8`: PyTorch dynamic quantization of every Linear layer (int8 weights, activations quantized on
  the fly); weights in `model.int8.pt` (a state dict: quantized tensors cannot go in safetensors).
- `onnx`: the model exported to ONNX (`model.onnx`, dynamic batch and sequence axes), run with
  onnxruntime.
- `onnx-int8`: that export with onnxruntime's own dynamic int8 quantization.
- `student`: a smaller model distilled from the candidate (tasks/distill.py), a plain transformers folder
  (`model.safetensors`) copied as is; unlike the others it runs wherever the fp32 model runs (CUDA too).

Variants are built from the fp32 candidate and run on the CPU (that is what they are for: int8
kernels and onnxruntime's CPU provider). `load_model` returns an object the prediction code of every
kind can call like a transformers model (`model(**batch).logits`, `.config`, `.eval()`), so evaluation,
`flowtune predict` and `flowtune serve` run variants with the same code as the fp32 model.

Each loads without flowtune too (README, "Compressed variants"): the onnx ones with plain onnxruntime
and the tokenizer, int8 with transformers + torch (`from_config`, `quantize_dynamic`, `load_state_dict`).
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_args

import torch

from tasks.params import STUDENT, Variant, VariantError

MARKER = "variant.json"
INT8_WEIGHTS = "model.int8.pt"
ONNX_FILE = "model.onnx"
# A model folder's weight files: every other file (config, tokenizer) is copied into each variant.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx", ".onnx.data")
VARIANTS = get_args(Variant)
# The variants built from the candidate's weights alone (the student is trained: tasks/distill.py).
FROM_CANDIDATE = tuple(name for name in VARIANTS if name != STUDENT)
# Variants that claim the fp32 model's outputs (no quantization): compress checks they reproduce them.
EXACT = ("onnx",)
ONNX_OPSET = 18
# config.json key of what flowtune records about a saved model beyond Hugging Face's own fields (at save,
# tasks/saving.py save_best): the training `max_length` and the `task_kind`; variants copy config.json.
FLOWTUNE_CONFIG_KEY = "flowtune"


def saved_config(model_dir: Path) -> dict:
    """A saved model (or variant) folder's config.json as a dict; errors name the file."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (is {model_dir} a saved model folder?)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a JSON config ({error})") from error
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return config


def config_labels(model_dir: Path) -> list[str]:
    """The model's output labels in id order, from config.json's `id2label` (without loading any weights)."""
    id2label = saved_config(model_dir).get("id2label") or {}
    try:
        return [id2label[str(i)] for i in range(len(id2label))]
    except KeyError as error:
        raise ValueError(f"{Path(model_dir) / 'config.json'}: id2label is not numbered 0..{len(id2label) - 1} "
                         f"(no {error})") from error


def flowtune_config(config: dict) -> dict:
    """What flowtune recorded in a saved model's config (its FLOWTUNE_CONFIG_KEY block; {} for other models)."""
    block = config.get(FLOWTUNE_CONFIG_KEY)
    return block if isinstance(block, dict) else {}


def variant_of(model_dir: Path) -> str | None:
    """The variant a folder holds (`variant.json`), or None for a plain transformers model."""
    marker = Path(model_dir) / MARKER
    return json.loads(marker.read_text(encoding="utf-8"))["variant"] if marker.is_file() else None


def load_model(model_dir: Path, auto_class: Any, device: str | None = None) -> Any:
    """The model of a folder, ready to predict: a transformers model (fp32, on `device`, by default CUDA
    when there is one) or a variant (always CPU). `auto_class` is the transformers class of the head, e.g.
    AutoModelForTokenClassification: the kind's, which `tasks.kinds.saved.head_class(model_dir)` knows (this core
    module cannot ask the kinds; `tasks.kinds.saved.load_saved_model` does both)."""
    model_dir = Path(model_dir)
    variant = variant_of(model_dir)
    if variant in (None, STUDENT):
        model = auto_class.from_pretrained(model_dir, use_safetensors=True)
        return model.to(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))).eval()
    if variant == "int8":
        return _load_int8(model_dir, auto_class)
    if variant in ("onnx", "onnx-int8"):
        return OnnxModel(model_dir / ONNX_FILE, _config(model_dir))
    raise VariantError(f"{model_dir / MARKER}: unknown variant {variant!r} (known: {', '.join(VARIANTS)})")


def build(variant: str, model_dir: Path, out_dir: Path, exported: Path | None = None, *, auto_class: Any) -> Path:
    """Write `variant` of the fp32 model in `model_dir` into the new folder `out_dir`; the onnx ones start
    from `exported` (an `export_onnx` of that model) when given, so two of them export once. For `student`,
    `model_dir` is the trained student's folder, copied whole. `auto_class`: the head's transformers class, as
    for `load_model`."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if variant not in VARIANTS:
        raise VariantError(f"unknown variant {variant!r} (known: {', '.join(VARIANTS)})")
    if variant == STUDENT:
        return _copy_student(model_dir, out_dir)
    out_dir.mkdir(parents=True)
    _copy_non_weights(model_dir, out_dir)
    model_type = auto_class
    marker: dict[str, Any] = {"variant": variant, "runs_on": "cpu"}
    if variant == "int8":
        model = model_type.from_pretrained(model_dir, use_safetensors=True).eval()
        marker["quantized_layers"] = int8_layers(model)
        torch.save(quantize_int8(model, marker["quantized_layers"]).state_dict(), out_dir / INT8_WEIGHTS)
    else:
        if exported:
            shutil.copyfile(exported, out_dir / ONNX_FILE)
        else:
            export_onnx(model_type.from_pretrained(model_dir, use_safetensors=True).eval(), out_dir / ONNX_FILE)
        if variant == "onnx-int8":
            _quantize_onnx(out_dir / ONNX_FILE)
    (out_dir / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    return out_dir


# Which layers go int8, for both engines: every Linear (MatMul) except the down-projections (more inputs than
# outputs: a transformer block's FFN output layer, the classifier). Their inputs are the FFN's GELU
# activations, whose outliers a per-batch 8-bit scale crushes; on the WNUT-16 model, quantizing them cost
# 3-4.5 points of F1, keeping them fp32 cost none (docs/BENCHMARKS.md, "Compression"). Weights are quantized
# per output channel, not per tensor, for the same reason (docs/DECISIONS.md, 43).
def int8_layers(model: torch.nn.Module) -> list[str]:
    """The names of the Linear layers the int8 variant quantizes."""
    return [name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module.in_features <= module.out_features]


def quantize_int8(model: torch.nn.Module, layers: list[str]) -> torch.nn.Module:
    """Dynamic int8 quantization of `layers` (weights int8 per output channel, activations per batch)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        return quantize_dynamic(model, dict.fromkeys(layers, per_channel_dynamic_qconfig), dtype=torch.qint8)


def export_onnx(model: torch.nn.Module, path: Path) -> None:
    """Export with dynamic batch and sequence axes, weights inside the one file.

    The dynamo exporter (torch.export), not the TorchScript one: the latter traces the attention-mask
    branch of the example it is given, and a padded batch then gives logits off by 0.3.
    """
    example = {"input_ids": torch.tensor([[101, 2000, 2001, 102], [101, 2002, 102, 0]]),
               "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])}
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (), str(path), kwargs=example, input_names=list(example), output_names=["logits"],
                          dynamic_shapes={name: {0: batch, 1: sequence} for name in example},
                          dynamo=True, opset_version=ONNX_OPSET, external_data=False, verbose=False)


def _copy_student(student_dir: Path, out_dir: Path) -> Path:
    if not any(student_dir.glob("*.safetensors")):
        raise VariantError(f"{student_dir}: no trained student (is compress.student_layers 0?); run the distill stage")
    shutil.copytree(student_dir, out_dir)
    (out_dir / MARKER).write_text(json.dumps({"variant": STUDENT, "runs_on": "any"}) + "\n", encoding="utf-8")
    return out_dir


def _quantize_onnx(path: Path) -> None:
    """onnxruntime's dynamic int8 of the MatMuls `int8_layers` would pick, per channel; the embedding tables
    (Gather) stay fp32 too (quantizing them cost another point of F1 for a smaller file, not a faster one)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(path))
    # The exporter's shapes of intermediate values: onnxruntime's quantizer re-infers them and refuses some it
    # disagrees with (a sequence classifier's head: "Inferred shape and existing shape differ").
    del model.graph.value_info[:]
    plain = path.with_name("plain-" + path.name)
    onnx.save(model, str(plain))
    shapes = {tensor.name: list(tensor.dims) for tensor in model.graph.initializer}
    down = [node.name for node in model.graph.node if node.op_type == "MatMul"
            and len(shapes.get(node.input[1], [])) == 2 and shapes[node.input[1]][0] > shapes[node.input[1]][1]]
    logging.disable(logging.WARNING)  # its advice to run a pre-processing meant for static quantization
    try:
        quantize_dynamic(str(plain), str(path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         per_channel=True, nodes_to_exclude=down)
    finally:
        logging.disable(logging.NOTSET)
        plain.unlink(missing_ok=True)


def _copy_non_weights(model_dir: Path, out_dir: Path) -> None:
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and not path.name.endswith(WEIGHT_SUFFIXES) and path.name != MARKER:
            shutil.copy2(path, out_dir / path.name)


def _config(model_dir: Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_dir)


def _load_int8(model_dir: Path, auto_class: Any) -> torch.nn.Module:
    layers = json.loads((model_dir / MARKER).read_text(encoding="utf-8"))["quantized_layers"]
    model = quantize_int8(auto_class.from_config(_config(model_dir)).eval(), layers)  # the layout, then the weights
    # weights_only: a state dict of tensors, never arbitrary pickled objects from a downloaded file.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own TypedStorage deprecation, raised while reading packed weights
        model.load_state_dict(torch.load(model_dir / INT8_WEIGHTS, weights_only=True))
    return model.eval()


class OnnxModel(torch.nn.Module):
    """An onnxruntime session behind a transformers model's calling convention (CPU only).

    Called with the batch dict the prediction code builds (`input_ids`, `attention_mask`), it returns an
    object with `.logits` (a torch tensor), so `predict_tags` and `predict_proba` need no change.
    """

    def __init__(self, path: Path, config: Any):
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # The same thread budget as torch in this process, so variant and fp32 timings compare.
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.config = config

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **_: torch.Tensor) -> SimpleNamespace:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        logits = self.session.run(["logits"], {name: feed[name].cpu().numpy() for name in self.inputs})[0]
        return SimpleNamespace(logits=torch.from_numpy(logits))
