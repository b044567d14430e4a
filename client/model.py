"""`EncryptedModel`: inference on a model the server holds, with inputs and outputs encrypted by this client.

    quant.quantize_(net, quant.W4A16(group_size=64))  # the operator: any torch module, quantized,
    quant.export(net, torch.from_numpy(X_train[:256]), "artifact/")   # exported (torch.fx) as one artifact,
    Client(url, operator_token).register_model("digits", "artifact/")   # and registered
    model = EncryptedModel("http://127.0.0.1:8000", "digits", token=token)
    probabilities = model.infer(x)                   # x: one sample or a batch (flat or in the input shape)
    same_model = model.infer(x, encrypted=False)      # plaintext, on quant's kernels in a server worker

On first encrypted use the client reads the model's requirements (`GET /models/{id}`: per program, parameters,
input layout, rotations), generates keys locally for the program's parameters, and uploads the evaluation keys
(never the secret key) a single time per parameter set; later calls reuse them. The one-sample and batched
programs usually differ in depth, so a client that uses both holds two key sets (the batched one has no
rotation keys and is small). `EncryptedModel(..., noise_flooding=True)` floods the decryptions (see client.client);
the model must then be registered with `noise_flooding=True` (its programs on flooding parameters).

A transformer encoder (MiniLM's shape, exported with `quant.export(..., keep_example=True)`) takes sentences:

    embeddings = EncryptedModel(url, "minilm", token=token).infer(["a sentence", "another one"])   # (2, 384)

each tokenized here (client.sentences), its token vectors computed here from the model's embedding tables and
encrypted (padded to the program's tokens), every encoder layer run on the server with the padding masked out of the
attention (the request says how many tokens are real: the server learns each sentence's length, as an attention
mask tells it, never its ids or vectors), every token's output decrypted here and mean-pooled over the sentence's
real tokens (server.encoder_program says why the client pools). A sentence longer than the program's
token count is refused; `encrypted=False` runs the same artifact in plaintext on quant's kernels.
"""

from __future__ import annotations

import io
import json

import msgpack
import numpy as np
from tqdm import tqdm

from einfhe import ModelPlan, Parameters, Plan
from einfhe.compiler.transformer import TokenEmbeddings

from .client import Client, PlanInfo
from .errors import NotFound
from .sentences import default_tokenizer, mean_pool, refuse_longer, token_ids

__all__ = ["EncryptedModel"]


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    array = np.asarray(array)
    np.save(buffer, array if array.dtype.kind in "iu" else array.astype(np.float64), allow_pickle=False)
    return buffer.getvalue()


