"""Classical restoration baselines that need no training (PROTOCOL.md).

Every table carries these next to the networks, scored on the very same
corrupted inputs. A baseline works on one image at a time, in numpy:

    baseline = get_baselines(["telea+wiener_oracle"])[0]
    restored = baseline.fn(example)  # float32 [H, W, 3] in [0, 1]

where `example` is a dict of numpy values, one element of the evaluation
pipeline: "corrupted" float [H, W, 3] in [0, 1], "mask" [H, W, 1] (1 in the
hole), "blur_kernel" [k, k] (sums to 1), "noise_sigma" float (on the [0, 1]
scale), "track" str. A baseline reads only the keys it needs and never
"clean".

Methods (`BASELINE_NAMES`) and their parameters, defaults in brackets:

| name | tracks | oracle | what it is, parameters |
|---|---|---|---|
| `identity` | all | no | the corrupted input itself |
| `telea` | inpaint | no | `cv2.inpaint`, INPAINT_TELEA, on the 8-bit image; `radius` [25] px |
| `navier_stokes` | inpaint | no | `cv2.inpaint`, INPAINT_NS; `radius` [25] px |
| `biharmonic` | inpaint | no | `skimage.restoration.inpaint_biharmonic`; none |
| `knn` | inpaint | no | the training patch whose context ring is nearest (L2); see below |
| `tv` | restore | no | `skimage.restoration.denoise_tv_chambolle`; `weight` [0.02] |
| `bm3d` | restore | yes | `bm3d.bm3d_rgb` at `sigma_scale` [1.0] x true sigma; `profile` ["np"] |
| `wiener_oracle` | restore | yes | `skimage.restoration.wiener`, true kernel; `balance` [0.1] |
| `richardson_lucy_oracle` | restore | yes | `skimage.restoration.richardson_lucy`, true kernel; `num_iter` [5] |

The defaults were picked with `tune_baseline` over `DEFAULT_GRIDS` on 24
BSDS300 *train* images at 128 x 128, corrupted as the protocol says; re-tune
on your own training examples and record the params with the results. The
cv2 methods gain little past radius 25 (radius 40: +0.05 dB at 3x the time,
0.6 s per image). BM3D takes about 2 s per 128-px image on a 2-core CPU;
the others 0.01 to 0.25 s.

Hole fillers (`FILLERS`) change only the pixels where mask == 1; the cv2
methods round the image to 8 bits for OpenCV but the known pixels are
returned untouched. Restorers (`RESTORERS`) process the whole image; the
deconvolutions pad it symmetrically (as the corruption does) by the kernel
size and crop back, so that their FFTs' circular boundary does not ring.
Wiener runs per channel. BM3D (the optional `bm3d` package, profile "np";
the package's "refilter" profile crashes in bm4d 4.2.5) returns the input
unchanged when the noise sigma is below `BM3D_MIN_SIGMA` (nothing to remove).

On the `joint` track (blur, noise, then hole) a filler and a restorer are
chained by name, "FILLER+RESTORER", e.g. "telea+wiener_oracle" or
"biharmonic+tv": the filler fills the hole of the corrupted image, then the
restorer deblurs and/or denoises the whole result. A chain is an oracle if
either part is; its params are nested, {"telea": {...}, "tv": {...}}.

`knn` (the paper's nearest-neighbour inpainting baseline) needs training
images: `make_knn_baseline(train_images, hole_size)` or
`get_baselines(["knn"], train_images=...)`. It cuts patches of side
hole_size + 2 * border_px from every training image on a grid centred on
the image centre (`positions="grid"`, step `stride_px`) or at
`patches_per_image` seeded random places (`positions="random"`), keeps the
ring of width `border_px` around the inner square as the patch's context,
and fills a hole with the inner square of the patch whose context is
nearest in L2 to the ring around the hole. Defaults: `border_px` [8],
`stride_px` [16], `patches_per_image` [16], `seed` [0]. The bank holds
4 * 3 * ((hole_size + 2 border_px)^2 - hole_size^2) bytes per patch, 27 KB
for the protocol's 64-px hole: about 50 MB for the 200 BSDS300 training
images at the defaults (9 patches per 128-px image).

Tuning (`tune_baseline`) must only ever see training examples: it picks the
grid point with the best mean PSNR on the examples it is given.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cascade_tf import metrics
from cascade_tf.config import TRACKS

BM3D_MIN_SIGMA = 1e-3  # [0, 1] scale; below it `bm3d` returns its input.

Example = Mapping[str, Any]
_Apply = Callable[[Example, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Baseline:
  """One classical method, ready to run on single examples.

  Attributes:
    name: "identity", "telea", ..., or a chain "FILLER+RESTORER".
    tracks: the protocol tracks ("inpaint", "restore", "joint") it is meant for.
    oracle: True if it is given the true blur kernel or noise sigma.
    params: the parameters it runs with, to be recorded with its results
      (nested per part for a chain).
    fn: example dict -> restored image, float32 [H, W, 3] in [0, 1].
  """

  name: str
  tracks: tuple[str, ...]
  oracle: bool
  params: Mapping[str, Any]
  fn: Callable[[Example], np.ndarray]

  def __call__(self, example: Example) -> np.ndarray:
    return self.fn(example)


# --------------------------------------------------------------------------
# Input checks shared by the methods.


def _get(example: Example, key: str, method: str) -> Any:
  if key not in example:
    raise ValueError(f"Baseline {method!r} needs example[{key!r}]; the example has "
                     f"keys {sorted(example)}.")
  return example[key]


def _image(value: Any, method: str) -> np.ndarray:
  image = np.asarray(value, dtype=np.float32)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"Baseline {method!r}: expected an image [H, W, 3], got shape "
                     f"{image.shape}.")
  return image


def _hole(example: Example, image: np.ndarray, method: str) -> np.ndarray:
  """The hole of `example` as a boolean [H, W]."""
  mask = np.asarray(_get(example, "mask", method), dtype=np.float32)
  if mask.shape != image.shape[:2] + (1,):
    raise ValueError(f"Baseline {method!r}: expected mask [H, W, 1] = "
                     f"{image.shape[:2] + (1,)}, got {mask.shape}.")
  return mask[..., 0] > 0.5


def _kernel(example: Example, method: str) -> np.ndarray:
  kernel = np.asarray(_get(example, "blur_kernel", method), dtype=np.float64)
  if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
    raise ValueError(f"Baseline {method!r}: expected a square odd blur_kernel [k, k], "
                     f"got shape {kernel.shape}.")
  return kernel / kernel.sum()


def _finish(image: np.ndarray) -> np.ndarray:
  return np.clip(image, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------
# The methods. Each builder takes its params (and the training images, used
# by knn only) and returns apply(example, image) -> image, where `image` is
# the current image: the corrupted input, or the filler's output in a chain.


def _build_identity(params, train_images) -> _Apply:
  del params, train_images
  return lambda example, image: image


def _build_cv2_inpaint(flag_name: str):
  def build(params, train_images) -> _Apply:
    del train_images
    import cv2  # Imported here: only the cv2 methods need OpenCV.
    flag = getattr(cv2, flag_name)
    radius = float(params["radius"])

    def apply(example, image):
      hole = _hole(example, image, flag_name)
      if not hole.any():
        return image
      image_u8 = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
      filled = cv2.inpaint(image_u8, hole.astype(np.uint8), radius, flag)
      return np.where(hole[..., None], filled.astype(np.float32) / 255.0, image)

    return apply

  return build


def _build_biharmonic(params, train_images) -> _Apply:
  del params, train_images
  from skimage import restoration

  def apply(example, image):
    hole = _hole(example, image, "biharmonic")
    if not hole.any():
      return image
    filled = restoration.inpaint_biharmonic(image, hole, channel_axis=-1)
    return np.where(hole[..., None], filled, image)

  return apply


def _build_push_pull(params, train_images) -> _Apply:
  """The `photo` generator's own prefill (models/layers.push_pull_fill): what G starts from."""
  del train_images
  from cascade_tf.models import layers  # pylint: disable=g-import-not-at-top
  levels = int(params["levels"])

  def apply(example, image):
    hole = _hole(example, image, "push_pull")
    if not hole.any():
      return image
    filled = np.asarray(layers.push_pull_fill(image[None], hole[None, ..., None].astype(
        np.float32), levels))[0]
    return np.where(hole[..., None], filled, image)

  return apply


