"""Frames of parts on a production line, generated procedurally and deterministically, and their claim-check keys.

A frame is a small grayscale image (64x64 by default) of one machined plate with two
holes, seen by a camera above the line. The plate is `ok` or has one defect:
`scratch` (a thin dark line), `dent` (a soft shaded hollow) or `missing_hole` (one of
the two holes was never drilled). Position, size and defect geometry vary per frame.

What the camera does to the scene is a `CameraConditions` per edge group: lighting
(gain and offset), focus (Gaussian blur), sensor noise and lens dirt (soft dark spots
at fixed places). A drift injection is a change of a group's conditions
(`inject_drift`): the parts stay the same, the camera sees them differently.

Everything is seeded by (device, frame index) through sha256, so the same inputs give
the same pixels on any machine, and `encode_png` gives the same bytes for the same
pixels: it is a minimal PNG writer (8-bit grayscale, filter 0, zlib level 6) on the
standard library, not an imaging library whose output may change between versions.
That keeps a frame's content address stable between a device and the cloud
(`edgeloop.vision.claim` stores frames under it).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from edgeloop.contract.frame import PNG_SIGNATURE

LABELS: tuple[str, ...] = ("ok", "scratch", "dent", "missing_hole")
DEFAULT_SIZE = 64
# ok is the usual case on a line; the defects share the rest.
DEFAULT_CLASS_WEIGHTS: tuple[float, ...] = (0.4, 0.2, 0.2, 0.2)
_BACKGROUND = 0.12
_PLATE = 0.72
_HOLE = 0.05
_PNG_LEVEL = 6


@dataclass(frozen=True)
class CameraConditions:
    """How one group's cameras see the line: out = clip(gain * scene + offset), blurred, dirtied, noisy.

    `blur` is the Gaussian sigma in pixels (0: in focus), `noise` the sensor noise's standard
    deviation (pixel values in [0, 1]), `dirt` the opacity of the lens dirt spots (0: clean),
    placed by `dirt_seed`.
    """

    gain: float = 1.0
    offset: float = 0.0
    blur: float = 0.0
    noise: float = 0.02
    dirt: float = 0.0
    dirt_seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.gain <= 4:
            raise ValueError(f"camera gain {self.gain} is not in (0, 4]")
        if not -1 <= self.offset <= 1:
            raise ValueError(f"camera offset {self.offset} is not in [-1, 1]")
        if not 0 <= self.blur <= 8:
            raise ValueError(f"camera blur {self.blur} is not in [0, 8] pixels")
        if not 0 <= self.noise <= 0.5:
            raise ValueError(f"camera noise {self.noise} is not in [0, 0.5]")
        if not 0 <= self.dirt <= 1:
            raise ValueError(f"camera dirt {self.dirt} is not in [0, 1]")


# The camera changes a drift injection makes, by name (the lighting one is the demo's).
DRIFTS: dict[str, Callable[[CameraConditions], CameraConditions]] = {
    "lighting": lambda c: replace(c, gain=0.55, offset=0.18),  # a lamp fails: dimmer, with more stray light
    "focus": lambda c: replace(c, blur=1.6),
    "lens_dirt": lambda c: replace(c, dirt=0.6),
}


def group_conditions(group: str) -> CameraConditions:
    """A group's cameras before any drift: small, fixed differences between groups (sha256 of the name)."""
    rng = np.random.default_rng(_seed("group", group))
    return CameraConditions(
        gain=round(float(rng.uniform(0.95, 1.05)), 4),
        offset=round(float(rng.uniform(-0.02, 0.02)), 4),
        blur=round(float(rng.uniform(0.0, 0.3)), 4),
        noise=round(float(rng.uniform(0.015, 0.025)), 4),
        dirt_seed=int(rng.integers(0, 2**31)),
    )


def inject_drift(conditions: CameraConditions, kind: str) -> CameraConditions:
    """The conditions after a named drift (`DRIFTS`): lighting, focus or lens_dirt."""
    try:
        change = DRIFTS[kind]
    except KeyError:
        raise ValueError(f"unknown camera drift '{kind}' (one of {', '.join(DRIFTS)})") from None
    return change(conditions)


