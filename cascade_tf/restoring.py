"""Repairing photo files with a trained cascade: the library behind restore.py.

`restore_paths(model, inputs, output_dir, options)` reads image files and
folders, applies a centre hole or a mask, runs the model in overlapping
tiles (`tiling.py`) and writes 8-bit PNGs; unreadable files are skipped,
named and counted, and so are files whose header declares more than
`options.max_pixels` pixels (checked before decoding).

Memory is bounded by the photo's own size: the photo is kept as decoded
(uint8) with its hole as a bool mask, tiles are converted to float as they
are cut, and the result is blended row of tiles by row of tiles straight
into uint8 (`tiling.apply_tiled`), so no float copy of the photo is made.
docs/serving.md gives the measured peak memory for 1, 12 and 48 MP photos.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
import sys
import time
from typing import Sequence, TextIO

from absl import logging
import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError
import keras
import tensorflow as tf

from cascade_tf import inference
from cascade_tf import serving
from cascade_tf import tiling
from cascade_tf.data import appliers
from cascade_tf.data import sources

# restore.py --max_pixels: 100 million pixels (e.g. 12247 x 8165). Larger
# files are skipped unless the limit is raised, up to Pillow's own guard.
DEFAULT_MAX_PIXELS = 100_000_000

HOLES = ("none", "centre")


@dataclasses.dataclass(frozen=True)
class RestoreOptions:
  """How `restore_paths` prepares and runs each photo."""

  hole: str = "none"  # none | centre: a centred square of side min(H, W) // 2 set to 0.5.
  mask_path: str | None = None  # Image whose white (> 50% grey) pixels are set to 0.5.
  tile_size: int | None = None  # px; None: the model's training size; 0: no tiling.
  tile_overlap: int | None = None  # px; None: tile_size // 4.
  batch_size: int = 8  # Tiles per model call.
  resize_short_side: int | None = None  # px; resize each photo so its short side is this.
  save_intermediate: bool = False  # Also write the generator's output (`*_inpainted.png`).
  max_pixels: int = DEFAULT_MAX_PIXELS  # Files with more pixels are skipped; 0: no limit.


@dataclasses.dataclass
class RestoreReport:
  """What `restore_paths` did."""

  written: list[str] = dataclasses.field(default_factory=list)  # Restored PNGs.
  skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, reason).
  seconds: float = 0.0


def centre_hole_mask(height: int, width: int) -> np.ndarray:
  """bool [H, W]: a centred square of side min(H, W) // 2 (S/2 for an S x S image)."""
  mask = appliers.hole_mask(height, width, min(height, width) // 2)
  return keras.ops.convert_to_numpy(mask)[..., 0] > 0


def read_mask(path: str, max_pixels: int | None = None) -> np.ndarray:
  """bool [H, W]: True where the mask image is brighter than mid-grey."""
  try:
    rgb = sources.decode_image_file(path, max_pixels)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"--mask={path}: cannot read it as an image ({type(e).__name__}: {e}).")
  # The channel sum (uint16: no float copy of the mask) over 3 * 127.5.
  return rgb.sum(axis=-1, dtype=np.uint16) > 382


def resize_short_side(image: np.ndarray, short_side: int) -> np.ndarray:
  """Anti-aliased bilinear resize (as the training pipeline) to a short side of `short_side`.

  `image` is uint8 or float in [0, 1]; the result is float32 in [0, 1].
  """
  if image.dtype == np.uint8:
    image = image.astype(np.float32) / 255.0
  height, width = image.shape[:2]
  scale = short_side / min(height, width)
  size = [max(1, round(height * scale)), max(1, round(width * scale))]
  resized = tf.image.resize(image, size, method="bilinear", antialias=True)
  return np.clip(resized.numpy(), 0.0, 1.0)


def find_images(inputs: Sequence[str]) -> list[tuple[str, str]]:
  """(path, output name without extension) for each file and each image in each folder.

  Folders are searched recursively for the image types of
  `sources.IMAGE_EXTENSIONS`, and keep their layout under the output
  folder; a file given by name is always tried, whatever its extension.
  Two inputs that would write the same output get their extension added
  to the name (`photo_jpg`).
  """
  found = []
  for item in inputs:
    if os.path.isdir(item):
      root = Path(item)
      for path in sources.list_image_files(root):
        found.append((str(path), path.relative_to(root).with_suffix("").as_posix()))
    else:
      found.append((item, Path(item).stem))
  counts: dict[str, int] = {}
  for _, name in found:
    counts[name] = counts.get(name, 0) + 1
  return [(path, name if counts[name] == 1 else f"{name}_{Path(path).suffix.lstrip('.')}")
          for path, name in found]