class EncryptedModel:
    """A registered model (by id or name) run on this client's data; keys stay in this object."""

    def __init__(self, url: str, model: str, *, token: str, progress: bool = True, timeout: float | None = None,
                 tokenizer=None, **client_options) -> None:
        self.client = Client(url, token, progress=progress, **client_options)
        self.model = model
        self.progress = progress
        self.timeout = timeout
        self._info: dict | None = None
        self._programs: dict[str, tuple[ModelPlan, PlanInfo]] = {}
        self._table: np.ndarray | None = None  # the model's embedding table, for a model with a client-side lookup
        self._tokenizer = tokenizer  # an encoder's (client.sentences.default_tokenizer when None)
        self._embeddings: TokenEmbeddings | None = None  # an encoder's embedding block

    def close(self) -> None:
        """Close the HTTP connections (the keys go with this object)."""
        self.client.close()

    def __enter__(self) -> "EncryptedModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def info(self) -> dict:
        """The model's requirements from the server (fetched once): parameters, layouts, rotations, programs."""
        if self._info is None:
            self._info = self._fetch()
        return self._info

    def _fetch(self) -> dict:
        try:
            return self.client.http.request("GET", f"/models/{self.model}").json()
        except NotFound:
            named = [m for m in self.client.http.request("GET", "/models").json() if m["name"] == self.model]
            if not named:
                raise
            return named[-1]  # the latest registration under that name

    def _program(self, variant: str) -> tuple[ModelPlan, PlanInfo]:
        """The program's plan (for its layouts and scales) and parameters, read from the requirements once."""
        if variant not in self._programs:
            program = self.info["programs"][variant]
            plan = Plan.from_json(json.dumps(program["plan"]))
            input_scale = None if program["input_scale"] is None else np.asarray(program["input_scale"])
            model_plan = ModelPlan(plan, (), program["batch"], np.asarray(program["output_scale"]), input_scale,
                                   input_expansion=program.get("input_expansion"))
            params = Parameters.from_json(program["params"])
            self._programs[variant] = (model_plan, PlanInfo(f"{self.info['id']}.{variant}", plan, params, program))
        return self._programs[variant]

    def prepare(self) -> None:
        """Generate keys for every program and upload their evaluation keys now, rather than on first use (with
        noise flooding, keys come with the first inference of each program: its noise is measured on it)."""
        if self.client.noise_flooding:
            return
        for variant in self.info["programs"]:
            self.client.context_for(self._program(variant)[1])

    def infer(self, x, *, encrypted: bool = True) -> np.ndarray:
        """The model's outputs for one sample (features,) or a batch (batch, features), either also in the model's
        input shape (an image [1, 8, 8] or a batch of them), as a numpy array; a model whose export marked its
        embedding lookup client-side takes token ids (looked up here before encrypting); a model with several
        inputs (token ids and a mask) takes a dict {input name: batch} in plaintext; a transformer encoder takes a
        list of sentences and returns their embeddings (sentences, width)."""
        if self.info.get("encoder") and not isinstance(x, dict):
            return self._infer_sentences(x, encrypted)
        if not encrypted:
            return self._infer_plaintext(x)
        if self.info.get("client_lookup"):
            x = self._look_up(x)
        x = np.asarray(x, dtype=np.float64)
        if not self.info["programs"]:
            raise ValueError(f"the model is served in plaintext only ({', '.join(self.info['encrypted_blockers'])} "
                             "cannot run encrypted yet): call infer(x, encrypted=False)")
        n_features = self.info["n_features"]
        shape = tuple(self.info.get("input_shape") or ())
        if len(shape) > 1 and x.ndim in (len(shape), len(shape) + 1) and x.shape[x.ndim - len(shape):] == shape:
            x = x.reshape(x.shape[:x.ndim - len(shape)] + (n_features,))  # samples in the model's input shape
        if x.shape[-1:] != (n_features,) or x.ndim not in (1, 2):
            raise ValueError(f"the model takes samples of {n_features} features: (features,) or (batch, features), "
                             f"or in its input shape {list(shape)}, not {x.shape}")
        if x.ndim == 1 and "single" in self.info["programs"]:
            return self._run("single", x)
        if x.ndim == 1:  # a model with skip connections has the batched program only: a batch of one
            return self.infer(x[None], encrypted=True)[0]
        program, _ = self._program("batch")
        size = program.batch
        chunks = range(0, len(x), size)
        outputs = []
        for start in tqdm(chunks, desc="encrypted batches", unit="batch", disable=not self.progress or len(chunks) < 2):
            chunk = x[start:start + size]
            padded = np.zeros((size, n_features))
            padded[:len(chunk)] = chunk
            outputs.append(self._run("batch", padded)[:len(chunk)])
        return np.concatenate(outputs) if outputs else np.zeros((0, self.info["n_outputs"]))

    def _infer_plaintext(self, x) -> np.ndarray:
        """The model's outputs computed in plaintext by a server worker (quant's kernels)."""
        if isinstance(x, dict):
            content, media = msgpack.packb({name: _npy(v) for name, v in x.items()}), "application/msgpack"
        else:
            content, media = _npy(x), "application/octet-stream"
        response = self.client.http.request("POST", f"/models/{self.info['id']}/infer", content=content,
                                            headers={"Content-Type": media}, idempotent=True)
        return np.load(io.BytesIO(response.content), allow_pickle=False)

    def _look_up(self, ids) -> np.ndarray:
        """Token ids (one sample in the model's input shape, or a batch of them) as the flat embeddings the
        encrypted program takes, looked up here in the model's table (fetched once): the ids never leave."""
        if self._table is None:
            response = self.client.http.request("GET", f"/models/{self.info['id']}/lookup")
            self._table = np.load(io.BytesIO(response.content), allow_pickle=False).astype(np.float64)
        ids, shape = np.asarray(ids), tuple(self.info["input_shape"])
        if ids.dtype.kind not in "iu" or ids.shape[ids.ndim - len(shape):] != shape or ids.ndim > len(shape) + 1:
            raise ValueError(f"the model takes integer token ids of shape {list(shape)} (or a batch of them), not "
                             f"{ids.dtype} {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= len(self._table)):
            raise ValueError(f"token ids must lie in 0..{len(self._table) - 1}")
        embedded = self._table[ids]
        return embedded.reshape(embedded.shape[:ids.ndim - len(shape)] + (-1,))

    def _infer_sentences(self, sentences, encrypted: bool) -> np.ndarray:
        """Sentence embeddings from a transformer encoder: encrypted one sentence a request, or in plaintext all at
        once (padded to the longest, with the attention mask)."""
        encoder = self.info["encoder"]
        if self._tokenizer is None:
            self._tokenizer = default_tokenizer()
        ids = token_ids(self._tokenizer, sentences, encoder["vocab"])
        refuse_longer(ids, encoder["positions"], "the model has {limit} positions: shorten it")
        if not encrypted:
            width = max(len(i) for i in ids)
            padded = np.full((len(ids), width), encoder["pad_id"], dtype=np.int64)
            mask = np.zeros((len(ids), width), dtype=np.int64)
            for row, sentence in enumerate(ids):
                padded[row, :len(sentence)], mask[row, :len(sentence)] = sentence, 1
            return self._infer_plaintext(dict(zip(encoder["inputs"], (padded, mask))))
        if not self.info["programs"]:
            raise ValueError(f"the model is served in plaintext only ({', '.join(self.info['encrypted_blockers'])}):"
                             " call infer(sentences, encrypted=False)")
        tokens = encoder["tokens"]
        refuse_longer(ids, tokens, "the model's encrypted program takes at most {limit}: shorten it, or call "
                                   "infer(..., encrypted=False)")
        if self._embeddings is None:
            response = self.client.http.request("GET", f"/models/{self.info['id']}/embeddings")
            with np.load(io.BytesIO(response.content), allow_pickle=False) as arrays:
                self._embeddings = TokenEmbeddings.from_arrays(arrays)
        program, info = self._program("tokens")
        pooled = []
        for sentence in tqdm(ids, desc="encrypted sentences", unit="sentence", disable=not self.progress or len(ids) < 2):
            padded = np.full(tokens, encoder["pad_id"], dtype=np.int64)
            padded[:len(sentence)] = sentence
            hidden = self.client.compute(info, f"/models/{self.info['id']}/jobs",
                                         {"variant": "tokens", "length": len(sentence)},
                                         [(self._embeddings(padded), program.input_layout)], self.timeout)
            pooled.append(mean_pool(hidden, len(sentence), encoder["normalize"]))
        return np.stack(pooled)

    def _run(self, variant: str, x: np.ndarray) -> np.ndarray:
        """Encrypt `x` in the program's layout, run the job on the server, decrypt and unpack its output."""
        program, info = self._program(variant)
        outputs = self.client.compute(info, f"/models/{self.info['id']}/jobs", {"variant": variant},
                                      [(program.pack_input(x), program.input_layout)], self.timeout)
        return program.unpack_output(outputs)