def _build_tv(params, train_images) -> _Apply:
  del train_images
  from skimage import restoration
  weight = float(params["weight"])
  return lambda example, image: restoration.denoise_tv_chambolle(
      image, weight=weight, channel_axis=-1)


def bm3d_available() -> bool:
  """Whether the optional `bm3d` package is installed."""
  return importlib.util.find_spec("bm3d") is not None


def _build_bm3d(params, train_images) -> _Apply:
  del train_images
  try:
    import bm3d
  except ImportError as error:
    raise ImportError(
        "Baseline 'bm3d' needs the optional package bm3d: run `pip install bm3d`, "
        "or leave 'bm3d' out of the baseline names.") from error
  sigma_scale = float(params["sigma_scale"])
  profile = str(params["profile"])

  def apply(example, image):
    sigma = sigma_scale * float(_get(example, "noise_sigma", "bm3d"))
    if sigma < BM3D_MIN_SIGMA:
      return image
    return bm3d.bm3d_rgb(image, sigma, profile=profile)

  return apply


def _pad_for(image: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, int]:
  """Pads `image` symmetrically (edge repeated) by the kernel's side."""
  pad = kernel.shape[0]
  return np.pad(image, [(pad, pad), (pad, pad), (0, 0)], mode="symmetric"), pad


