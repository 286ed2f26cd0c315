"""Request and response shapes of the scoring service (they make the OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelRef(BaseModel):
    name: str = Field(description="Registered model name, else the run folder's name")
    version: str = Field(description="Registry version, else a checksum of the weights")


class ExplanationOut(BaseModel):
    method: str = Field(description="cam, gradcam or head_cam")
    target: str = Field(description="The class the map explains")
    overlay_png_base64: str = Field(description="The map over the input, a base64 PNG")
    map: list[Any] = Field(description="The raw map in [0, 1]: [row][column] or [time]")
    channel_importance: list[float] | None = Field(
        default=None, description="Signals: per channel, the probability drop when it is blanked")


class Prediction(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    input: str = Field(description="File name of the upload, or 'body' / 'inputs[i]'")
    predicted_class: str | None = Field(alias="class", description="The most probable class; null "
                                        "for an unknown input when the service rejects them "
                                        "(--reject-unknown)")
    confidence: float = Field(description="Probability of the predicted class")
    probabilities: dict[str, float] = Field(description="Probability of every class, by name")
    prediction_set: list[str] | None = Field(
        default=None, description="The conformal prediction set, most probable class first: it "
                                  "holds the true class with the model's coverage probability "
                                  "(info.conformal.coverage); null for a model saved without one")
    ood_score: float | None = Field(
        default=None, description="How far the input is from the training data (the model's "
                                  "out-of-distribution score on its pooled features: larger is "
                                  "farther); null for a model saved without OOD data")
    unknown: bool | None = Field(
        default=None, description="Whether ood_score is above the model's threshold (fitted so "
                                  "that 95 % of validation items pass); null without OOD data")
    explanation: ExplanationOut | None = None


class PredictResponse(Prediction):
    model: ModelRef


class BatchResponse(BaseModel):
    model: ModelRef
    predictions: list[Prediction]


class BoxExplanationOut(BaseModel):
    method: str = Field(description="layercam, on the backbone's stride-8 stage")
    target: str = Field(description="The class the map explains: the box's own")
    map: list[Any] = Field(description="The box's map in [0, 1], [row][column] over map_box: the "
                           "gradient map of the box's score, divided by its maximum in the box")
    map_box: list[int] = Field(description="The pixels the map covers: [x0, y0, x1, y1] of the "
                               "uploaded image, x1 and y1 exclusive")
    mass_inside: float = Field(description="Share of the box's whole-image map inside the box")


class ImageBoxesExplanationOut(BaseModel):
    method: str = Field(description="layercam")
    overlay_png_base64: str = Field(description="The image with every box's map inside its box "
                                    "and the boxes drawn, a base64 PNG")


class Box(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    xmin: float = Field(description="Left edge, in the uploaded image's own pixels")
    ymin: float = Field(description="Top edge, in the uploaded image's own pixels")
    xmax: float = Field(description="Right edge, in the uploaded image's own pixels")
    ymax: float = Field(description="Bottom edge, in the uploaded image's own pixels")
    box_class: str = Field(alias="class", description="The object's class")
    score: float = Field(description="The detector's score of the box, in [0, 1]")
    explanation: BoxExplanationOut | None = Field(
        default=None, description="explain=true: the gradient map of the box's score")


class Detections(BaseModel):
    task: Literal["detection"] = "detection"
    input: str = Field(description="File name of the upload, or 'body'")
    score_threshold: float = Field(description="The lowest score returned")
    max_detections: int = Field(description="The most boxes returned")
    boxes: list[Box] = Field(description="The objects found, highest score first")
    explanation: ImageBoxesExplanationOut | None = Field(
        default=None, description="explain=true: the picture of all the boxes' maps")


class DetectResponse(Detections):
    model: ModelRef


class DetectBatchResponse(BaseModel):
    model: ModelRef
    task: Literal["detection"] = "detection"
    predictions: list[Detections]


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    model: ModelRef | None = None


class Metadata(BaseModel):
    model: ModelRef
    source: str
    task: str = Field(default="classification", description="classification or detection")
    modality: str
    mode: str
    network: str
    classes: list[str]
    input: dict[str, Any] = Field(description="What the model takes and how to send it")
    serving: dict[str, Any] = Field(description="Backend, device, batching and limits")
    info: dict[str, Any] = Field(description="Metadata saved with the model (metrics, lineage)")
    monitoring: dict[str, Any] = Field(description="Drift: the reference saved with the model, the "
                                       "window of recent inputs, the statistic and its threshold")


class ErrorBody(BaseModel):
    error: str = Field(description="A machine-readable code, e.g. invalid_input")
    message: str = Field(description="What is wrong and how to fix it")
    problems: list[dict[str, str]] = Field(description="One entry per bad input: path, reason")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "Malformed request (empty body, invalid JSON, bad option)",
        401: "Missing or wrong X-API-Key",
        413: "Request body or image too large",
        415: "Content type the model cannot take",
        422: "Input the model cannot score (named in 'problems')",
        503: "The model is not loaded yet",
    }.items()
}

_SIGNAL_CASE = {"oneOf": [
    {"type": "array", "items": {"type": ["number", "null"]},
     "description": "one channel: [time]"},
    {"type": "array", "items": {"type": "array", "items": {"type": ["number", "null"]}},
     "description": "[channel][time]"},
]}


def request_body(many: bool) -> dict[str, Any]:
    """The OpenAPI request body of /predict (``many=False``) or /predict/batch."""
    field = "files" if many else "file"
    file_schema = {"type": "string", "format": "binary"}
    form = {"type": "object", "required": [field],
            "properties": {field: {"type": "array", "items": file_schema} if many else file_schema}}
    content: dict[str, Any] = {
        "multipart/form-data": {"schema": form},
        "application/json": {"schema": {"type": "array", "items": _SIGNAL_CASE} if many else _SIGNAL_CASE},
    }
    if not many:
        content["image/png"] = {"schema": file_schema}
        content["image/jpeg"] = {"schema": file_schema}
        content["text/csv"] = {"schema": {"type": "string"}}
    description = (f"Images: multipart field '{field}' (or a raw image/* body). Signals: a JSON "
                   f"array [channel][time], or CSV (one column per channel) as field '{field}' or "
                   "a text/csv body.")
    if many:
        description = ("Several inputs: multipart fields 'files' (images or CSV signals), or a JSON "
                       "array of signals [case][channel][time].")
    return {"required": True, "description": description, "content": content}
