"""A tiny transformer encoder (bench/quant_accuracy.py's MiniLM module: one layer of width 16, 2 heads; several layers
are one plan the same way, tests/einfhe/compiler/test_encoder_stack.py) exported by quant with its example
sentences, registered with a real uvicorn server on a test ring, and asked for sentence embeddings: encrypted (the
client tokenizes, embeds and encrypts, the server runs the layer and its bootstraps,
the client decrypts and mean-pools) within the CKKS bound of the polynomial model; in plaintext (quant's kernels in
a server worker) equal to the float model with the quantized weights; and the clear errors around them."""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import copy
import json
import math

import numpy as np
import pytest
from client_helpers import TOKENS
from encoder_bounds import move_bootstraps, stack_largest_value

from client import BadRequest, Client, EncryptedModel
from einfhe.compiler import read_artifact_graph
from einfhe.compiler.transformer import (calibrate_layers, compile_encoder, encoder_chain, polynomial_encoder,
                                         read_encoder_artifact, with_length)
from einfhe.params import bootstrap_headroom
from einfhe.params.precision import error_bound
from einfhe.runtime.magnitudes import value_magnitudes
from server import LocalServer, Settings

WORDS = ("[PAD] [UNK] [CLS] [SEP] the a cat dog bird sat ran sang on in at mat park tree sun rain shone fell "
         "over near old small").split()
WIDTH, INNER, TOKENS_PER_SENTENCE, SLOTS = 16, 32, 8, 256
CONFIG = {"hidden_size": WIDTH, "vocab_size": len(WORDS), "max_position_embeddings": 16, "type_vocab_size": 2,
          "layer_norm_eps": 1e-12, "intermediate_size": INNER, "num_attention_heads": 2, "num_hidden_layers": 1}
EXAMPLE = ["the cat sat on the mat", "a dog ran in the park", "the bird sang in a tree", "the sun shone",
           "rain fell on the park", "a small cat ran", "the old dog sat near a tree", "a bird sat on the sun",
           "the rain fell over the old park", "a cat sang", "the dog ran at the bird", "small rain fell"]