def _build_wiener(params, train_images) -> _Apply:
  del train_images
  from skimage import restoration
  balance = float(params["balance"])

  def apply(example, image):
    kernel = _kernel(example, "wiener_oracle")
    padded, pad = _pad_for(image.astype(np.float64), kernel)
    channels = [
        restoration.wiener(padded[..., c], kernel, balance, clip=False)
        for c in range(padded.shape[-1])
    ]
    return np.stack(channels, axis=-1)[pad:-pad, pad:-pad]

  return apply


def _build_richardson_lucy(params, train_images) -> _Apply:
  del train_images
  from skimage import restoration
  num_iter = int(params["num_iter"])

  def apply(example, image):
    kernel = _kernel(example, "richardson_lucy_oracle")
    padded, pad = _pad_for(np.clip(image, 0.0, 1.0).astype(np.float64), kernel)
    # A [k, k, 1] kernel blurs the three channels independently in one call.
    restored = restoration.richardson_lucy(padded, kernel[..., None], num_iter=num_iter,
                                           clip=False)
    return restored[pad:-pad, pad:-pad]

  return apply


class _KnnBank:
  """Patches of the training images, indexed by the ring around their centre."""

  def __init__(self, train_images: np.ndarray, params: Mapping[str, Any]):
    images = np.asarray(train_images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] < 1:
      raise ValueError(f"knn: expected train_images [N, H, W, 3] with N >= 1, got shape "
                       f"{images.shape}.")
    self.hole_size = int(params["hole_size"])
    self.border_px = int(params["border_px"])
    if self.hole_size < 1 or self.border_px < 1:
      raise ValueError(f"knn: hole_size={self.hole_size} and border_px={self.border_px} "
                       "must be >= 1.")
    side = self.hole_size + 2 * self.border_px
    height, width = images.shape[1:3]
    if side > min(height, width):
      raise ValueError(f"knn: a patch of hole_size + 2 * border_px = {side} px does not fit "
                       f"in the {height}x{width} training images.")
    self.images = images
    self.side = side
    ring = np.ones((side, side, 3), bool)
    ring[self.border_px:-self.border_px, self.border_px:-self.border_px] = False
    self.ring = ring

    positions = str(params["positions"])
    if positions == "grid":
      stride = int(params["stride_px"])
      if stride < 1:
        raise ValueError(f"knn: stride_px={stride} must be >= 1.")
      rows = self._centred_grid(height - side, stride)
      cols = self._centred_grid(width - side, stride)
      places = [(n, r, c) for n in range(len(images)) for r in rows for c in cols]
    elif positions == "random":
      count = int(params["patches_per_image"])
      rng = np.random.default_rng(int(params["seed"]))
      places = [(n, int(r), int(c))
                for n in range(len(images))
                for r, c in zip(rng.integers(0, height - side + 1, count),
                                rng.integers(0, width - side + 1, count))]
    else:
      raise ValueError(f"knn: positions={positions!r}: expected 'grid' or 'random'.")
    self.places = np.asarray(places, dtype=np.int64)
    self.contexts = np.stack([self._patch(images[n], r, c)[ring] for n, r, c in places])
    self.context_norms = np.einsum("ij,ij->i", self.contexts, self.contexts)

  @staticmethod
  def _centred_grid(span: int, stride: int) -> list[int]:
    """Offsets in [0, span] spaced by `stride` that include the centre span // 2."""
    centre = span // 2
    return list(range(centre % stride, span + 1, stride))

  def _patch(self, image: np.ndarray, row: int, col: int) -> np.ndarray:
    return image[row:row + self.side, col:col + self.side]

  def fill(self, example: Example, image: np.ndarray) -> np.ndarray:
    hole = _hole(example, image, "knn")
    if not hole.any():
      return image
    rows = np.flatnonzero(hole.any(axis=1))
    cols = np.flatnonzero(hole.any(axis=0))
    top, left = int(rows[0]), int(cols[0])
    if rows[-1] - top + 1 != self.hole_size or cols[-1] - left + 1 != self.hole_size:
      raise ValueError(f"knn: the bank was built for a {self.hole_size}-px square hole, but "
                       f"this hole spans {rows[-1] - top + 1}x{cols[-1] - left + 1} px.")
    row, col = top - self.border_px, left - self.border_px
    if row < 0 or col < 0 or row + self.side > image.shape[0] or col + self.side > image.shape[1]:
      raise ValueError(f"knn: the {self.border_px}-px context ring around the hole at "
                       f"({top}, {left}) leaves the {image.shape[0]}x{image.shape[1]} image; "
                       "use a smaller border_px.")
    query = self._patch(image, row, col)[self.ring]
    # argmin ||c - q||^2 = argmin ||c||^2 - 2 c.q: one matrix-vector product.
    nearest = int(np.argmin(self.context_norms - 2.0 * (self.contexts @ query)))
    n, r, c = self.places[nearest]
    source = self._patch(self.images[n], r, c)
    inner = slice(self.border_px, self.border_px + self.hole_size)
    out = image.copy()
    window = (slice(top, top + self.hole_size), slice(left, left + self.hole_size))
    out[window] = np.where(hole[window][..., None], source[inner, inner], image[window])
    return out


