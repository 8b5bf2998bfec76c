"""Image features for drift checks and classifiers: statistics per frame and a PCA embedding, for a batch at once.

`image_statistics` computes, for a uint8 or float batch (N, H, W) with pixels scaled to
[0, 1], one number per frame and statistic (`STAT_COLUMNS`):

- `brightness`: the mean pixel; `contrast`: the pixels' standard deviation;
- `sharpness`: the variance of the 4-neighbour Laplacian over the interior (falls when out of focus);
- `gradient`: the mean absolute difference between neighbouring pixels (edge strength);
- `dark_share` / `bright_share`: the share of pixels below 0.25 / above 0.75 (clipping, lens dirt).

`Embedding` is a PCA of block-averaged pixels (a 64x64 frame averaged 4x4 to 16x16) fitted on
reference frames with numpy's SVD and kept as plain arrays (`to_dict` / `from_dict` round-trip
through JSON, so it can travel in a model's metadata). Its `project` is linear in the pixels:
`pixel_projection` folds the block averaging into the components, one matrix a device or an
ONNX MatMul applies to raw pixels.

`feature_table` puts both in a pandas frame of float32 columns (`brightness`, ..., `emb_00`,
`emb_01`, ...) that the drift check (`edgeloop.drift.detect.check_drift`) reads like any numeric
record fields: the column names are valid spec field names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

STAT_COLUMNS: tuple[str, ...] = ("brightness", "contrast", "sharpness", "gradient", "dark_share", "bright_share")
EMBEDDING_PREFIX = "emb_"
DEFAULT_COMPONENTS = 8
DEFAULT_BLOCK = 4
_DARK = 0.25
_BRIGHT = 0.75
_STATS_CHUNK = 32


def as_unit_float(frames: np.ndarray) -> np.ndarray:
    """A batch (N, H, W) as float32 in [0, 1]: uint8 divided by 255, floats as they are."""
    batch = np.asarray(frames)
    if batch.ndim == 2:
        batch = batch[np.newaxis]
    if batch.ndim != 3:
        raise ValueError(f"frames must be a batch (N, H, W), got shape {batch.shape}")
    if batch.dtype == np.uint8:
        return batch.astype(np.float32) / np.float32(255.0)
    return batch.astype(np.float32, copy=False)


def laplacian(batch: np.ndarray) -> np.ndarray:
    """The 4-neighbour Laplacian of each frame's interior: (N, H-2, W-2), float64."""
    batch = np.asarray(batch, dtype=np.float64)
    centre = batch[:, 1:-1, 1:-1]
    neighbours = batch[:, :-2, 1:-1] + batch[:, 2:, 1:-1] + batch[:, 1:-1, :-2] + batch[:, 1:-1, 2:]
    return np.asarray(neighbours - 4.0 * centre, dtype=np.float64)


