"""What a model keeps to be trusted in production: the drift reference of the service's monitoring
and the threshold of its conformal prediction sets (the ``model.json`` fields
``drift_reference`` and ``conformal``)."""

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