def _build_knn(params, train_images) -> _Apply:
  if train_images is None:
    raise ValueError("Baseline 'knn' needs training images: call "
                     "make_knn_baseline(train_images, hole_size) or "
                     "get_baselines([...], train_images=...).")
  return _KnnBank(train_images, params).fill


@dataclasses.dataclass(frozen=True)
class _Method:
  role: str  # "identity" | "filler" | "restorer".
  oracle: bool
  defaults: Mapping[str, Any]
  grid: Mapping[str, tuple]  # Default tuning grid.
  build: Callable[[Mapping[str, Any], np.ndarray | None], _Apply]


_METHODS: dict[str, _Method] = {
    "identity": _Method("identity", False, {}, {}, _build_identity),
    "telea": _Method("filler", False, {"radius": 25}, {"radius": (5, 9, 15, 25)},
                     _build_cv2_inpaint("INPAINT_TELEA")),
    "navier_stokes": _Method("filler", False, {"radius": 25}, {"radius": (5, 9, 15, 25)},
                             _build_cv2_inpaint("INPAINT_NS")),
    "biharmonic": _Method("filler", False, {}, {}, _build_biharmonic),
    "push_pull": _Method("filler", False, {"levels": 7}, {}, _build_push_pull),
    "knn": _Method(
        "filler", False,
        {"hole_size": 64, "border_px": 8, "positions": "grid", "stride_px": 16,
         "patches_per_image": 16, "seed": 0},
        {"border_px": (4, 8, 16)}, _build_knn),
    "tv": _Method("restorer", False, {"weight": 0.02}, {"weight": (0.01, 0.02, 0.03, 0.05)},
                  _build_tv),
    "bm3d": _Method("restorer", True, {"sigma_scale": 1.0, "profile": "np"},
                    {"sigma_scale": (0.75, 1.0, 1.25)}, _build_bm3d),
    "wiener_oracle": _Method("restorer", True, {"balance": 0.1},
                             {"balance": (0.03, 0.1, 0.3)}, _build_wiener),
    "richardson_lucy_oracle": _Method("restorer", True, {"num_iter": 5},
                                      {"num_iter": (3, 5, 8, 12)}, _build_richardson_lucy),
}

