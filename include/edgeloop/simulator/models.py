"""Models that simulated devices run: a provider interface, loaders, fault injection.

A model version is a registry version number as a string. Version "0" is the
built-in baseline, so a fleet runs before the first training: for sensors a rule model
that looks only at the vibration level (ISO 10816 zones) for the demo profile, or at
the nearest class centre of the generic profile; for cameras (`CameraModels`) an image
classifier fitted on the seed frames, whose inputs are a frame's pixels. Any other version is the ONNX file its
signed assignment names, fetched and checked against its sha256 and size, loaded in
onnxruntime by the agent's own loader (`onnx_provider`), and cached per version. No
pickle is ever loaded for a device.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from edgeloop.contract.artifact import ArtifactRef
from edgeloop.contract.messages import BASELINE_VERSION
from edgeloop.spec import PipelineSpec
from edgeloop.training.sensors import SensorProfile

log = logging.getLogger(__name__)

ModelFault = Literal["crash", "bad", "load_error"]
MODEL_FAULTS: tuple[ModelFault, ...] = ("crash", "bad", "load_error")


class ModelLoadError(RuntimeError):
    """A model version could not be loaded; the message names the version and the cause."""


class InferenceError(RuntimeError):
    """A model raised while predicting."""


class EdgeModel(Protocol):
    """What a device needs from a model: class probabilities for rows of spec features."""

    @property
    def version(self) -> str: ...

    @property
    def labels(self) -> Sequence[str]: ...

    def predict_proba(self, features: np.ndarray) -> np.ndarray: ...


class ModelProvider(Protocol):
    """Loads model versions (cached per version) and names the version new devices start with."""

    def load(self, version: str) -> EdgeModel: ...

    def default_version(self) -> str: ...

    def offer(self, version: str, artifact: ArtifactRef) -> None:
        """An authorised assignment names where `version`'s artifact is (loaders that fetch use it)."""


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True), dtype=np.float64)


@dataclass
class BaselineRuleModel:
    """The built-in rule model (version "0").

    Demo profile: the class whose typical RMS vibration level is nearest (in log
    units) to the reading, a rule a maintenance engineer would write from ISO 10816.
    Generic profile: the nearest class centre over standardised features.
    """

    profile: SensorProfile
    version: str = BASELINE_VERSION

    @property
    def labels(self) -> Sequence[str]:
        return self.profile.labels

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        if self.profile.crest_of is not None:
            rms = self.profile.crest_of[1]
            centres = self.profile.means[:, rms]
            level = np.log(np.maximum(features[:, rms], 1e-6))[:, None]
            return _softmax(-6.0 * (level - centres[None, :]) ** 2)
        scale = self.profile.stds.mean(axis=0)
        distances = (((features[:, None, :] - self.profile.means[None, :, :]) / scale) ** 2).mean(axis=2)
        return _softmax(-2.0 * distances)


@dataclass
class _FaultyModel:
    """A wrapper that answers like the model it wraps, apart from its predictions."""

    inner: EdgeModel

    @property
    def version(self) -> str:
        return self.inner.version

    @property
    def labels(self) -> Sequence[str]:
        return self.inner.labels

    @property
    def image_columns(self) -> list[str]:
        """An image model's feature columns (none for a tabular one), as the wrapped model has them."""
        return list(getattr(self.inner, "image_columns", []))