def image_statistics(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Each statistic of `STAT_COLUMNS` for every frame of a batch (N, H, W), as float32 arrays of length N.

    Computed in float64 and rounded once at the end, as the ONNX graph of `edgeloop.vision.model` does, so
    the two agree to float32 rounding.
    """
    batch = as_unit_float(frames)
    if batch.shape[1] < 3 or batch.shape[2] < 3:
        raise ValueError(f"frames must be at least 3x3 pixels, got {batch.shape[1:]}")
    # a few frames at a time: their float64 temporaries stay in the CPU cache (3x faster than one pass over all)
    parts = [_statistics(batch[i : i + _STATS_CHUNK]) for i in range(0, len(batch), _STATS_CHUNK)]
    return {
        name: np.concatenate([p[name] for p in parts]) if parts else np.zeros(0, dtype=np.float32)
        for name in STAT_COLUMNS
    }


def _statistics(chunk: np.ndarray) -> dict[str, np.ndarray]:
    batch = chunk.astype(np.float64)
    flat = batch.reshape(len(batch), -1)
    lap = laplacian(batch).reshape(len(batch), -1)
    gradient = (np.abs(np.diff(batch, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(batch, axis=2)).mean(axis=(1, 2))) / 2
    out = {
        "brightness": flat.mean(axis=1),
        "contrast": flat.std(axis=1),
        "sharpness": lap.var(axis=1),
        "gradient": gradient,
        "dark_share": (flat < _DARK).mean(axis=1),
        "bright_share": (flat > _BRIGHT).mean(axis=1),
    }
    return {name: np.asarray(out[name], dtype=np.float32) for name in STAT_COLUMNS}


def block_average(frames: np.ndarray, block: int = DEFAULT_BLOCK) -> np.ndarray:
    """Each frame averaged over block x block tiles and flattened: (N, (H/block) * (W/block)) float64."""
    batch = as_unit_float(frames)
    n, height, width = batch.shape
    if height % block or width % block:
        raise ValueError(f"frames of {height}x{width} pixels do not split into {block}x{block} blocks")
    tiles = batch.reshape(n, height // block, block, width // block, block)
    return np.asarray(tiles.mean(axis=(2, 4), dtype=np.float64).reshape(n, -1), dtype=np.float64)


def embedding_columns(components: int = DEFAULT_COMPONENTS) -> tuple[str, ...]:
    return tuple(f"{EMBEDDING_PREFIX}{i:02d}" for i in range(components))


@dataclass(frozen=True)
class Embedding:
    """A PCA of block-averaged frames: `mean` (D,) and `components` (K, D) of D = (H/block)*(W/block) values."""

    shape: tuple[int, int]
    block: int
    mean: np.ndarray
    components: np.ndarray

    @property
    def columns(self) -> tuple[str, ...]:
        return embedding_columns(len(self.components))

    def project(self, frames: np.ndarray) -> np.ndarray:
        """The embedding of each frame: (N, K) float32."""
        batch = as_unit_float(frames)
        if batch.shape[1:] != self.shape:
            raise ValueError(f"the embedding was fitted on {self.shape} frames, got {batch.shape[1:]}")
        centred = block_average(batch, self.block) - self.mean.astype(np.float64)
        return np.asarray(centred @ self.components.T.astype(np.float64), dtype=np.float32)

    def pixel_projection(self) -> tuple[np.ndarray, np.ndarray]:
        """`(matrix, bias)` such that `pixels.reshape(N, H*W) @ matrix + bias == project(pixels)` (float64).

        The block average is linear: each pixel contributes 1/block^2 of its tile's value.
        """
        height, width = self.shape
        tiles = self.components.astype(np.float64).reshape(-1, height // self.block, width // self.block)
        spread = np.repeat(np.repeat(tiles, self.block, axis=1), self.block, axis=2) / self.block**2
        matrix = spread.reshape(len(self.components), height * width).T
        bias = -(self.mean.astype(np.float64) @ self.components.T.astype(np.float64))
        return matrix, bias

    def truncated(self, components: int) -> Embedding:
        """The first `components` components only (a PCA's leading components do not depend on how many were kept)."""
        if not 0 < components <= len(self.components):
            raise ValueError(f"the embedding has {len(self.components)} components, not {components}")
        return Embedding(self.shape, self.block, self.mean, self.components[:components])

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (JSON): what a model's metadata carries."""
        return {
            "shape": list(self.shape),
            "block": self.block,
            "mean": [float(v) for v in self.mean],
            "components": [[float(v) for v in row] for row in self.components],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Embedding:
        """The embedding `to_dict` wrote; ValueError naming the field when it is not one."""
        try:
            height, width = (int(v) for v in raw["shape"])
            block = int(raw["block"])
            mean = np.asarray(raw["mean"], dtype=np.float32)
            components = np.asarray(raw["components"], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an embedding: {type(exc).__name__} {exc}") from None
        dims = (height // max(block, 1)) * (width // max(block, 1))
        if block < 1 or mean.shape != (dims,) or components.ndim != 2 or components.shape[1] != dims:
            raise ValueError(
                f"embedding arrays do not fit {height}x{width} frames in {block}x{block} blocks: "
                f"mean {mean.shape}, components {components.shape}"
            )
        return cls((height, width), block, mean, components)


def fit_embedding(frames: np.ndarray, components: int = DEFAULT_COMPONENTS, *, block: int = DEFAULT_BLOCK) -> Embedding:
    """A PCA of the reference frames' block averages (numpy SVD), with a fixed sign per component.

    Each component's sign makes its largest absolute weight positive, so the same frames give
    the same embedding whatever sign the SVD routine returns.
    """
    batch = as_unit_float(frames)
    reduced = block_average(batch, block)
    if len(reduced) < 2 or not 0 < components <= min(reduced.shape):
        raise ValueError(
            f"{components} components need at least that many frames and values per frame, got {reduced.shape}"
        )
    from threadpoolctl import threadpool_limits

    mean = reduced.mean(axis=0)
    # one BLAS thread: the matrix is small, and on a busy machine OpenBLAS's spinning threads made it 100x slower
    with threadpool_limits(limits=1, user_api="blas"):
        _, _, vt = np.linalg.svd(reduced - mean, full_matrices=False)
    top = vt[:components]
    signs = np.sign(top[np.arange(components), np.abs(top).argmax(axis=1)])
    return Embedding(
        (int(batch.shape[1]), int(batch.shape[2])),
        block,
        mean.astype(np.float32),
        (top * signs[:, None]).astype(np.float32),
    )


def feature_matrix(frames: np.ndarray, embedding: Embedding) -> tuple[np.ndarray, tuple[str, ...]]:
    """Statistics then embedding of each frame as one float32 matrix (N, len(columns)), and its columns."""
    unit = as_unit_float(frames)  # once: both steps take float32 frames as they are
    stats = image_statistics(unit)
    columns = (*STAT_COLUMNS, *embedding.columns)
    matrix = np.column_stack([*(stats[c] for c in STAT_COLUMNS), embedding.project(unit)])
    return matrix.astype(np.float32), columns


def feature_table(
    frames: np.ndarray, embedding: Embedding, extra: Mapping[str, Sequence[Any]] | None = None
) -> pd.DataFrame:
    """The frames' features as a frame of float32 columns (statistics, then `emb_..`), plus `extra` columns
    (e.g. device and group ids, timestamps, predictions) in front, for a drift check."""
    import pandas as pd

    matrix, columns = feature_matrix(frames, embedding)
    table = pd.DataFrame(matrix, columns=list(columns))
    for position, (name, values) in enumerate((extra or {}).items()):
        if name in table:
            raise ValueError(f"extra column '{name}' clashes with a feature column")
        table.insert(position, name, list(values))
    return table