def _tokenizer():
    """A word-level tokenizer over WORDS that frames a sentence as [CLS] ... [SEP], as BERT's does."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                             special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tokenizer


def _ids(tokenizer, sentences, length=None):
    """Token ids and attention mask (sentences, length: the longest sentence's by default), padded with [PAD]."""
    import torch

    encoded = tokenizer.encode_batch(sentences)
    length = length or max(len(e.ids) for e in encoded)
    ids, mask = torch.zeros(len(sentences), length, dtype=torch.long), torch.zeros(len(sentences), length,
                                                                                   dtype=torch.long)
    for row, sentence in enumerate(encoded):
        ids[row, :len(sentence.ids)], mask[row, :len(sentence.ids)] = torch.tensor(sentence.ids), 1
    return ids, mask


def _export(directory, keep_example=True):
    """The float model, and its W4A16 copy exported (with the example sentences kept) to `directory`."""
    import torch

    import quant
    from bench.quant_accuracy import MiniLM

    torch.manual_seed(0)
    float_model = MiniLM(CONFIG).eval()
    quantized = copy.deepcopy(float_model)
    quant.quantize_(quantized, quant.W4A16(group_size=32))
    quant.export(quantized, _ids(_tokenizer(), EXAMPLE), directory, keep_example=keep_example)
    return float_model


def _settings(tmp, **options) -> Settings:
    tmp.mkdir(exist_ok=True)
    token_file = tmp / "tokens.txt"
    token_file.write_text("".join(f"{t}:{k}\n" for t, k in TOKENS.items()))
    return Settings(data_dir=tmp / "data", token_file=token_file, workers=1, **options)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server with the tiny encoder registered on the test ring."""
    tmp = tmp_path_factory.mktemp("encoder")
    float_model = _export(tmp / "artifact")
    with LocalServer(_settings(tmp, allow_insecure_test_params=True)) as url:
        with Client(url, TOKENS["operator"], progress=False) as operator:
            info = operator.register_model("tiny-bert", tmp / "artifact", slots=SLOTS, insecure_test_params=True)
        yield {"url": url, "info": info, "dir": tmp / "artifact", "float": float_model}


def _model(served, **options) -> EncryptedModel:
    return EncryptedModel(served["url"], "tiny-bert", token=TOKENS["alice"], progress=False, **options)


def _moved_bootstraps(plan, params, plains, x) -> np.ndarray:
    """The plan on the simulator with every bootstrap moving every slot by BOOTSTRAP_ERROR, signs at random: how
    far the bootstraps' own error is carried to the output."""
    ctx = einfhe.Context.for_plan(plan, backend="simulator", params=params)
    move_bootstraps(ctx)
    return einfhe.decrypt(ctx, einfhe.run(ctx, plan, einfhe.encrypt(ctx, x, plan.input_layout(0)), *plains))


@pytest.fixture(scope="module")
def recompiled(served):
    """The served encoder compiled again here as registration compiles it (its plan, plains and level map)."""
    program = served["info"]["programs"]["tokens"]
    params = einfhe.Parameters.from_json(program["params"])
    encoder = read_encoder_artifact(*read_artifact_graph(served["dir"]))
    blocks = calibrate_layers(encoder, TOKENS_PER_SENTENCE)
    chain = encoder_chain(encoder, blocks, TOKENS_PER_SENTENCE, slots=SLOTS)
    return compile_encoder(encoder, blocks, TOKENS_PER_SENTENCE, slots=SLOTS, max_depth=12, ring_dim=params.ring_dim,
                           headroom=bootstrap_headroom(params.scale_bits, params.first_mod_bits),
                           magnitudes=value_magnitudes(chain, encoder.samples(TOKENS_PER_SENTENCE),
                                                       encoder.lengths(TOKENS_PER_SENTENCE)), chain=chain)


def test_encrypted_sentence_embeddings_decrypt_to_the_polynomial_model(served, recompiled):
    """The decrypted embedding within the CKKS bound (`_distances_and_bounds`) of the polynomial model with the
    sentence's padding masked out as keys."""
    info, sentences = served["info"], ["a bird sang"]  # 5 tokens padded to 8, masked out and left out of the pooling
    program = info["programs"]["tokens"]
    assert info["encrypted_blockers"] == [] and info["encoder"]["tokens"] == TOKENS_PER_SENTENCE
    with _model(served, tokenizer=_tokenizer()) as model:
        got = model.infer(sentences)
    plan, params = einfhe.Plan.from_json(json.dumps(program["plan"])), einfhe.Parameters.from_json(program["params"])
    compiled = recompiled.program
    assert plan == compiled.plan and plan.bootstraps > 0 and params.bootstrap  # the served program, recompiled here
    assert program["level_map"] == str(recompiled.levels) and "bootstrap" in program["level_map"]
    ids, mask = _ids(_tokenizer(), sentences, TOKENS_PER_SENTENCE)
    assert got.shape == (1, WIDTH) and int(mask[0].sum()) < TOKENS_PER_SENTENCE
    distances, allowed = _distances_and_bounds(served, sentences, got, compiled.plains)
    assert np.all(distances <= allowed)


def _distances_and_bounds(served, sentences, got, plains, mask_keys=True):
    """Per sentence: the L2 distance of the decrypted embedding `got` to the polynomial model's (its padding masked
    out as keys, or attended to when not `mask_keys`), and what CKKS allows it: each token's output within the CKKS
    bound of the program's levels and key switches plus the bootstraps' carried error (B per slot), the pooled sum of
    n token vectors then within sqrt(width) B in L2, the normalised embedding within twice that over its norm."""
    program = served["info"]["programs"]["tokens"]
    plan, params = einfhe.Plan.from_json(json.dumps(program["plan"])), einfhe.Parameters.from_json(program["params"])
    encoder = read_encoder_artifact(*read_artifact_graph(served["dir"]))
    blocks = calibrate_layers(encoder, TOKENS_PER_SENTENCE)
    ids, mask = _ids(_tokenizer(), sentences, TOKENS_PER_SENTENCE)
    distances, allowed = [], []
    for row in range(len(sentences)):
        x, length = encoder.embeddings(ids[row].numpy()), int(mask[row].sum())
        hidden = polynomial_encoder(encoder, blocks, x, length)
        carried = np.abs(_moved_bootstraps(plan, params, with_length(plains, length), x) - hidden).max()
        bound = error_bound(params, stack_largest_value(encoder.layers, blocks, x, length), INNER, plan.depth,
                            plan.keyswitches) + carried
        pooled = (hidden if mask_keys else polynomial_encoder(encoder, blocks, x))[:length].mean(axis=0)
        distances.append(np.linalg.norm(got[row] - pooled / np.linalg.norm(pooled)))
        allowed.append(2 * math.sqrt(WIDTH) * bound / np.linalg.norm(pooled))
    return np.array(distances), np.array(allowed)


def test_plaintext_embeddings_are_the_float_model_with_the_quantized_weights(served):
    """The same artifact in plaintext (quant's W4A16 kernels in a server worker, the client padding to the longest
    sentence with the attention mask): the float model whose linear weights are the ones the 4-bit codes stand
    for, to float32 rounding; the float model itself within the weights' quantization error."""
    import torch

    sentences = ["the old dog sat near a tree", "a cat ran", "the sun shone over the park at rain"]
    with _model(served, tokenizer=_tokenizer()) as model:
        got = model.infer(sentences, encrypted=False)
    encoder = read_encoder_artifact(*read_artifact_graph(served["dir"]))
    dequantized = copy.deepcopy(served["float"])
    for layer, weights in zip(dequantized.encoder.layer, encoder.layers):
        for linear, matrix in ((layer.attention.self.query, weights.wq), (layer.attention.self.key, weights.wk),
                               (layer.attention.self.value, weights.wv), (layer.attention.output.dense, weights.wo),
                               (layer.intermediate.dense, weights.w1), (layer.output.dense, weights.w2)):
            linear.weight.data = torch.from_numpy(matrix.T).float()
    ids, mask = _ids(_tokenizer(), sentences)
    with torch.no_grad():
        expected, float_answer = dequantized(ids, mask).numpy(), served["float"](ids, mask).numpy()
    assert got.shape == (3, WIDTH)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(got - float_answer).max() > 1e-4  # the quantized weights are not the float ones


def test_bad_requests_get_clear_errors(served):
    with _model(served, tokenizer=_tokenizer()) as model:
        with pytest.raises(ValueError, match="at most 8"):
            model.infer(["the old dog sat near a small tree in the park"])
        with pytest.raises(ValueError, match="at least one sentence"):
            model.infer([])
        with pytest.raises(ValueError, match="list of sentences"):
            model.infer("the cat")
        with pytest.raises(ValueError, match="sentence 1 is 22 tokens; the model has 16 positions"):
            model.infer(["the cat", "the " * 20], encrypted=False)
    with _model(served) as model:  # the default tokenizer, all-MiniLM-L6-v2's, is not this model's
        with pytest.raises(ValueError, match=f"the model {len(WORDS)}"):
            model.infer(["the cat"])


def test_what_cannot_run_encrypted_here_is_served_in_plaintext_with_the_reason(tmp_path):
    """A key-set cap below the program's keys, or an export without its example sentences: plaintext only, the
    blocker says what it would take; a server that refuses test rings refuses the registration."""
    _export(tmp_path / "artifact")
    _export(tmp_path / "no-example", keep_example=False)
    with LocalServer(_settings(tmp_path / "capped", allow_insecure_test_params=True, max_keyset_bytes=1 << 20)) as url:
        with Client(url, TOKENS["operator"], progress=False) as operator:
            capped = operator.register_model("capped", tmp_path / "artifact", slots=SLOTS, insecure_test_params=True)
            bare = operator.register_model("bare", tmp_path / "no-example", slots=SLOTS, insecure_test_params=True)
        with EncryptedModel(url, "capped", token=TOKENS["alice"], progress=False, tokenizer=_tokenizer()) as model:
            with pytest.raises(ValueError, match="plaintext only .*EINFHE_MAX_KEYSET_BYTES"):
                model.infer(["the cat sat"])
            assert model.infer(["the cat sat"], encrypted=False).shape == (1, WIDTH)
    assert capped["programs"] == {} and "over this server's key-set cap of 0.00 GiB" in capped["encrypted_blockers"][0]
    assert bare["programs"] == {} and "keep_example=True" in bare["encrypted_blockers"][0]
    with LocalServer(_settings(tmp_path / "secure")) as url:
        with Client(url, TOKENS["operator"], progress=False) as operator:
            with pytest.raises(BadRequest, match="insecure_parameters"):
                operator.register_model("m", tmp_path / "artifact", slots=SLOTS, insecure_test_params=True)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_padded_sentences_agree_with_the_plaintext_path_as_an_unpadded_one_does(served, recompiled):
    """Sentences of 4, 5 and 7 tokens padded to 8 (the padding masked out of the attention, the request saying how
    many are real) and one of all 8 decrypt within the CKKS bound of the masked polynomial model, and the polynomial
    model attending to the padding lies outside it; the masked model is the closer to the plaintext path (quant's
    kernels with the attention mask). A length the program cannot take is refused with 400."""
    sentences = ["the cat", "a dog ran", "the old dog sat near", "the old dog sat near a"]
    with _model(served, tokenizer=_tokenizer()) as model:
        got, plain = model.infer(sentences), model.infer(sentences, encrypted=False)
        _, keyset = model.client.context_for(model._program("tokens")[1])
        for length, why in ((TOKENS_PER_SENTENCE + 1, "integer in 1..8, not 9"), (0, "length"), ("two", "length")):
            with pytest.raises(BadRequest, match=why):
                model.client.run_job(f"/models/{served['info']['id']}/jobs",
                                     {"variant": "tokens", "keyset_id": keyset, "length": length}, [b"\0"])
    ids, mask = _ids(_tokenizer(), sentences, TOKENS_PER_SENTENCE)
    lengths = mask.sum(1).numpy()
    assert list(lengths) == [4, 5, 7, 8]
    distances, allowed = _distances_and_bounds(served, sentences, got, recompiled.program.plains)
    assert np.all(distances <= allowed)
    unmasked, _ = _distances_and_bounds(served, sentences[:3], got, recompiled.program.plains, mask_keys=False)
    assert np.all(unmasked > allowed[:3])
    encoder = read_encoder_artifact(*read_artifact_graph(served["dir"]))
    blocks = calibrate_layers(encoder, TOKENS_PER_SENTENCE)
    attending = np.stack([polynomial_encoder(encoder, blocks, encoder.embeddings(row.numpy()))[:n].mean(axis=0)
                          for row, n in zip(ids[:3], lengths[:3])])
    assert np.all(_cosines(got[:3], plain[:3]) > _cosines(attending, plain[:3]))
