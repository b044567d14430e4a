"""Register a model: store its artifact (or integer export), compile its encrypted programs, record what a client needs.

    <data_dir>/blobs/models/<id>/manifest.json, graph.json, weights.safetensors (or model.npz)   the upload, as sent
    <data_dir>/blobs/models/<id>/<variant>.plan.json           each compiled program's plan
    <data_dir>/blobs/models/<id>/<variant>.<position>.npy      its plaintext operands (weights, biases; an
                                                               encoder's key masks as for every token real, the
                                                               program's `key_masks` saying which to make per job)

The directory is built under a temporary name and renamed, so a failed registration leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from einfhe import EinfheError, ModelPlan, Parameters, Plan
from einfhe.compiler.transformer.artifact import PAD_ID
from einfhe.compiler.transformer.keymask import masks_of

from .encoder_program import ENCODER_VARIANT, compile_encoder_program
from .errors import ServiceError
from .file_cache import FileCache
from .model_program import VARIANTS, UploadedModel, compile_variants, read_checked
from .service import Service
from .store import storage_error

__all__ = ["model_directory", "program_plan", "register_model"]


def model_directory(service: Service, model_id: str) -> Path:
    """Where the model's files live."""
    return service.store.blob_path("models", model_id)


def _read_plan(path: Path) -> tuple[Plan, str]:
    """A stored plan and its JSON text."""
    text = path.read_text()
    return Plan.from_json(text), text


_plans: FileCache[tuple[Plan, str]] = FileCache(_read_plan)  # a model's plans, read once per model and variant


def program_plan(service: Service, row: dict, variant: str) -> tuple[Plan, str, list[tuple[int, str]]]:
    """A stored program's plan, its JSON text, and its plain operands as (position, .npy path)."""
    directory = model_directory(service, row["id"])
    plan, text = _plans.get(directory / f"{variant}.plan.json")
    plains = [(position, str(directory / name)) for position, name in row["programs"][variant]["plains"]]
    return plan, text, plains


def _parameters(service: Service, depth: int, slots: int, insecure: bool, flooding: bool) -> Parameters:
    """128-bit parameters for one program (each gets its own depth: the batched one is often shallower, so its
    ciphertexts carry fewer towers), or the test-only ring when asked for and allowed; `flooding`: the 59-bit
    parameters noise-flooded decryption needs (einfhe.params.flooding)."""
    if insecure:
        made = Parameters.for_noise_flooding(depth, slots, secure=False) if flooding else \
            Parameters.insecure_for_tests(depth, slots)
        return service.parameters(made.to_json())
    try:
        return Parameters.for_noise_flooding(depth, slots) if flooding else Parameters.derive(depth, slots)
    except EinfheError as exc:
        raise ServiceError("work_limit_exceeded", exc.message) from exc


def _store_program(directory: Path, variant: str, program: ModelPlan, params: Parameters) -> dict:
    """Write a program's plan and plaintext operands under `directory`; return what a client needs of it."""
    plan = program.plan
    (directory / f"{variant}.plan.json").write_text(plan.to_json())
    plains = []
    for position, array in enumerate(program.plains, start=1):
        np.save(directory / f"{variant}.{position}.npy", array, allow_pickle=False)
        plains.append((position, f"{variant}.{position}.npy"))
    return {
        "variant": variant, "params": params.to_json(), "fingerprint": params.fingerprint().hex(),
        "batch": program.batch, "depth": plan.depth, "rotations": list(plan.rotations),
        "input_layout": program.input_layout.to_json(), "output_layout": plan.output_layout.to_json(),
        "cts_in": plan.cts_in, "cts_out": plan.cts_out, "steps": len(plan.steps),
        "output_scale": np.asarray(program.output_scale, dtype=np.float64).tolist(),
        "input_scale": None if program.input_scale is None else np.asarray(program.input_scale).tolist(),
        "input_expansion": program.input_expansion,
        "plains": plains,
        "key_masks": [[position + 1, mask.to_json()] for position, mask in masks_of(program.plains)],
    }


