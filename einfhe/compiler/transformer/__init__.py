"""An encrypted transformer: the non-linear blocks as polynomials on calibrated ranges (approx) and as plan pieces
(pieces)."""

from .approx import PolyGelu, PolyLayerNorm, PolySoftmax, gelu
from .pieces import Piece, PieceBuilder, gelu_piece, layernorm_piece, softmax_piece

__all__ = ["PolySoftmax", "PolyLayerNorm", "PolyGelu", "gelu", "Piece", "PieceBuilder", "softmax_piece",
           "layernorm_piece", "gelu_piece"]
