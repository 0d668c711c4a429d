"""Running a fully convolutional model over a large image in overlapping tiles.

`apply_tiled(image, fn, ...)` cuts an [H, W, 3] image into tiles of a fixed
size, runs `fn` on batches of tiles and blends the outputs back together,
so that the model's memory depends on the tile size and batch size, not on
the photo (only the [H, W, 3] accumulators scale with it).

Layout. Along each axis the image is padded at the bottom / right by
reflection to `tile + k * stride` pixels (stride = tile - overlap), so that
every tile starts at a multiple of the stride: with a stride that is a
multiple of 32 (2 ** generator.num_levels) every tile sits on the same
stride-2 grid as the whole padded image, as in an untiled run. An axis
shorter than a tile gets one tile of its own length rounded up to the
model's size multiple.

Blending. Where two tiles overlap by O pixels, each tile's weight ramps
from 0 to 1 across the overlap: 0 on the outer O/4 pixels (the part of a
tile that sees the tile's zero-padded border instead of its neighbours),
a raised cosine over the middle O/2, and 1 on the inner O/4. The two
ramps of a seam add up to exactly 1, and tiles are not tapered on the
image's own borders. Consequently, for a model whose receptive field
reaches at most O/4 pixels, the tiled result equals the untiled one
exactly (up to float rounding) away from the image's borders; models that
see further (the generator's 5 stride-2 levels see the whole tile) differ
by how much they use context beyond the tile.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping

import numpy as np

TileFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]


def round_up(value: int, multiple: int) -> int:
  """The smallest multiple of `multiple` that is >= `value`."""
  return -(-value // multiple) * multiple


def seam_ramp(overlap: int) -> np.ndarray:
  """Weights [overlap] of the tile entering a seam, rising from 0 to 1.

  The outer `overlap // 4` pixels get 0, the inner `overlap // 4` get 1 and
  the middle a raised cosine sampled at pixel centres, so that
  `ramp + ramp[::-1] == 1` (the other tile of the seam uses the reverse).
  """
  margin = overlap // 4
  width = overlap - 2 * margin
  ramp = np.zeros([overlap], np.float64)
  ramp[overlap - margin:] = 1.0
  centres = (np.arange(width) + 0.5) / width
  ramp[margin:overlap - margin] = 0.5 - 0.5 * np.cos(np.pi * centres)
  return ramp


@dataclasses.dataclass(frozen=True)
class AxisLayout:
  """Where the tiles of one axis start and how they are weighted."""

  length: int  # px, the image's size along this axis.
  tile: int  # px, tile size along this axis.
  starts: tuple[int, ...]  # px, tile origins in the padded image.
  padded: int  # px, the padded length that the tiles cover exactly.
  weights: tuple[np.ndarray, ...]  # one [tile] weight vector per tile.


def axis_layout(length: int, tile_size: int, overlap: int, multiple: int) -> AxisLayout:
  """Lays tiles along an axis of `length` px; see the module docstring.

  Args:
    length: image size along the axis, px (>= 1).
    tile_size: tile size, px, a multiple of `multiple`; 0: one tile
      covering the whole axis (rounded up to `multiple`).
    overlap: px shared by neighbouring tiles, 0 <= overlap <= tile_size / 2.
    multiple: the model's size multiple (2 ** generator.num_levels).
  """
  whole = round_up(length, multiple)
  if tile_size == 0 or whole <= tile_size:
    return AxisLayout(length, whole, (0,), whole, (np.ones([whole]),))
  stride = tile_size - overlap
  count = math.ceil((length - tile_size) / stride) + 1
  starts = tuple(k * stride for k in range(count))
  ramp = seam_ramp(overlap)
  weights = []
  for k in range(count):
    w = np.ones([tile_size])
    if overlap and k > 0:
      w[:overlap] = ramp
    if overlap and k < count - 1:
      w[tile_size - overlap:] = ramp[::-1]
    weights.append(w)
  return AxisLayout(length, tile_size, starts, starts[-1] + tile_size, tuple(weights))


def check_tiling(tile_size: int, overlap: int, multiple: int) -> None:
  """ValueError naming the flag if a tile size or overlap cannot work."""
  if tile_size < 0 or tile_size % multiple:
    raise ValueError(f"--tile_size={tile_size}: must be 0 (no tiling) or a positive multiple "
                     f"of {multiple} (2 ** generator.num_levels).")
  if tile_size and not 0 <= overlap <= tile_size // 2:
    raise ValueError(f"--tile_overlap={overlap}: must be in [0, tile_size / 2 = "
                     f"{tile_size // 2}].")


def count_tiles(height: int, width: int, tile_size: int, overlap: int, multiple: int) -> int:
  """How many tiles `apply_tiled` runs for an image of this size."""
  rows = axis_layout(height, tile_size, overlap, multiple)
  cols = axis_layout(width, tile_size, overlap, multiple)
  return len(rows.starts) * len(cols.starts)


def apply_tiled(image: np.ndarray,
                fn: TileFn,
                *,
                tile_size: int,
                overlap: int,
                multiple: int,
                batch_size: int = 8,
                outputs: tuple[str, ...] = ("restored",),
                progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
  """Runs `fn` over `image` in overlapping tiles and blends the results.

  Args:
    image: float32 [H, W, 3] in [0, 1].
    fn: maps float32 [B, th, tw, 3] to a mapping that holds at least the
      names in `outputs`, each [B, th, tw, 3] (arrays or tensors).
    tile_size: px, a multiple of `multiple`; 0 runs the whole image (padded
      to a multiple of `multiple`) in one call.
    overlap: px shared by neighbouring tiles, in [0, tile_size / 2].
    multiple: the size multiple the model needs (2 ** generator.num_levels).
    batch_size: tiles per call of `fn`.
    outputs: names of the outputs of `fn` to blend and return.
    progress: called after each call of `fn` with (tiles done, tiles in all).

  Returns:
    {name: float32 [H, W, 3]} for each name in `outputs`.

  Raises:
    ValueError: for a malformed image, tile size, overlap or batch size.
  """
  image = np.asarray(image, np.float32)
  if image.ndim != 3 or image.shape[-1] != 3 or 0 in image.shape:
    raise ValueError(f"apply_tiled expects an [H, W, 3] image, got shape {image.shape}.")
  check_tiling(tile_size, overlap, multiple)
  if batch_size < 1:
    raise ValueError(f"--batch_size={batch_size}: must be >= 1.")
  height, width = image.shape[:2]
  rows = axis_layout(height, tile_size, overlap, multiple)
  cols = axis_layout(width, tile_size, overlap, multiple)
  # numpy's reflect mode also works when the padding exceeds the image
  # (it reflects repeatedly), which only happens for images under `multiple` px.
  padded = np.pad(image, [(0, rows.padded - height), (0, cols.padded - width), (0, 0)],
                  mode="reflect")
  sums = {name: np.zeros([rows.padded, cols.padded, 3], np.float32) for name in outputs}
  total_weight = np.zeros([rows.padded, cols.padded, 1], np.float32)
  tiles = [(i, j) for i in range(len(rows.starts)) for j in range(len(cols.starts))]
  for first in range(0, len(tiles), batch_size):
    chunk = tiles[first:first + batch_size]
    batch = np.stack([padded[rows.starts[i]:rows.starts[i] + rows.tile,
                             cols.starts[j]:cols.starts[j] + cols.tile] for i, j in chunk])
    result = fn(batch)
    for name in outputs:
      values = np.asarray(result[name], np.float32)
      for k, (i, j) in enumerate(chunk):
        weight = np.outer(rows.weights[i], cols.weights[j]).astype(np.float32)[..., None]
        window = (slice(rows.starts[i], rows.starts[i] + rows.tile),
                  slice(cols.starts[j], cols.starts[j] + cols.tile))
        sums[name][window] += weight * values[k]
        if name == outputs[0]:
          total_weight[window] += weight
    if progress is not None:
      progress(first + len(chunk), len(tiles))
  # The weights of every pixel add up to 1 by construction; dividing keeps
  # that true should a layout ever leave a pixel with a different total.
  total_weight = total_weight[:height, :width]
  return {name: s[:height, :width] / total_weight for name, s in sums.items()}