class CrashingModel(_FaultyModel):
    """Fault injection: a model version that raises on every prediction."""

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        raise InferenceError(f"model version {self.version}: injected crash (segmentation fault in inference)")

    def predict_with_features(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.predict_proba(rows), rows


class BadModel(_FaultyModel):
    """Fault injection: a model version that predicts the wrong class with low confidence."""

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return self._spoil(self.inner.predict_proba(features))

    def predict_with_features(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """An image model's spoilt probabilities; the frame's features stay what the camera computed."""
        proba, features = self.inner.predict_with_features(rows)  # type: ignore[attr-defined]
        return self._spoil(proba), features

    @staticmethod
    def _spoil(proba: np.ndarray) -> np.ndarray:
        uniform = np.full_like(proba, 1.0 / proba.shape[1])
        return 0.2 * np.roll(proba, 1, axis=1) + 0.8 * uniform


class CachedModelProvider:
    """A provider from a loader function: each version is loaded once and kept.

    `faults` maps versions to injected faults: "load_error" (loading fails),
    "crash" (every prediction raises), "bad" (wrong, unconfident predictions).
    Version "0" is always the baseline: `baseline(version)`, by default the rule model.
    Safe to call from several threads.
    """

    def __init__(
        self,
        profile: SensorProfile,
        loader: Callable[[str], EdgeModel] | None = None,
        *,
        default: Callable[[], str] | None = None,
        faults: Mapping[str, ModelFault] | None = None,
        baseline: Callable[[str], EdgeModel] | None = None,
    ) -> None:
        self.profile = profile
        self._loader = loader
        self._baseline = baseline or (lambda version: BaselineRuleModel(profile, version=version))
        self._default = default
        self._faults = dict(faults or {})
        self._cache: dict[str, EdgeModel] = {}
        self._lock = threading.Lock()
        self.artifacts: dict[str, ArtifactRef] = {}  # version -> artifact, from authorised assignments
        unknown = sorted(set(self._faults.values()) - set(MODEL_FAULTS))
        if unknown:
            raise ValueError(f"faults: {unknown} are not faults, expected {list(MODEL_FAULTS)}")

    def default_version(self) -> str:
        return self._default() if self._default is not None else BASELINE_VERSION

    def offer(self, version: str, artifact: ArtifactRef) -> None:
        with self._lock:
            self.artifacts[version] = artifact

    def load(self, version: str) -> EdgeModel:
        with self._lock:
            cached = self._cache.get(version)
        if cached is not None:
            return cached
        fault = self._faults.get(version)
        if fault == "load_error":
            raise ModelLoadError(f"model version {version}: injected load failure (corrupt artifact)")
        if version == BASELINE_VERSION:
            model: EdgeModel = self._baseline(version)
        elif self._loader is None:
            raise ModelLoadError(f"model version {version}: no registry configured (only the baseline '0' exists)")
        else:
            model = self._loader(version)
        if fault == "crash":
            model = CrashingModel(model)
        elif fault == "bad":
            model = BadModel(model)
        with self._lock:
            self._cache[version] = model
        return model


def mlflow_champion(model_name: str, tracking_uri: str | None = None, alias: str = "champion") -> Callable[[], str]:
    """The version the registry alias points at, or the baseline "0" when nothing is registered yet."""

    def default() -> str:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            return str(MlflowClient(tracking_uri=tracking_uri).get_model_version_by_alias(model_name, alias).version)
        except MlflowException as exc:
            log.info("no %s alias for model %s (%s): devices start on the baseline", alias, model_name, exc)
            return BASELINE_VERSION

    return default


@dataclass(frozen=True)
class CameraModels:
    """What a camera pipeline's devices load: models whose inputs are a frame's pixels, an image baseline."""

    baseline: bytes  # the ONNX file of version "0" (`edgeloop.simulator.baseline.camera_baseline_onnx`)
    features: tuple[str, ...]  # the models' inputs: the frame's pixels, `px_<row>_<col>`

    def load(self, version: str) -> EdgeModel:
        """The baseline file loaded, self-tested, as `version`, by the device's own loader."""
        from edgeloop.edge.runtime import load_model

        return load_model(self.baseline, version, self.features)


def camera_models(spec: PipelineSpec) -> CameraModels | None:
    """A camera pipeline's models (spec with an `image_ref` field), or None for a sensor pipeline."""
    if spec.field_with_role("image_ref") is None:
        return None
    from edgeloop.simulator.baseline import camera_baseline_onnx
    from edgeloop.vision.model import image_metadata, pixel_features

    data = camera_baseline_onnx(spec)
    height, width = image_metadata(data)["shape"]
    return CameraModels(data, pixel_features((int(height), int(width))))


def baseline_provider(
    profile: SensorProfile,
    *,
    faults: Mapping[str, ModelFault] | None = None,
    every_version: bool = False,
    cameras: CameraModels | None = None,
) -> CachedModelProvider:
    """The baseline model without a registry: the rule model, or with `cameras` the image baseline.

    Version "0" is the baseline; any other version fails to load, unless
    `every_version` is set: then every version is a copy of the baseline (for
    simulations and benchmarks of the control plane without a registry).
    """

    def rule_model(version: str) -> EdgeModel:
        return BaselineRuleModel(profile, version=version)

    baseline = cameras.load if cameras is not None else rule_model
    return CachedModelProvider(profile, baseline if every_version else None, faults=faults, baseline=baseline)


def onnx_loader(
    provider_artifacts: Mapping[str, ArtifactRef],
    features: Sequence[str],
    resolve: Callable[[str], ArtifactRef] | None = None,
) -> Callable[[str], EdgeModel]:
    """A loader that runs the device's own code: fetch the artifact, check size and digest, load, self-test.

    The artifact comes from the assignment that named the version (`provider_artifacts`,
    filled by `offer`), or, for a version no assignment in sight names (a fleet that
    starts on the champion), from `resolve` (the cloud side: the registry's record).
    """
    from edgeloop.edge.fetch import FetchFailed, fetch_artifact
    from edgeloop.edge.runtime import ModelRefused, load_model

    def load(version: str) -> EdgeModel:
        ref = provider_artifacts.get(version)
        try:
            if ref is None:
                if resolve is None:
                    raise ModelLoadError(f"model version {version}: no assignment names its artifact")
                ref = resolve(version)
            return load_model(fetch_artifact(ref), version, features)
        except (FetchFailed, ModelRefused) as exc:
            raise ModelLoadError(str(exc)) from None

    return load


def onnx_provider(
    profile: SensorProfile,
    *,
    resolve: Callable[[str], ArtifactRef] | None = None,
    default: Callable[[], str] | None = None,
    faults: Mapping[str, ModelFault] | None = None,
    cameras: CameraModels | None = None,
) -> CachedModelProvider:
    """Models as devices get them: ONNX artifacts named by signed assignments; the baseline "0" built in.

    With `cameras` the models take a frame's pixels and the baseline is the image baseline.
    """
    from edgeloop.edge.runtime import load_model
    from edgeloop.simulator.baseline import baseline_onnx

    provider = CachedModelProvider(profile, None, default=default, faults=faults)
    if cameras is not None:
        provider._loader = onnx_loader(provider.artifacts, cameras.features, resolve)
        provider._cache[BASELINE_VERSION] = cameras.load(BASELINE_VERSION)
        return provider
    provider._loader = onnx_loader(provider.artifacts, profile.features, resolve)
    provider._cache[BASELINE_VERSION] = load_model(baseline_onnx(profile), BASELINE_VERSION, profile.features)
    return provider
