"""An encoder layer in one packing from end to end: tokens x hidden row-major in the slots (each token a row of
`row` slots, the hidden features first, heads as contiguous blocks of the head width), so every stage reads the
layout the one before it left and no value is ever moved by a generic relayout.

- Projections are row products (einfhe.compiler.transformer.rowmatmul): the diagonal method with baby and giant
  steps over each token's row, a few dozen rotation keys shared by every projection of the layer's width. The
  feed-forward layer's inner width is cut into chunks of the hidden width, one chunk per block of tokens (the
  slots a layer of this length leaves free hold the chunks side by side), so its first product writes them all at
  once and the second sums them back with log2(chunks) rotations.
- q k^T for every head at once by replicate-and-rotate (as in NEXUS and THOR): for each offset r < tokens, the
  keys rotated by r rows meet the queries slot-wise, a rotate-and-sum over the head's block leaves
  S[h, q, (q + r) mod tokens] in the block's first slot, and a mask and a shift by r put it at slot r of the block.
  The scores live in (query, head, offset) order, every offset of a row inside its head's block: the softmax's row
  sums are rotations within a block.
- The attention mask: a sentence shorter than `tokens` is padded, and the padded positions are masked out as keys
  (as BERT's attention mask does). The masks are plain operands resolved for the sentence's real token count at
  run time (einfhe.compiler.transformer.keymask): the scores' mask zeroes the padded keys' scores, the softmax
  centres each row on its real scores' mean and zeroes the padded keys' exps. One compiled program serves every
  length; `EncoderProgram.run(..., length=L)` swaps the masks in.
- p v likewise: for each r, the probabilities of offset r are masked, shifted back to the block's first slot and
  copied over the block, then multiplied by the values rotated by r rows; the sum over r is the heads' output in
  the hidden layout again.

Requirements: a power-of-two token count no larger than the head width (a power of two), and tokens x row slots in
one ciphertext. `compile_packed_layer` returns the same `EncoderProgram` as `compile_encoder_layer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import ModelError
from ...layout import Dim, Layout, next_pow2
from ..builder import Packed
from ...plan import Add, HoistedRotate, Mask, Mul, MulPlain, Rescale, Rotate, RotatePrecompute
from .encoder import EncoderBlocks, EncoderWeights
from .keymask import KeyMask
from .pieces import Piece, PieceBuilder, gelu_piece, layernorm_piece, softmax_piece
from .program import INPUT, EncoderProgram, StageChain, sum_piece
from .rowmatmul import block_sum, pattern_layout, row_matmul, row_span

__all__ = ["RowPacking", "compile_packed_layer", "projection_piece", "scores_piece", "attend_piece"]


@dataclass(frozen=True)
class RowPacking:
    """The packing of one layer: `tokens` rows of `row` slots; the hidden width `width` split in `heads`; the
    feed-forward inner width cut into `chunks` of the hidden width."""

    tokens: int
    width: int
    heads: int
    inner: int
    slots: int

    def __post_init__(self) -> None:
        head = self.width // self.heads
        if self.tokens < 1 or self.tokens & (self.tokens - 1) or head & (head - 1) or self.tokens > head:
            raise ModelError(f"the packed layer needs a power-of-two token count no larger than the head width, a "
                             f"power of two: {self.tokens} tokens, head width {head}", tokens=self.tokens)
        if self.tokens * self.row > self.slots:
            raise ModelError(f"{self.tokens} tokens of {self.row} slots do not fit {self.slots} slots: use a larger "
                             "ring or fewer tokens", tokens=self.tokens, slots=self.slots)

    @property
    def head(self) -> int:
        """The head width."""
        return self.width // self.heads

    @property
    def row(self) -> int:
        """Slots per token: the row products' span, a power of two."""
        return next_pow2(row_span(self.width))

    @property
    def block(self) -> int:
        """Slots of one block of every token's row."""
        return self.tokens * self.row

    @property
    def chunks(self) -> int:
        """Chunks of the hidden width the feed-forward inner width is cut into."""
        return math.ceil(self.inner / self.width)

    @property
    def per(self) -> int:
        """Feed-forward chunks in one ciphertext."""
        return min(next_pow2(self.chunks), self.slots // self.block)

    def hidden(self) -> Layout:
        """(tokens, width): each token's features at the start of its row."""
        return Layout((Dim("s", self.tokens, "axis", self.tokens), Dim("d", self.row, "axis", self.width)),
                      self.slots, "sd", (self.tokens, self.width))

    def chunked(self) -> Layout:
        """(chunks, tokens, width): the feed-forward inner activations, chunk c in block c."""
        dims = (Dim("c", next_pow2(self.chunks), "axis", self.chunks), Dim("s", self.tokens, "axis", self.tokens),
                Dim("f", self.row, "axis", self.width))
        return Layout(dims, self.slots, "csf", (self.chunks, self.tokens, self.width))

    def scores(self) -> Layout:
        """(query, head, offset): S[h, q, (q + r) mod tokens] at slot r of head h's block in query q's row."""
        dims = (Dim("q", self.tokens, "axis", self.tokens), Dim("h", self.row // self.head, "axis", self.heads),
                Dim("r", self.head, "axis", self.tokens))
        return Layout(dims, self.slots, "qhr", (self.tokens, self.heads, self.tokens))

    def head_mask(self, offset: int) -> Mask:
        """Slot `offset` of every head's block in every row."""
        starts = np.arange(self.slots).reshape(-1, self.row)[:, :self.width:self.head] + offset
        return Mask(tuple((int(s), int(s) + 1) for s in starts.ravel()), self.slots)


def projection_piece(layout: Layout, packing: RowPacking, matrices: np.ndarray, bias: np.ndarray,
                     out: Layout) -> Piece:
    """x M + bias, row by row (`row_matmul` on matrices (outputs, inputs, per, n, n)); the bias broadcast to `out`'s
    shape; where the input has chunks side by side and the output none, the blocks are summed."""
    pb = PieceBuilder(layout)
    cts = row_matmul(pb, pb.input.cts, matrices, pattern_layout(matrices.shape[2], packing.tokens, packing.row,
                                                                packing.slots))
    if out.block < matrices.shape[2] * packing.block:  # row chunks side by side, summed into every block
        cts = (block_sum(pb, cts, matrices.shape[2], packing.block),)
    return pb.plan(f"rowmatmul[{layout.indices}->{out.indices}]", pb.add_const(Packed(cts, out), bias))


def _rows_rotated(first: Layout, second: Layout, packing: RowPacking) -> tuple[PieceBuilder, list[int]]:
    """A piece over two cipher inputs, and the second rotated by r rows for each r < tokens (r = 0: itself), the
    rotations sharing one precomputation."""
    pb = PieceBuilder(first)
    ct, emit = pb.extra_input(second).cts[0], pb.builder.emit
    digits = emit(RotatePrecompute, ct) if packing.tokens > 1 else None
    return pb, [ct] + [emit(HoistedRotate, ct, digits, r * packing.row) for r in range(1, packing.tokens)]


def scores_piece(queries: Layout, keys: Layout, packing: RowPacking) -> Piece:
    """Every head's q k^T (queries already divided by sqrt(head width)) in the `RowPacking.scores` layout, the
    padded keys' scores zero (the "offset" key masks, resolved for a sequence's real token count at run time): two
    levels (the product, the mask)."""
    pb, shifted = _rows_rotated(queries, keys, packing)
    emit, terms = pb.builder.emit, []
    for r in range(packing.tokens):
        product = emit(Rescale, emit(Mul, pb.input.cts[0], shifted[r]))
        step = 1
        while step < packing.head:  # the head's sum in its block's first slot
            product = emit(Add, product, emit(Rotate, product, step))
            step *= 2
        mask = KeyMask(packing.tokens, packing.heads, "offset", r)  # slot 0 of each block, where key q + r is real
        kept = pb.scale(Packed((product,), packing.scores()), mask).cts[0]
        terms.append(emit(Rotate, kept, -r) if r else kept)
    return pb.plan("scores[qhr]", Packed((pb.builder.sum_values(terms),), packing.scores()))


def attend_piece(probs: Layout, values: Layout, packing: RowPacking) -> Piece:
    """sum over keys of p v for every head, in the hidden layout: two levels (the mask, the product)."""
    pb, shifted = _rows_rotated(probs, values, packing)
    emit, terms = pb.builder.emit, []
    for r in range(packing.tokens):
        spread = emit(Rescale, emit(MulPlain, pb.input.cts[0], packing.head_mask(r)))
        spread = emit(Rotate, spread, r) if r else spread
        step = 1
        while step < packing.head:  # copied over the head's block
            spread = emit(Add, spread, emit(Rotate, spread, -step))
            step *= 2
        terms.append(emit(Rescale, emit(Mul, spread, shifted[r])))
    return pb.plan("attend[sd]", Packed((pb.builder.sum_values(terms),), packing.hidden()))


def _square(matrix: np.ndarray, n: int) -> np.ndarray:
    """The matrix zero-padded to n x n."""
    out = np.zeros((n, n))
    out[:matrix.shape[0], :matrix.shape[1]] = matrix
    return out


def _chunk_matrices(matrix: np.ndarray, packing: RowPacking, by_rows: bool) -> np.ndarray:
    """The feed-forward matrix cut into width x width chunks, chunk c in block c % per of ciphertext c // per:
    (cts, 1, per, n, n) for the first product (columns), (1, cts, per, n, n) for the second (rows)."""
    n, per = packing.width, packing.per
    cts = next_pow2(packing.chunks) // per
    out = np.zeros((cts, per, n, n))
    for c in range(packing.chunks):
        part = matrix[c * n:(c + 1) * n] if by_rows else matrix[:, c * n:(c + 1) * n]
        out[c // per, c % per] = _square(part, n)
    return out[None] if by_rows else out[:, None]


def compile_packed_layer(weights: EncoderWeights, blocks: EncoderBlocks, tokens: int, *,
                         slots: int) -> EncoderProgram:
    """The layer on `tokens` tokens as a chain of plans in the row packing (`RowPacking`); the client encrypts x in
    `program.input_layout` (each token's features at the start of its row)."""
    w = weights
    if blocks.softmax.length != tokens:
        raise ModelError(f"the softmax was calibrated for {blocks.softmax.length} tokens, not {tokens}")
    packing = RowPacking(tokens, w.width, w.heads, np.shape(w.w1)[1], slots)
    hidden, chunked, n = packing.hidden(), packing.chunked(), w.width
    chain = StageChain(hidden, slots)
    scale = 1 / np.sqrt(w.head_width)  # the score's 1/sqrt(e) folded into the query projection

    def project(name, source, matrix, bias):
        return chain.piece(name, projection_piece, source, packing=packing, matrices=matrix[None, None, None],
                           bias=bias, out=hidden)

    q = project("q", INPUT, w.wq * scale, w.bq * scale)
    k = project("k", INPUT, w.wk, w.bk)
    v = project("v", INPUT, w.wv, w.bv)
    scores = chain.piece("q.k", scores_piece, q, k, packing=packing)
    probs = chain.piece("softmax", softmax_piece, scores, softmax=blocks.softmax,
                        keys=KeyMask(packing.tokens, packing.heads))
    attended = chain.piece("p.v", attend_piece, probs, v, packing=packing)
    out = project("out@Wo", attended, w.wo, w.bo)
    h = chain.piece("norm1", layernorm_piece, chain.piece("x+attn", sum_piece, INPUT, out), norm=blocks.norm1)
    b1 = np.zeros(packing.chunks * n)
    b1[:w.b1.size] = w.b1
    inner = chain.piece("h@W1", projection_piece, h, packing=packing, matrices=_chunk_matrices(w.w1, packing, False),
                        bias=b1.reshape(packing.chunks, 1, n), out=chunked)
    activated = chain.piece("gelu", gelu_piece, inner, activation=blocks.gelu)
    ffn = chain.piece("g@W2", projection_piece, activated, packing=packing,
                      matrices=_chunk_matrices(w.w2, packing, True), bias=w.b2, out=hidden)
    result = chain.piece("norm2", layernorm_piece, chain.piece("h+ffn", sum_piece, h, ffn), norm=blocks.norm2)
    return EncoderProgram(tuple(chain.stages), hidden, result)