def _encoder_program(service: Service, work: Path, uploaded: UploadedModel, tokens: int | None, slots: int,
                     insecure: bool, noise_flooding: bool) -> tuple[dict, list[str], dict]:
    """The stored "tokens" program of an encoder ({} when it cannot run encrypted here), the blockers that say
    why not, and the encoder's summary with its token count and pad id; `tokens` None: 16, or the head width when
    that is smaller."""
    if noise_flooding:
        raise ServiceError("unsupported_model", "an encoder's program bootstraps, and noise-flooding parameters do "
                                                "not: register it without noise_flooding")
    tokens = tokens or min(16, uploaded.encoder["width"] // uploaded.encoder["heads"])
    cap = service.settings.max_keyset_bytes
    compiled = compile_encoder_program(work, tokens, slots, insecure, cap)
    steps = len(compiled.program.plan.steps)
    if steps > service.settings.max_plan_steps:
        raise ServiceError("work_limit_exceeded", f"the encoder's program has {steps} steps; this server's limit is "
                                                  f"{service.settings.max_plan_steps}")
    params = service.parameters(compiled.params.to_json())
    encoder = {**uploaded.encoder, "tokens": tokens, "pad_id": PAD_ID}
    if compiled.key_bytes > cap:
        return {}, [f"keys (the encrypted program's evaluation keys, bootstrapping's included, take at least "
                    f"{compiled.least_key_bytes / 2**30:.2f} GiB, {compiled.key_bytes / 2**30:.2f} GiB with the "
                    f"fewest bootstraps, over this server's key-set cap of {cap / 2**30:.2f} GiB: raise "
                    f"EINFHE_MAX_KEYSET_BYTES to at least {compiled.least_key_bytes} and give its workers that "
                    "much memory)"], encoder
    stored = _store_program(work, ENCODER_VARIANT, compiled.program, params)
    return ({ENCODER_VARIANT: {**stored, "tokens": tokens, "key_bytes": compiled.key_bytes,
                               "level_map": compiled.level_map}}, [], encoder)


def register_model(service: Service, tenant: str, name: str, files: dict[str, bytes], *, slots: int,
                   insecure_test_params: bool = False, noise_flooding: bool = False, tokens: int | None = None) -> dict:
    """Store and compile an uploaded model (artifact or integer export); return its stored row. A name names one
    model (409 otherwise). `tokens`: the token count an encoder's program takes (server.encoder_program)."""
    taken = service.store.get_shared("models", name=name)
    if taken is not None:
        raise ServiceError("name_taken", f"a model named {name!r} is registered (id {taken['id']}): delete it "
                                         "first (DELETE /models/{id}) or register under another name")
    model_id = uuid.uuid4().hex
    final = model_directory(service, model_id)
    work = final.with_name(f".{model_id}.tmp")
    work.mkdir()
    try:
        for filename, data in files.items():
            (work / filename).write_bytes(data)
        uploaded = read_checked(work)
        compiled = compile_variants(work, uploaded, slots)
        programs = {}
        for variant in VARIANTS:
            program = compiled.programs.get(variant)
            if program is None:
                continue
            steps = len(program.plan.steps)
            if steps > service.settings.max_plan_steps:
                raise ServiceError("work_limit_exceeded", f"the {variant} program has {steps} steps; this server's "
                                                          f"limit is {service.settings.max_plan_steps}")
            params = _parameters(service, program.plan.depth, slots, insecure_test_params, noise_flooding)
            programs[variant] = _store_program(work, variant, program, params)
        blockers, encoder = uploaded.blockers, uploaded.encoder
        if encoder is not None and not blockers:
            programs, blockers, encoder = _encoder_program(service, work, uploaded, tokens, slots, insecure_test_params,
                                                  noise_flooding)
        os.replace(work, final)
    except OSError as exc:  # a full or read-only disk under the model's files
        raise storage_error(exc, "store the model's files") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {"input_shape": uploaded.input_shape, "n_features": compiled.n_features,
               "n_outputs": compiled.n_outputs, "layers": uploaded.layers, "kind": uploaded.kind,
               "encrypted_blockers": blockers, "inputs": uploaded.inputs, "client_lookup": uploaded.lookup,
               "encoder": encoder}
    size = sum(len(data) for data in files.values())
    return service.store.insert("models", id=model_id, tenant=tenant, name=name, summary=summary,
                                programs=programs, size=size)