BASELINE_NAMES: tuple[str, ...] = tuple(_METHODS)
FILLERS: tuple[str, ...] = tuple(n for n, m in _METHODS.items() if m.role == "filler")
RESTORERS: tuple[str, ...] = tuple(n for n, m in _METHODS.items() if m.role == "restorer")
DEFAULT_GRIDS: dict[str, dict[str, tuple]] = {n: dict(m.grid) for n, m in _METHODS.items()}


# --------------------------------------------------------------------------
# Building baselines by name.


def _split_name(name: str) -> list[str]:
  """Checks a single or chained name; returns its parts."""
  parts = name.split("+")
  unknown = [p for p in parts if p not in _METHODS]
  if unknown or len(parts) > 2:
    raise ValueError(
        f"Unknown baseline {name!r}: expected one of {BASELINE_NAMES}, or a chain "
        f"'FILLER+RESTORER' with FILLER in {FILLERS} and RESTORER in {RESTORERS} "
        "(e.g. 'telea+wiener_oracle').")
  if len(parts) == 2 and (parts[0] not in FILLERS or parts[1] not in RESTORERS):
    raise ValueError(
        f"Baseline chain {name!r}: expected 'FILLER+RESTORER' with FILLER in {FILLERS} "
        f"and RESTORER in {RESTORERS}.")
  return parts