@dataclass(frozen=True)
class Frame:
    """One generated frame: who took it, its true label and its pixels (uint8, H x W)."""

    device: str
    index: int
    label: str
    pixels: np.ndarray


def _seed(*parts: object) -> int:
    """A 128-bit seed from the parts' text: the same parts give the same seed on every machine."""
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:16], "big")


def frame_label(device: str, index: int, weights: Sequence[float] = DEFAULT_CLASS_WEIGHTS) -> str:
    """The true label of a device's frame `index` (the part on the belt does not depend on the camera)."""
    rng = np.random.default_rng(_seed("label", device, index))
    p = np.asarray(weights, dtype=np.float64)
    if p.shape != (len(LABELS),) or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"class weights must be {len(LABELS)} non-negative numbers, got {list(weights)}")
    return LABELS[int(rng.choice(len(LABELS), p=p / p.sum()))]


def render_part(label: str, rng: np.random.Generator, size: int = DEFAULT_SIZE) -> np.ndarray:
    """The scene as the camera would see it with perfect optics: float64 in [0, 1], size x size."""
    if label not in LABELS:
        raise ValueError(f"unknown part label '{label}' (one of {', '.join(LABELS)})")
    s = size / 64.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = size / 2 + rng.uniform(-3, 3) * s, size / 2 + rng.uniform(-3, 3) * s
    half_w, half_h = rng.uniform(20, 23) * s, rng.uniform(15, 18) * s
    # a plate with soft edges (a rounded box by a smooth step on the box distance)
    box = np.maximum(np.abs(xx - cx) - half_w, np.abs(yy - cy) - half_h)
    plate = np.clip(0.5 - box, 0.0, 1.0)
    scene = _BACKGROUND + (_PLATE + rng.uniform(-0.04, 0.04) - _BACKGROUND) * plate
    scene += 0.04 * (xx - cx) / size * plate  # a little shading across the plate
    holes = [(cy, cx - half_w + 9 * s), (cy, cx + half_w - 9 * s)]
    if label == "missing_hole":
        holes.pop(int(rng.integers(0, 2)))
    radius = rng.uniform(4.0, 5.0) * s
    for hy, hx in holes:
        inside = np.clip(radius + 0.5 - np.hypot(yy - hy, xx - hx), 0.0, 1.0)
        scene = scene * (1 - inside) + _HOLE * inside
    if label == "scratch":
        scene = _scratch(scene, rng, yy, xx, (cy, cx), s)
    elif label == "dent":
        dy, dx = cy + rng.uniform(-6, 6) * s, cx + rng.uniform(-8, 8) * s
        sigma = rng.uniform(3.5, 5.0) * s
        dist2 = (yy - dy) ** 2 + (xx - dx) ** 2
        hollow = np.exp(-dist2 / (2 * sigma**2))
        rim = np.exp(-((yy - dy + sigma * 0.8) ** 2 + (xx - dx) ** 2) / (2 * (sigma * 0.6) ** 2))
        scene = scene - 0.3 * hollow * plate + 0.12 * rim * plate
    return np.asarray(np.clip(scene, 0.0, 1.0), dtype=np.float64)


def _scratch(
    scene: np.ndarray, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, centre: tuple[float, float], s: float
) -> np.ndarray:
    """A thin dark line segment across the plate at a random angle (anti-aliased by distance)."""
    angle = rng.uniform(0, np.pi)
    length = rng.uniform(18, 28) * s
    my, mx = centre[0] + rng.uniform(-5, 5) * s, centre[1] + rng.uniform(-6, 6) * s
    dy, dx = np.sin(angle), np.cos(angle)
    along = (yy - my) * dy + (xx - mx) * dx
    across = np.abs(-(yy - my) * dx + (xx - mx) * dy)
    on_line = np.clip(1.1 * s - across, 0.0, 1.0) * (np.abs(along) <= length / 2)
    return np.asarray(scene * (1 - 0.75 * on_line), dtype=np.float64)


