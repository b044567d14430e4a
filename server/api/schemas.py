"""Pydantic schemas of the REST contract: `XCreate` is what a client sends, `XPublic` what the server answers."""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from ..errors import CODES, JOB_CODES

__all__ = [
    "NAME_PATTERN", "ErrorCode", "ErrorDetail", "ErrorResponse", "Health", "JobError", "JobErrorCode", "JobPublic", "KeySetPublic", "ModelProgram", "ModelPublic",
    "OperandPublic", "OperandRef", "PlanCreate", "PlanPublic",
]

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"


ErrorCode = Enum("ErrorCode", {code: code for code in CODES}, type=str, module=__name__)
ErrorCode.__doc__ = "The stable code of an error answer (its HTTP status is fixed by the code: server.errors.CODES)."
JobErrorCode = Enum("JobErrorCode", {code: code for code in JOB_CODES}, type=str, module=__name__)
JobErrorCode.__doc__ = "The stable code of a failed job's error."


class ErrorDetail(BaseModel):
    """A stable error code and a message saying what was wrong and what to do."""

    code: ErrorCode
    message: str


class JobError(BaseModel):
    """Why a job failed: a stable code and a message."""

    code: JobErrorCode
    message: str


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


class Health(BaseModel):
    """The health check's answer."""

    status: Literal["ok"]
    version: str


class KeySetPublic(BaseModel):
    """An accepted key set, referenced by id in jobs."""

    id: str
    fingerprint: str
    params: dict
    rotations: list[int]
    size: int
    created: float


class OperandPublic(BaseModel):
    """A registered plaintext operand."""

    name: str
    shape: list[int]
    dtype: str
    size: int
    digest: str
    created: float


class OperandRef(BaseModel):
    """One einsum operand: a registered plaintext by name, or a cipher operand by shape."""

    model_config = ConfigDict(extra="forbid")

    plain: str | None = Field(None, pattern=NAME_PATTERN)
    cipher: list[StrictInt] | None = Field(None, max_length=8)
    bound: float | None = Field(None, gt=0, allow_inf_nan=False,
                                description="with 'cipher': the largest |entry| the client will encrypt in it, a "
                                            "public range it declares (einfhe.cipher's bound; it opens the small ring "
                                            "to the default ring choice)")

    @model_validator(mode="after")
    def _exactly_one(self) -> "OperandRef":
        if (self.plain is None) == (self.cipher is None):
            raise ValueError("give exactly one of 'plain' (a registered operand's name) or 'cipher' (a shape)")
        if self.cipher is not None and any(n < 1 or n > 1 << 24 for n in self.cipher):
            raise ValueError("cipher shape entries must lie in 1..2^24")
        if self.bound is not None and self.cipher is None:
            raise ValueError("'bound' belongs to a cipher operand")
        return self


class PlanCreate(BaseModel):
    """An einsum to plan: spec, operands, slots, and optionally explicit CKKS parameters."""

    model_config = ConfigDict(extra="forbid")

    spec: str = Field(min_length=1, max_length=256)
    operands: list[OperandRef] = Field(min_length=1, max_length=16)
    slots: int | None = Field(None, ge=1, le=1 << 16,
                              description="slots per ciphertext; null: the cheaper of 4,096 (N=2^13) and 8,192 where "
                                          "every cipher operand declares a bound that keeps the results within "
                                          "2^12, else 8,192 (einfhe.compile's default)")
    params: dict | None = None
    key_budget: int | None = Field(None, ge=1, description="most evaluation-key bytes the plan may need (default "
                                   "1 GiB, at most the server's key-set cap)")
    upload_budget: int | None = Field(None, ge=1, description="most uploaded ciphertext bytes per job (default "
                                      "64 MiB, at most the server's ciphertext cap)")


class PlanPublic(BaseModel):
    """A compiled plan and everything a client needs before uploading: parameters, layouts, rotations."""

    id: str
    spec: str
    operands: list[OperandRef]
    plan: dict
    params: dict
    fingerprint: str
    depth: int
    rotations: list[int]
    input_layouts: dict[str, dict]
    output_layout: dict
    cts_in: int
    cts_out: int
    explain: str
    created: float


class JobPublic(BaseModel):
    """A job's state; its result is fetched from /jobs/{id}/result once it has succeeded."""

    id: str
    plan_id: str
    keyset_id: str
    status: Literal["queued", "running", "succeeded", "failed"]
    error: JobError | None = None
    created: float
    finished: float | None = None
    seconds: float | None = None
    result_size: int | None = None


class ModelProgram(BaseModel):
    """One compiled encrypted program of a model: how the client encrypts its input and what it costs."""

    variant: Literal["single", "batch", "tokens"]
    params: dict = Field(description="the CKKS parameters of this program (einfhe.Parameters.from_json)")
    fingerprint: str
    batch: int | None = Field(description="samples per request (zero-padded by the client), or null for one sample")
    depth: int
    rotations: list[int]
    input_layout: dict
    output_layout: dict
    cts_in: int
    cts_out: int
    steps: int
    input_scale: list[float] | None = Field(description="per-feature factor the client applies before encrypting "
                                                        "(einfhe.ModelPlan.pack_input)")
    input_expansion: Literal["quadratic"] | None = Field(
        default=None, description="what the client encrypts instead of the features: 'quadratic', their monomials of "
                                  "degree 1 and 2 (einfhe.compiler.quadratic_form), or null, the features")
    output_scale: list[float] = Field(description="per-output factor the client applies after decrypting "
                                                  "(einfhe.ModelPlan.unpack_output)")
    plan: dict = Field(description="the plan (einfhe.Plan.from_json), which the client needs for its context")
    tokens: int | None = Field(default=None, description="an encoder's 'tokens' program: the token vectors one "
                                                         "request holds (a sentence is padded to them, its real "
                                                         "token count sent as the job's `length`)")
    key_bytes: int | None = Field(default=None, description="an encoder's program: its evaluation keys' estimated "
                                                            "bytes, bootstrapping's included")
    level_map: str | None = Field(default=None, description="an encoder's program: the level planner's map, a line "
                                                            "per stretch of its layers' stages and each bootstrap "
                                                            "with why it is there")


class ModelPublic(BaseModel):
    """A registered model and, per program, everything a client needs before uploading: parameters, layouts,
    rotations."""

    id: str
    name: str
    input_shape: list[int] | None
    n_features: int
    n_outputs: int
    layers: list[str]
    programs: dict[str, ModelProgram] = Field(description="'single' (one sample) and 'batch' (up to `batch` "
                                                          "samples): keys, layouts and scales for each; only "
                                                          "'batch' for a model with skip connections, none for "
                                                          "one served in plaintext only")
    encrypted_blockers: list[str] = Field(default_factory=list,
                                          description="the ops (\"name (op)\") that cannot run encrypted yet: "
                                                      "when any, the model is served in plaintext only")
    client_lookup: dict[str, int] | None = Field(default=None,
                                                 description="{vocab, dim} when the client looks the model's "
                                                             "token ids up in its embedding table (GET "
                                                             "/models/{id}/lookup) and encrypts the embeddings")
    encoder: dict | None = Field(default=None,
                                 description="a transformer encoder ({layers, width, heads, vocab, positions, "
                                             "normalize, inputs, tokens, pad_id}): its 'tokens' program takes one sentence's "
                                             "token vectors (GET /models/{id}/embeddings), padded with pad_id to "
                                             "`tokens`, and returns every token's output vector, which the client "
                                             "mean-pools over its real tokens (then L2-normalises when `normalize`)")
    size: int
    created: float
