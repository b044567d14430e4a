"""An encrypted transformer: the non-linear blocks as polynomials on calibrated ranges (approx) and as plan pieces
(pieces); an encoder layer's weights, exact layer and calibration (encoder), compiled into a chain of plans
(program): over the einsum compiler's layouts, or in one row packing from end to end (packed, with its row
products in rowmatmul and its attention mask's operands, resolved for a sentence's length at run time, in
keymask), with bootstraps placed inside it by the level planner (refresh); a chain spliced into one
plan (stack), a BERT-style encoder read from quant's artifact (artifact) and compiled whole (encoder_model)."""

from .approx import PolyGelu, PolyLayerNorm, PolySoftmax, gelu
from .keymask import KeyMask, with_length
from .encoder import (EncoderBlocks, EncoderWeights, calibrate_encoder, calibrate_stack, encoder_layer, encoder_stack,
                      heads_of)
from .pieces import Piece, PieceBuilder, gelu_piece, layernorm_piece, softmax_piece
from .program import (EncoderProgram, Stage, bias_piece, compile_encoder_layer, natural_piece, stack_programs,
                      sum_piece)
from .packed import RowPacking, compile_packed_layer
from .refresh import place_bootstraps
from .stack import splice_plan
from .artifact import EncoderArtifact, TokenEmbeddings, read_encoder_artifact
from .encoder_model import CompiledEncoder, calibrate_layers, compile_encoder, encoder_chain, polynomial_encoder

__all__ = ["PolySoftmax", "PolyLayerNorm", "PolyGelu", "gelu", "KeyMask", "with_length", "Piece", "PieceBuilder", "softmax_piece",
           "layernorm_piece", "gelu_piece", "EncoderWeights", "EncoderBlocks", "encoder_layer", "calibrate_encoder",
           "calibrate_stack", "encoder_stack", "heads_of", "Stage", "EncoderProgram", "compile_encoder_layer", "bias_piece", "sum_piece", "natural_piece",
           "stack_programs", "RowPacking", "compile_packed_layer", "place_bootstraps",
           "splice_plan", "EncoderArtifact", "TokenEmbeddings", "read_encoder_artifact",
           "CompiledEncoder", "calibrate_layers", "compile_encoder", "encoder_chain", "polynomial_encoder"]
