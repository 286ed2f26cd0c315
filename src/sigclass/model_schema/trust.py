"""What a model keeps to be trusted in production: the drift reference of the service's monitoring
the threshold of its conformal prediction sets and what tells an input far from its training
data (the ``model.json`` fields ``drift_reference``, ``conformal`` and ``ood``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from .fields import MAX_DRIFT_BINS, Finite, StrictModel


class DriftBins(StrictModel):
    """The quantile bins of one drift score and the reference's share in each."""

    edges: list[Finite] = Field(max_length=MAX_DRIFT_BINS - 1)
    proportions: list[Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]] = Field(
        min_length=1, max_length=MAX_DRIFT_BINS)

    @model_validator(mode="after")
    def _consistent(self) -> DriftBins:
        if len(self.proportions) != len(self.edges) + 1:
            raise ValueError(f"{len(self.proportions)} proportion(s) for {len(self.edges)} edge(s); "
                             "expected one more proportion than edges")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("the edges must increase")
        if abs(sum(self.proportions) - 1) > 1e-3:
            raise ValueError(f"the proportions add up to {sum(self.proportions):.4f}, not 1")
        return self


class DriftReference(StrictModel):
    """The inputs a model was tested on, summarised for the service's drift statistic
    (:mod:`sigclass.evaluation.drift`)."""

    statistic: Literal["psi"]
    part: Literal["test", "val"]
    n_inputs: int = Field(ge=1)
    scores: dict[Literal["input_rms", "confidence"], DriftBins] = Field(min_length=1)


class ConformalSpec(StrictModel):
    """The threshold of the prediction sets (see ``sigclass.evaluation.conformal``)."""

    method: Literal["aps"] = "aps"
    coverage: float = Field(gt=0, lt=1, allow_inf_nan=False)
    # None: too few calibration items for the coverage, so every set is all classes
    qhat: float | None = Field(default=None, ge=0, le=1.000001, allow_inf_nan=False)
    n: int = Field(ge=0)
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None




class OODSpec(StrictModel):
    """How a model tells inputs far from its training data (see ``sigclass.evaluation.ood``):
    the score, the threshold above which an input is *unknown*, and the file of its reference
    tensors (listed in ``files``, checked by its checksum; its tensors are checked against these
    counts when the model loads)."""

    method: Literal["knn", "mahalanobis"]
    # the neighbour whose distance is the score (knn only)
    k: int | None = Field(default=None, ge=1, le=1000)
    threshold: float = Field(ge=0, allow_inf_nan=False)
    tpr: float = Field(default=0.95, gt=0, lt=1, allow_inf_nan=False)
    n: int = Field(ge=1)  # in-distribution items the threshold was fitted on
    n_reference: int = Field(ge=1, le=10_000)  # training items in the reference
    dim: int = Field(ge=1, le=1_000_000)  # width of the pooled features
    file: Annotated[str, StringConstraints(max_length=128)] = "ood.safetensors"
    calibrated_on: Annotated[str, StringConstraints(max_length=500)] = ""

    @model_validator(mode="after")
    def _consistent(self) -> OODSpec:
        if self.method == "knn" and (self.k is None or self.k > self.n_reference):
            raise ValueError(f"knn needs k between 1 and n_reference ({self.n_reference}), "
                             f"got {self.k}")
        if self.method == "mahalanobis" and self.k is not None:
            raise ValueError("k is for knn only; mahalanobis has none")
        return self