def write_png(path: str, image: np.ndarray) -> None:
  """Writes uint8 [H, W, 3], or float in [0, 1] rounded to the nearest level, as a PNG."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  if image.dtype != np.uint8:
    image = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
  Image.fromarray(image).save(path, format="PNG")


class _Progress:
  """A progress bar over images (and the tiles of the current one), with ETA, on stderr.

  On a terminal the bar is redrawn after every batch of tiles; otherwise
  (logs, CI) one line is written per image.
  """

  def __init__(self, total_images: int, stream: TextIO):
    self._total, self._stream = total_images, stream
    self._tty = getattr(stream, "isatty", lambda: False)()
    self._t0 = time.perf_counter()
    self._done = 0

  def tiles(self, name: str, tiles_done: int, tiles_total: int) -> None:
    """Reports progress within image `name`."""
    if self._tty:
      self._draw(f"{name}: tile {tiles_done}/{tiles_total}", tiles_done / max(tiles_total, 1))

  def image_done(self, name: str, note: str = "") -> None:
    """Counts one image as finished (written or skipped)."""
    self._done += 1
    self._draw(f"{name}{note}", 0.0, newline=not self._tty)

  def message(self, text: str) -> None:
    """Writes a line of its own (clearing the bar on a terminal)."""
    self._stream.write(("\r\033[K" if self._tty else "") + text + "\n")
    self._stream.flush()

  def close(self) -> None:
    if self._tty:
      self._stream.write("\n")
      self._stream.flush()

  def _draw(self, text: str, partial: float, newline: bool = False) -> None:
    fraction = min(1.0, (self._done + partial) / max(self._total, 1))
    elapsed = time.perf_counter() - self._t0
    eta = f"{elapsed / fraction * (1.0 - fraction):.0f}s" if fraction > 0 else "?"
    width = 24
    filled = int(width * fraction)
    line = (f"restore [{'=' * filled}{'.' * (width - filled)}] {self._done}/{self._total} "
            f"images, ETA {eta} | {text}")
    self._stream.write(line + "\n" if newline else "\r" + line + "\033[K")
    self._stream.flush()


def _error_text(message: str) -> str:
  """The line of a TensorFlow error that says what went wrong (the failed assertion)."""
  lines = [line.strip() for line in message.splitlines() if line.strip()]
  for line in lines:
    if "assertion failed:" in line:
      return line.split("assertion failed:", 1)[1].strip()
  return lines[-1] if lines else message


class _SkipImage(Exception):
  """An input file that `restore_paths` skips; the message says why."""


def _prepare_image(path: str, options: RestoreOptions,
                   mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
  """Reads `path` and applies --resize; returns (image, hole).

  image: uint8 [H, W, 3] as decoded, or float32 [H, W, 3] in [0, 1] when
  resized; hole: bool [H, W] (the pixels to fill) or None.
  """
  try:
    image = sources.decode_image_file(path, options.max_pixels or None)
  except FileNotFoundError:
    raise _SkipImage("no such file") from None
  except sources.ImageTooLarge as e:
    raise _SkipImage(f"too large: {e}") from None
  except Image.DecompressionBombError as e:
    raise _SkipImage(f"too large for Pillow ({e})") from None
  except UnidentifiedImageError:
    raise _SkipImage("unreadable (not an image format Pillow knows, or corrupt)") from None
  except Exception as e:  # pylint: disable=broad-except
    # Decoders raise many types on corrupt data; one bad file must not end the run.
    raise _SkipImage(f"unreadable ({type(e).__name__}: {e})") from None
  hole = mask
  if mask is not None and mask.shape != image.shape[:2]:
    raise _SkipImage(f"the mask {options.mask_path} is {mask.shape[1]}x{mask.shape[0]} px but "
                     f"the image is {image.shape[1]}x{image.shape[0]} px")
  if options.resize_short_side:
    image = resize_short_side(image, options.resize_short_side)
    if hole is not None:
      hole = np.asarray(Image.fromarray(hole).resize((image.shape[1], image.shape[0]),
                                                     Image.Resampling.NEAREST))
  if options.hole == "centre":
    hole = centre_hole_mask(*image.shape[:2])
  return image, hole


def restore_paths(model: str | inference.Repairer, inputs: Sequence[str], output_dir: str,
                  options: RestoreOptions = RestoreOptions(), *,
                  stream: TextIO = sys.stderr) -> RestoreReport:
  """Repairs every image in `inputs` and writes `<output_dir>/<name>.png`.

  Args:
    model: a SavedModel version folder, an export folder (largest version)
      or a training workdir (see `inference.resolve_model`), or a loaded
      Repairer.
    inputs: image files and folders (searched recursively).
    output_dir: where the PNGs go; folder layout is kept.
    options: hole, mask, tiling, resizing and the size limit; see
      `RestoreOptions`.
    stream: where progress, skipped files and the summary are written.

  Returns:
    A `RestoreReport` of written files and skipped (path, reason) pairs.

  Raises:
    ValueError: naming the flag, for a bad model path, option or mask file,
      or when `inputs` name no image at all.
  """
  if options.hole not in HOLES:
    raise ValueError(f"--hole={options.hole}: expected one of {HOLES}.")
  if options.hole != "none" and options.mask_path:
    raise ValueError("--hole and --mask both define the hole: pass only one of them.")
  if options.resize_short_side is not None and options.resize_short_side < 1:
    raise ValueError(f"--resize={options.resize_short_side}: must be a positive number of px.")
  if options.batch_size < 1:
    raise ValueError(f"--batch_size={options.batch_size}: must be >= 1.")
  if not 0 <= options.max_pixels <= sources.PILLOW_MAX_PIXELS:
    raise ValueError(f"--max_pixels={options.max_pixels}: must be in [1, "
                     f"{sources.PILLOW_MAX_PIXELS}] (Pillow refuses larger images), or 0 for "
                     "Pillow's limit.")
  if not inputs:
    raise ValueError("No input given: pass image files or folders, e.g. restore.py photo.jpg.")
  if isinstance(model, inference.Repairer):
    repairer = model
  else:
    repairer = inference.Repairer(inference.resolve_model(model))
  cfg = repairer.config
  multiple = 2 ** cfg.generator.num_levels if cfg else 32
  fill = cfg.data.hole_fill if cfg else 0.5
  tile_size = options.tile_size
  if tile_size is None:
    if cfg is None:
      raise ValueError(f"--model={model} records no training image size: pass --tile_size.")
    tile_size = cfg.data.image_size
  overlap = tile_size // 4 if options.tile_overlap is None else options.tile_overlap
  tiling.check_tiling(tile_size, overlap, multiple)
  mask = read_mask(options.mask_path, options.max_pixels or None) if options.mask_path else None
  outputs = serving.OUTPUTS if options.save_intermediate else ("restored",)

  def run(batch):
    return {name: value.numpy() for name, value in repairer(batch).items()}

  report = RestoreReport()
  start = time.perf_counter()
  images = find_images(inputs)
  if not images:
    raise ValueError(f"No image files found in {list(inputs)} (looked for "
                     f"{', '.join(sources.IMAGE_EXTENSIONS)}).")
  progress = _Progress(len(images), stream)

  def skip(path: str, name: str, reason: str) -> None:
    report.skipped.append((path, reason))
    logging.info("Skipped %s: %s", path, reason)
    progress.message(f"Skipped {path}: {reason}")
    progress.image_done(name, " (skipped)")

  for path, name in images:
    try:
      image, hole = _prepare_image(path, options, mask)
    except _SkipImage as e:
      skip(path, name, str(e))
      continue
    try:
      result = tiling.apply_tiled(image, run, tile_size=tile_size, overlap=overlap,
                                  multiple=multiple, batch_size=options.batch_size,
                                  outputs=outputs,
                                  progress=functools.partial(progress.tiles, name),
                                  hole=hole, fill=fill, dtype=np.uint8)
    except tf.errors.InvalidArgumentError as e:
      # A SavedModel refuses what its checks do not accept (e.g. over its
      # --max_pixels with --tile_size=0): this image is skipped, not the run.
      skip(path, name, f"the model refused it: {_error_text(e.message)}")
      continue
    finally:
      del image, hole
    out_path = os.path.join(output_dir, name + ".png")
    write_png(out_path, result["restored"])
    if options.save_intermediate:
      write_png(os.path.join(output_dir, name + "_inpainted.png"), result["inpainted"])
    report.written.append(out_path)
    progress.image_done(name, f" -> {out_path}")
  progress.close()
  report.seconds = time.perf_counter() - start
  stream.write(f"Restored {len(report.written)} image(s) into {output_dir} in "
               f"{report.seconds:.1f}s; skipped {len(report.skipped)}.\n")
  for path, reason in report.skipped:
    stream.write(f"  skipped {path}: {reason}\n")
  stream.flush()
  return report
