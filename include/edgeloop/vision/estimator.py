"""The image classifier as a scikit-learn estimator over pixel rows, for the training stage's search and refit.

`edgeloop.vision.model.train_image_classifier` takes frames (N, H, W uint8); the training stage
hands estimators tables. `FrameClassifier` takes the frame's pixels as table rows (N, H*W, in
[0, 1] as `pixel_rows` makes them), so the same search, refit, parity, edge-fitness and
evaluation code trains it; `C` is the logistic regression's regularisation, the parameter the
spec's search space names. Imports scikit-learn at the top: import this module inside functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from edgeloop.vision.features import Embedding
from edgeloop.vision.model import MODEL_COMPONENTS, ImageClassifier, train_image_classifier


class FrameClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """`train_image_classifier` over pixel rows; `classifier_` is the fitted `ImageClassifier`.

    With `embedding` (the pipeline's, `edgeloop.training.images.seed_embedding`) the classifier
    projects through it; without one it fits its own on the training frames.
    """

    def __init__(
        self,
        C: float = 1.0,
        components: int = MODEL_COMPONENTS,
        shape: tuple[int, int] = (64, 64),
        random_state: int = 0,
        embedding: Embedding | None = None,
    ) -> None:
        self.C = C
        self.components = components
        self.shape = shape
        self.random_state = random_state
        self.embedding = embedding

    def frames(self, rows: Any) -> np.ndarray:
        """Pixel rows back as uint8 frames (N, H, W)."""
        pixels = np.asarray(rows, dtype=np.float64).reshape(-1, *self.shape)
        return np.asarray(np.clip(np.rint(pixels * 255.0), 0, 255), dtype=np.uint8)

    def fit(self, rows: Any, labels: Any) -> FrameClassifier:
        self.classifier_: ImageClassifier = train_image_classifier(
            self.frames(rows),
            [str(label) for label in labels],
            components=self.components,
            regularisation=float(self.C),
            random_state=self.random_state,
            embedding=self.embedding,
        )
        self.classes_ = np.array(self.classifier_.labels)
        return self

    def predict_proba(self, rows: Any) -> np.ndarray:
        return self.classifier_.predict_proba(self.frames(rows))

    def predict(self, rows: Any) -> np.ndarray:
        return np.asarray(self.classes_[self.predict_proba(rows).argmax(axis=1)])
