"""Save and load quantized models: one safetensors file of every tensor plus a JSON manifest.

Directory layout::

    <dir>/model.safetensors   the model's full state_dict (packed int32 weights, scales, float layers)
    <dir>/manifest.json       {"format": "einfhe.quant", "version": 1,
                               "layers": {name: layer.describe()},   # which Linear became what, by which recipe
                               "kv": {name: config JSON},                   # which layers KV4 wraps
                               "tensors": {key: {"shape": [...], "dtype": "int32"}}}

Loading needs the float model's skeleton (same architecture, any weights): each listed layer must be an
``nn.Linear`` of the saved sizes; it is replaced by an empty quantized shell, then the state is loaded
strictly, so every tensor must match.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from quant.configs import KV4, config_from_json, config_to_json
from quant.errors import FormatError
from quant.kv import KVQuantized
from quant.layer_base import QuantLayer
from quant.layers import layer_from_description

__all__ = ["MANIFEST_FORMAT", "MANIFEST_VERSION", "save_quantized", "load_quantized"]

MANIFEST_FORMAT = "einfhe.quant"
MANIFEST_VERSION = 1


def save_quantized(model: nn.Module, directory: str | Path) -> Path:
    """Write ``model`` (already passed through ``quantize_``) to ``directory``; return the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    modules = dict(model.named_modules())
    state = {key: value.detach().cpu().contiguous().clone() for key, value in model.state_dict().items()}
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "layers": {name: m.describe() for name, m in modules.items() if isinstance(m, QuantLayer)},
        "kv": {name: config_to_json(m.config) for name, m in modules.items() if isinstance(m, KVQuantized)},
        "tensors": {key: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                    for key, t in state.items()},
    }
    save_file(state, str(directory / "model.safetensors"))
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return directory


def _read_manifest(directory: Path) -> dict:
    """Read and check the manifest's format and version."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise FormatError("cannot read manifest.json", directory=str(directory)) from exc
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("version") != MANIFEST_VERSION:
        raise FormatError("not an einfhe.quant v1 manifest", format=manifest.get("format"),
                          version=manifest.get("version"))
    return manifest


def _check_skeleton_layer(skeleton: nn.Module, layer: QuantLayer, name: str) -> None:
    """Raise FormatError unless the skeleton's layer is an ``nn.Linear`` of the saved layer's sizes and bias."""
    if not isinstance(skeleton, nn.Linear):
        raise FormatError("the skeleton's layer is not an nn.Linear", layer=name, got=type(skeleton).__name__)
    seen = (skeleton.in_features, skeleton.out_features, skeleton.bias is not None)
    saved = (layer.in_features, layer.out_features, layer.bias is not None)
    if seen != saved:
        raise FormatError("the skeleton's layer differs from the saved one (in_features, out_features, bias)",
                          layer=name, skeleton=seen, saved=saved)


def load_quantized(model: nn.Module, directory: str | Path) -> nn.Module:
    """Turn the float skeleton ``model`` into the saved quantized model, in place, and return it."""
    directory = Path(directory)
    manifest = _read_manifest(directory)
    try:
        for name, text in manifest["kv"].items():  # wrap first: a quantized layer may sit inside a wrapper
            config = config_from_json(text)
            if not isinstance(config, KV4):
                raise FormatError("a kv entry holds a non-KV4 config", layer=name)
            model.set_submodule(name, KVQuantized(model.get_submodule(name), config))
        for name, desc in manifest["layers"].items():
            layer = layer_from_description(desc)
            _check_skeleton_layer(model.get_submodule(name), layer, name)
            model.set_submodule(name, layer)
    except AttributeError as exc:
        raise FormatError("the skeleton model lacks a layer named in the manifest", reason=str(exc)) from exc
    try:
        state = load_file(str(directory / "model.safetensors"))
        model.load_state_dict(state, strict=True)
    except (OSError, RuntimeError) as exc:
        raise FormatError("model.safetensors does not match the manifest's model", reason=str(exc)[:300]) from exc
    return model