def apply_camera(scene: np.ndarray, conditions: CameraConditions, rng: np.random.Generator) -> np.ndarray:
    """The scene through a camera: lighting, lens dirt, focus, then sensor noise; uint8 pixels."""
    image = conditions.gain * scene + conditions.offset
    if conditions.dirt > 0:
        image = image * (1 - conditions.dirt * lens_dirt(scene.shape, conditions.dirt_seed))
    if conditions.blur > 0:
        image = gaussian_blur(image, conditions.blur)
    if conditions.noise > 0:
        image = image + rng.normal(0.0, conditions.noise, size=image.shape)
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def lens_dirt(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Where dirt on a lens darkens the image, in [0, 1]: a few soft spots, always the same for one seed."""
    rng = np.random.default_rng(_seed("dirt", seed))
    height, width = shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    mask = np.zeros(shape, dtype=np.float64)
    for _ in range(int(rng.integers(3, 6))):
        y, x = rng.uniform(0, height), rng.uniform(0, width)
        sigma = rng.uniform(0.06, 0.14) * max(height, width)
        mask = np.maximum(mask, np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2)))
    return mask


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """A separable Gaussian blur (kernel radius 3 sigma, edges repeated) of a 2-d array."""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(taps**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(image, radius, mode="edge")
    height, width = image.shape
    rows = np.zeros((height + 2 * radius, width), dtype=np.float64)
    for weight, start in zip(kernel, range(2 * radius + 1), strict=True):
        rows += weight * padded[:, start : start + width]
    out = np.zeros((height, width), dtype=np.float64)
    for weight, start in zip(kernel, range(2 * radius + 1), strict=True):
        out += weight * rows[start : start + height, :]
    return out


def make_frame(
    device: str,
    index: int,
    conditions: CameraConditions,
    *,
    size: int = DEFAULT_SIZE,
    weights: Sequence[float] = DEFAULT_CLASS_WEIGHTS,
) -> Frame:
    """Frame `index` of `device` under `conditions`: the same arguments give the same pixels."""
    label = frame_label(device, index, weights)
    rng = np.random.default_rng(_seed("frame", device, index))
    scene = render_part(label, rng, size)
    pixels = apply_camera(scene, conditions, np.random.default_rng(_seed("noise", device, index)))
    return Frame(device=device, index=index, label=label, pixels=pixels)


def make_frames(
    device: str,
    start: int,
    count: int,
    conditions: CameraConditions,
    *,
    size: int = DEFAULT_SIZE,
    weights: Sequence[float] = DEFAULT_CLASS_WEIGHTS,
) -> tuple[np.ndarray, list[str]]:
    """Frames start..start+count-1 of one device as a uint8 batch (count, size, size) and their labels."""
    frames = [make_frame(device, i, conditions, size=size, weights=weights) for i in range(start, start + count)]
    pixels = np.stack([f.pixels for f in frames]) if frames else np.zeros((0, size, size), dtype=np.uint8)
    return pixels, [f.label for f in frames]


# --- PNG ---------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(pixels: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of a uint8 (H, W) array: no filter, zlib level 6, no ancillary chunks."""
    if pixels.ndim != 2 or pixels.dtype != np.uint8 or 0 in pixels.shape:
        raise ValueError(f"a PNG frame needs a non-empty uint8 (H, W) array, got {pixels.dtype} {pixels.shape}")
    height, width = pixels.shape
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray, deflate, filter 0, no interlace
    rows = np.zeros((height, width + 1), dtype=np.uint8)  # each row starts with its filter type (0: none)
    rows[:, 1:] = pixels
    body = zlib.compress(rows.tobytes(), _PNG_LEVEL)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def decode_png(data: bytes) -> np.ndarray:
    """The pixels of a grayscale PNG as uint8 (H, W) (Pillow: any PNG a camera may send, not only ours)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if image.format != "PNG":
            raise ValueError(f"not a PNG image (format {image.format})")
        return np.asarray(image.convert("L"), dtype=np.uint8)