def _resolve_params(method: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
  defaults = _METHODS[method].defaults
  overrides = dict(overrides or {})
  unknown = sorted(set(overrides) - set(defaults))
  if unknown:
    raise ValueError(f"Baseline {method!r}: unknown params {unknown}; it takes "
                     f"{sorted(defaults) or 'none'}.")
  return {**defaults, **overrides}


def _make_fn(parts: Sequence[str], applies: Sequence[_Apply]) -> Callable[[Example], np.ndarray]:
  name = "+".join(parts)

  def fn(example: Example) -> np.ndarray:
    image = _image(_get(example, "corrupted", name), name)
    for apply in applies:
      image = apply(example, image)
    return _finish(image)

  return fn


def make_baseline(name: str, params: Mapping[str, Any] | None = None,
                  train_images: np.ndarray | None = None) -> Baseline:
  """Builds one baseline.

  Args:
    name: one of BASELINE_NAMES or a chain "FILLER+RESTORER".
    params: overrides of the defaults; for a chain, a dict per part,
      e.g. {"tv": {"weight": 0.1}}. Unknown keys raise ValueError.
    train_images: float [N, H, W, 3] in [0, 1]; needed by "knn" only.

  Returns:
    The Baseline, with its full resolved params.

  Raises:
    ValueError: for an unknown name or param, or "knn" without train_images.
    ImportError: for "bm3d" when the bm3d package is not installed.
  """
  parts = _split_name(name)
  params = dict(params or {})
  if len(parts) == 1:
    resolved = _resolve_params(name, params)
    part_params = [resolved]
  else:
    unknown = sorted(set(params) - set(parts))
    if unknown:
      raise ValueError(f"Baseline chain {name!r}: params must be keyed by its parts "
                       f"{parts}, got keys {unknown}.")
    part_params = [_resolve_params(p, params.get(p)) for p in parts]
    resolved = dict(zip(parts, part_params))
  applies = [_METHODS[p].build(pp, train_images) for p, pp in zip(parts, part_params)]
  return Baseline(name=name, tracks=baseline_tracks(name), oracle=any(_METHODS[p].oracle for p in parts),
                  params=resolved, fn=_make_fn(parts, applies))


def baseline_tracks(name: str) -> tuple[str, ...]:
  """The tracks a baseline (or chain FILLER+RESTORER) applies to."""
  parts = _split_name(name)
  if len(parts) == 2:
    return ("joint", "joint_free")
  if name == "knn":  # Its patch bank is of the centre square.
    return ("inpaint",)
  if _METHODS[name].role == "filler":
    return ("inpaint", "inpaint_free")
  if _METHODS[name].role == "restorer":
    return ("restore", "clean")  # On `clean`: the harm it does to an intact photo.
  return TRACKS


def get_baselines(names: Sequence[str],
                  params: Mapping[str, Mapping[str, Any]] | None = None,
                  train_images: np.ndarray | None = None) -> list[Baseline]:
  """Builds the baselines called `names`, in order.

  Args:
    names: each one of BASELINE_NAMES or a chain "FILLER+RESTORER".
    params: optional {name: params} overrides, e.g. the output of
      `tune_baseline`, keyed by the same names.
    train_images: float [N, H, W, 3] in [0, 1], the patch bank of "knn".

  Raises:
    ValueError: for an unknown name (the message lists the valid ones), a
      params key that is not in `names`, or "knn" without train_images.
    ImportError: for "bm3d" without the bm3d package (`pip install bm3d`).
  """
  if isinstance(names, str):
    raise ValueError(f"get_baselines: expected a sequence of names, got the string "
                     f"{names!r}; write [{names!r}].")
  params = dict(params or {})
  for name in names:
    _split_name(name)  # Reports every unknown name before building anything.
  stray = sorted(set(params) - set(names))
  if stray:
    raise ValueError(f"get_baselines: params given for {stray}, which are not in names "
                     f"{list(names)}.")
  return [make_baseline(n, params.get(n), train_images) for n in names]


def make_knn_baseline(train_images: np.ndarray, hole_size: int = 64, **params: Any) -> Baseline:
  """The paper's k-NN inpainting baseline over a patch bank of `train_images`.

  Args:
    train_images: float [N, H, W, 3] in [0, 1], training images only.
    hole_size: px, side of the square hole it will fill. Protocol: 64.
    **params: border_px, positions ("grid" | "random"), stride_px,
      patches_per_image, seed (see the module docstring).
  """
  return make_baseline("knn", {"hole_size": hole_size, **params}, train_images)


def default_baseline_names(track: str, include_bm3d: bool | None = None) -> tuple[str, ...]:
  """The baselines a table on `track` should carry (knn needs training images: add it).

  Args:
    track: one of config.TRACKS.
    include_bm3d: whether to include the BM3D methods; None: if bm3d is installed.
  """
  if track not in TRACKS:
    raise ValueError(f"Unknown track {track!r}: expected one of {TRACKS}.")
  if include_bm3d is None:
    include_bm3d = bm3d_available()
  fillers = ("identity", "telea", "navier_stokes", "biharmonic")
  chains = ("identity", "telea+tv", "telea+bm3d", "telea+wiener_oracle",
            "telea+richardson_lucy_oracle", "biharmonic+wiener_oracle")
  names = {
      "inpaint": fillers, "inpaint_free": fillers,
      "restore": ("identity", "tv", "bm3d", "wiener_oracle", "richardson_lucy_oracle"),
      "joint": chains, "joint_free": chains,
      # The blind restorers that a user could run on any photo.
      "clean": ("identity", "tv", "bm3d"),
  }[track]
  return tuple(n for n in names if include_bm3d or "bm3d" not in n.split("+"))


# --------------------------------------------------------------------------
# Tuning on training examples.


def _grid_points(name: str, grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
  """Expands `grid` into params dicts shaped like Baseline.params overrides."""
  parts = _split_name(name)
  keys = list(grid)
  for key in keys:
    if len(parts) == 2:
      part, _, param = key.partition(".")
      if part not in parts or not param:
        raise ValueError(f"tune_baseline({name!r}): grid keys of a chain are "
                         f"'PART.PARAM' with PART in {parts}, got {key!r}.")
    else:
      part, param = name, key
    if param not in _METHODS[part].defaults:
      raise ValueError(f"tune_baseline({name!r}): {part!r} has no param {param!r}; it "
                       f"takes {sorted(_METHODS[part].defaults) or 'none'}.")
    if len(grid[key]) == 0:
      raise ValueError(f"tune_baseline({name!r}): grid[{key!r}] is empty.")
  points = []
  for values in itertools.product(*(grid[k] for k in keys)):
    point: dict[str, Any] = {}
    for key, value in zip(keys, values):
      if len(parts) == 2:
        part, _, param = key.partition(".")
        point.setdefault(part, {})[param] = value
      else:
        point[key] = value
    points.append(point)
  return points


def default_grid(name: str) -> dict[str, tuple]:
  """The tuning grid of `name`; a chain's keys are 'PART.PARAM'."""
  parts = _split_name(name)
  if len(parts) == 1:
    return dict(DEFAULT_GRIDS[name])
  return {f"{p}.{k}": v for p in parts for k, v in DEFAULT_GRIDS[p].items()}


def mean_psnr(baseline: Baseline, examples: Sequence[Example]) -> float:
  """Mean PSNR (cascade_tf.metrics.psnr) of `baseline` over examples with "clean"."""
  scores = []
  for example in examples:
    clean = _image(_get(example, "clean", baseline.name), baseline.name)
    restored = baseline.fn(example)
    scores.append(float(metrics.psnr(clean[None], restored[None])[0]))
  return float(np.mean(scores))


def tune_baseline(name: str, examples: Sequence[Example],
                  grid: Mapping[str, Sequence[Any]] | None = None,
                  train_images: np.ndarray | None = None,
                  base_params: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Picks the params of `name` with the best mean PSNR on TRAINING examples.

  Never pass test examples: the chosen params would then be fitted to the
  test set. A grid search costs (grid points) x (examples) runs of the
  method; 8 to 16 examples and the default grids take seconds for every
  method but bm3d (about 2 s per 128-px image on a CPU core).

  Args:
    name: one of BASELINE_NAMES or a chain "FILLER+RESTORER".
    examples: example dicts (see the module docstring) that also hold
      "clean" [H, W, 3], drawn from the training split.
    grid: {param: candidate values}; for a chain {"PART.PARAM": values}.
      None: `default_grid(name)`.
    train_images: the knn patch bank (training images), for "knn" names.
    base_params: params held fixed while searching (same shape as the
      `params` of `make_baseline`).

  Returns:
    The full resolved params of the best grid point (ties: the first), as
    in Baseline.params; pass them back through get_baselines(params=...).
  """
  if not examples:
    raise ValueError(f"tune_baseline({name!r}): expected at least one training example.")
  grid = default_grid(name) if grid is None else grid
  base = dict(base_params or {})
  best_score, best_params = -np.inf, None
  for point in _grid_points(name, grid):
    params = dict(base)
    for key, value in point.items():
      if isinstance(value, dict):
        params[key] = {**params.get(key, {}), **value}
      else:
        params[key] = value
    baseline = make_baseline(name, params, train_images)
    score = mean_psnr(baseline, examples)
    if score > best_score:
      best_score, best_params = score, dict(baseline.params)
  return best_params
