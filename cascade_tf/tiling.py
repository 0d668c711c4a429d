"""Running a fully convolutional model over a large image in overlapping tiles.

`apply_tiled(image, fn, ...)` cuts an [H, W, 3] image into tiles of a fixed
size, runs `fn` on batches of tiles and blends the outputs back together,
so that the model's memory depends on the tile size and batch size, not on
the photo. Tiles are read from the photo as needed and blended one row of
tiles at a time, so that only the photo itself and the outputs (uint8 if
asked) scale with its size: no padded or float copy of it is made.

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

# (tiles [B, th, tw, 3] in [0, 1], their hole masks [B, th, tw, 1]) -> outputs.
TileFn = Callable[[np.ndarray, np.ndarray], Mapping[str, np.ndarray]]


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


def reflect_indices(start: int, size: int, length: int) -> np.ndarray:
  """Source indices of positions start .. start + size - 1 along an axis of `length` px
  extended at its end by reflection (numpy's "reflect" mode, repeated when the
  extension is longer than the axis)."""
  positions = np.arange(start, start + size)
  if length == 1:
    return np.zeros_like(positions)
  period = 2 * (length - 1)
  folded = positions % period
  return np.where(folded < length, folded, period - folded)


def apply_tiled(image: np.ndarray,
                fn: TileFn,
                *,
                tile_size: int,
                overlap: int,
                multiple: int,
                batch_size: int = 8,
                outputs: tuple[str, ...] = ("restored",),
                progress: Callable[[int, int], None] | None = None,
                hole: np.ndarray | None = None,
                fill: float = 0.5,
                dtype: type = np.float32) -> dict[str, np.ndarray]:
  """Runs `fn` over `image` in overlapping tiles and blends the results.

  Tiles are read from the image as they are needed (padding by reflection
  index by index) and run row of tiles by row of tiles; the rows of the
  output that no later tile touches are then final and written out. So,
  besides the image and the outputs, memory holds one row of tiles and its
  accumulators, whatever the image's size.

  Args:
    image: [H, W, 3], float32 in [0, 1] or uint8 (read as value / 255).
    fn: maps float32 tiles [B, th, tw, 3] and their hole masks float32
      [B, th, tw, 1] (1 in the hole; zeros without `hole`) to a mapping that
      holds at least the names in `outputs`, each [B, th, tw, 3] (arrays or
      tensors).
    tile_size: px, a multiple of `multiple`; 0 runs the whole image (padded
      to a multiple of `multiple`) in one call.
    overlap: px shared by neighbouring tiles, in [0, tile_size / 2].
    multiple: the size multiple the model needs (2 ** generator.num_levels).
    batch_size: tiles per call of `fn` (a call never spans two rows of tiles).
    outputs: names of the outputs of `fn` to blend and return.
    progress: called after each call of `fn` with (tiles done, tiles in all).
    hole: optional bool [H, W]; these pixels are set to `fill` in every
      tile before `fn` sees it (the corrupted input without a float copy
      of the photo).
    fill: the value of hole pixels, in [0, 1].
    dtype: np.float32 returns the blend as it is; np.uint8 returns it
      rounded to 8 bits (round(clip(x, 0, 1) * 255)), a quarter of the
      memory.

  Returns:
    {name: [H, W, 3] of `dtype`} for each name in `outputs`.

  Raises:
    ValueError: for a malformed image, hole, tile size, overlap, batch size
      or dtype.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or 0 in image.shape:
    raise ValueError(f"apply_tiled expects an [H, W, 3] image, got shape {image.shape}.")
  if image.dtype not in (np.uint8, np.float32):
    image = image.astype(np.float32)
  check_tiling(tile_size, overlap, multiple)
  if batch_size < 1:
    raise ValueError(f"--batch_size={batch_size}: must be >= 1.")
  if hole is not None and hole.shape != image.shape[:2]:
    raise ValueError(f"apply_tiled: the hole is {hole.shape} but the image is {image.shape[:2]}.")
  if dtype not in (np.float32, np.uint8):
    raise ValueError(f"apply_tiled: dtype must be np.float32 or np.uint8, got {dtype}.")
  height, width = image.shape[:2]
  rows = axis_layout(height, tile_size, overlap, multiple)
  cols = axis_layout(width, tile_size, overlap, multiple)
  col_indices = [reflect_indices(start, cols.tile, width) for start in cols.starts]
  results = {name: np.empty([height, width, 3], dtype) for name in outputs}
  # Accumulators of the current row of tiles, [rows.tile, padded width]; row 0
  # is the image row rows.starts[i].
  sums = {name: np.zeros([rows.tile, cols.padded, 3], np.float32) for name in outputs}
  total_weight = np.zeros([rows.tile, cols.padded, 1], np.float32)
  total_tiles, tiles_done = len(rows.starts) * len(cols.starts), 0

  def read_tile(row_index, col_index):
    """(tile [th, tw, 3] with its hole filled, its mask [th, tw, 1])."""
    window = np.ix_(row_index, col_index)
    tile = image[window]
    tile = tile.astype(np.float32) / 255.0 if tile.dtype == np.uint8 else tile
    if hole is None:
      return tile, np.zeros(tile.shape[:2] + (1,), np.float32)
    tile_hole = hole[window][..., None]
    return np.where(tile_hole, np.float32(fill), tile), tile_hole.astype(np.float32)

  for i, top in enumerate(rows.starts):
    row_index = reflect_indices(top, rows.tile, height)
    for first in range(0, len(cols.starts), batch_size):
      chunk = range(first, min(first + batch_size, len(cols.starts)))
      tiles, masks = zip(*[read_tile(row_index, col_indices[j]) for j in chunk])
      result = fn(np.stack(tiles), np.stack(masks))
      values = {name: np.asarray(result[name], np.float32) for name in outputs}
      for k, j in enumerate(chunk):
        weight = np.outer(rows.weights[i], cols.weights[j]).astype(np.float32)[..., None]
        window = slice(cols.starts[j], cols.starts[j] + cols.tile)
        total_weight[:, window] += weight
        for name in outputs:
          sums[name][:, window] += weight * values[name][k]
      tiles_done += len(chunk)
      if progress is not None:
        progress(tiles_done, total_tiles)
    # Rows above the next row of tiles are final.
    last = i == len(rows.starts) - 1
    final = rows.tile if last else rows.starts[i + 1] - top
    keep = min(final, height - top)
    if keep > 0:
      # The weights of every pixel add up to 1 by construction; dividing keeps
      # that true should a layout ever leave a pixel with a different total.
      weight = total_weight[:keep, :width]
      for name in outputs:
        blended = sums[name][:keep, :width] / weight
        if dtype == np.uint8:
          blended = np.round(np.clip(blended, 0.0, 1.0) * 255.0).astype(np.uint8)
        results[name][top:top + keep] = blended
    if not last:
      for array in (*sums.values(), total_weight):
        array[:rows.tile - final] = array[final:]
        array[rows.tile - final:] = 0.0
  return results
