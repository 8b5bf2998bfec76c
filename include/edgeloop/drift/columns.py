"""Which record fields a drift check reads, resolved once from the spec's field roles."""

from __future__ import annotations

from dataclasses import dataclass

from edgeloop.spec import PipelineSpec

# Meta fields whose name says they carry a version (firmware, sensor package, ...) are health context.
_CONTEXT_HINTS = ("firmware", "version")


class MissingColumnsError(ValueError):
    """Columns the drift check needs are not in a data object or frame."""

    def __init__(self, where: str, missing: list[str]):
        self.where = where
        self.missing = sorted(missing)
        super().__init__(f"{where}: missing column(s) {self.missing}")


@dataclass(frozen=True)
class DriftColumns:
    """Field names by role; `None` when the spec has no field with that role."""

    features: tuple[str, ...]
    group: str | None
    timestamp: str | None
    model_version: str | None = None
    prediction: str | None = None
    confidence: str | None = None
    device: str | None = None
    context: tuple[str, ...] = ()
    categorical_features: tuple[str, ...] = ()
    frame: tuple[str, ...] = ()  # a camera pipeline's frame key and digest: the report's example frames

    @property
    def required(self) -> tuple[str, ...]:
        """Columns without which the check cannot run: the checked features, group id and timestamp."""
        named = (self.group, self.timestamp)
        return self.features + tuple(c for c in named if c is not None)

    @property
    def optional(self) -> tuple[str, ...]:
        """Columns that add signals (prediction drift, confidence, health context) when present."""
        named = (self.model_version, self.prediction, self.confidence, self.device, *self.context, *self.frame)
        seen: list[str] = []
        for column in named:
            if column is not None and column not in seen and column not in self.required:
                seen.append(column)
        return tuple(seen)

    @property
    def projection(self) -> tuple[str, ...]:
        return self.required + self.optional


def drift_columns(spec: PipelineSpec) -> DriftColumns:
    """The columns a drift check of this pipeline reads (spec.drift.columns, or every feature)."""
    features = tuple(spec.drift.columns or spec.features)
    model_version = spec.field_with_role("model_version")
    context = [c for c in (model_version, spec.field_with_role("config_version")) if c is not None]
    for field in spec.schema_:
        if field.role == "config_version" and field.name not in context:
            context.append(field.name)
        if field.role == "meta" and any(h in field.name.lower() for h in _CONTEXT_HINTS):
            context.append(field.name)
    return DriftColumns(
        features=features,
        group=spec.field_with_role("group_id"),
        timestamp=spec.field_with_role("timestamp"),
        model_version=model_version,
        prediction=spec.field_with_role("prediction"),
        confidence=spec.field_with_role("confidence"),
        device=spec.field_with_role("device_id"),
        context=tuple(context),
        categorical_features=tuple(f.name for f in spec.schema_ if f.name in features and f.type in ("string", "bool")),
        frame=_frame_columns(spec),
    )


def _frame_columns(spec: PipelineSpec) -> tuple[str, ...]:
    """A camera pipeline's frame key and digest fields (as training reads them); () for any other pipeline."""
    if spec.field_with_role("image_ref") is None:
        return ()
    from edgeloop.training.errors import DatasetError
    from edgeloop.training.images import frame_columns

    try:
        return frame_columns(spec) or ()
    except DatasetError:  # a frame key without a digest field: frames cannot be checked, so none are shown
        return ()
