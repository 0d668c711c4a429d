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
import scipy.ndimage
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
MODES = ("full", "inpaint")


@dataclasses.dataclass(frozen=True)
class RestoreOptions:
  """How `restore_paths` prepares and runs each photo."""

  hole: str = "none"  # none | centre: a centred square of side min(H, W) // 2 set to 0.5.
  mask_path: str | None = None  # Image whose white (> 50% grey) pixels are the hole.
  mask_dir: str | None = None  # Folder of masks named like the images (any image extension).
  mask_dilate: int = 0  # px; grow every hole by this much (a disk) before filling it.
  # full: the cascade repairs the whole photo (blur and noise too); inpaint: only
  # the hole changes (the generator's fill pasted into the untouched photo).
  mode: str = "full"
  tile_size: int | None = None  # px; None: the model's training size; 0: no tiling.
  tile_overlap: int | None = None  # px; None: tile_size // 4.
  batch_size: int = 8  # Tiles per model call.
  resize_short_side: int | None = None  # px; resize each photo so its short side is this.
  save_intermediate: bool = False  # Also write the generator's output (`*_inpainted.png`).
  max_pixels: int = DEFAULT_MAX_PIXELS  # Files with more pixels are skipped; 0: no limit.
  # The networks' compute precision (a workdir or `pretrained`): a Keras policy, or auto
  # (runtime.resolve_precision: chosen per device and CPU by measurement).
  precision: str = "auto"
  # Symmetries of its input each network sees, averaged (cascade.forward); 1: as trained.
  self_ensemble: int = 1
  # Run a workdir's cascade frozen (inference.freeze): up to 1.2x faster for some
  # networks, many times the weights' size in memory (docs/benchmarks.md).
  freeze: bool = False


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


def dilate(hole: np.ndarray, pixels: int) -> np.ndarray:
  """bool [H, W]: `hole` grown by `pixels` px (every pixel within that distance of it)."""
  if pixels <= 0 or not hole.any():
    return hole
  return scipy.ndimage.distance_transform_edt(~hole) <= pixels


def fill_large_holes(image: np.ndarray, hole: np.ndarray, repair, *, tile_size: int,
                     multiple: int, fill: float = 0.5) -> tuple[np.ndarray, np.ndarray, int]:
  """Fills, at a reduced scale, every hole too large for the model's tiles.

  The model was trained to fill a hole of half its training size (S/2) in
  an S x S image. A connected hole whose bounding box is larger than
  `tile_size` / 2 is filled in a window of twice its size around it,
  shrunk (anti-aliased) until the hole is `tile_size` / 2 across; the
  model's `inpainted` output there is enlarged (bicubic) and pasted into
  the photo, at the hole's pixels only. The caller then runs the usual
  tiled pass with the remaining (small) holes: the pasted fill is known
  content to it.

  Args:
    image: [H, W, 3], uint8 or float32 in [0, 1]; changed in place when
      writable (else copied).
    hole: bool [H, W].
    repair: (images [1, h, w, 3], masks [1, h, w, 1]) -> {"inpainted": ...}
      in [0, 1].
    tile_size: the model's training image size S (holes up to S / 2 are left).
    multiple: the size multiple the model needs.
    fill: the grey the hole is filled with before the model sees it.

  Returns:
    (image, the holes left for the tiled pass, how many holes were filled).
  """
  labels, _ = scipy.ndimage.label(hole)
  limit = max(tile_size // 2, 1)
  remaining, filled = hole.copy(), 0
  height, width = hole.shape
  for index, box in enumerate(scipy.ndimage.find_objects(labels), start=1):
    rows, cols = box
    extent = max(rows.stop - rows.start, cols.stop - cols.start)
    if extent <= limit:
      continue
    # A window twice the hole's size, centred on it, inside the image.
    side = 2 * extent
    top = int(np.clip((rows.start + rows.stop - side) // 2, 0, max(height - side, 0)))
    left = int(np.clip((cols.start + cols.stop - side) // 2, 0, max(width - side, 0)))
    window = (slice(top, min(top + side, height)), slice(left, min(left + side, width)))
    scale = limit / extent
    window_hole = labels[window] == index
    crop = image[window]
    crop = crop.astype(np.float32) / 255.0 if crop.dtype == np.uint8 else crop
    small_size = [max(multiple, int(round(n * scale / multiple)) * multiple)
                  for n in crop.shape[:2]]
    small = tf.image.resize(crop, small_size, method="bicubic", antialias=True).numpy()
    # A pixel is a hole at the small scale if any of its footprint is.
    small_hole = tf.image.resize(window_hole[..., None].astype(np.float32), small_size,
                                 method="area").numpy() > 0
    small = np.where(small_hole, np.float32(fill), np.clip(small, 0.0, 1.0))
    out = repair(small[None], small_hole[None].astype(np.float32))["inpainted"]
    large = tf.image.resize(np.asarray(out, np.float32), crop.shape[:2], method="bicubic").numpy()[0]
    large = np.clip(large, 0.0, 1.0)
    if image.dtype == np.uint8:
      large = np.round(large * 255.0).astype(np.uint8)
    if not image.flags.writeable:  # Decoders may hand out read-only arrays.
      image = image.copy()
    image[window] = np.where(window_hole[..., None], large, image[window])
    remaining[labels == index] = False
    filled += 1
  return image, remaining, filled


@dataclasses.dataclass(frozen=True)
class TileGeometry:
  """How a photo is cut for a model: tiles, overlap, size multiple, hole fill and reach."""

  tile_size: int  # px; 0: the whole photo in one pass.
  overlap: int  # px between neighbouring tiles.
  multiple: int  # What the model's input sizes must be a multiple of.
  fill: float  # The grey holes are filled with before the model sees them.
  reach: int  # The training image size: holes up to reach / 2 are filled by the tiles.
  batch_size: int = 8  # Tiles per model call.

  @classmethod
  def for_model(cls, cfg, tile_size: int | None = None, overlap: int | None = None,
                batch_size: int = 8, model: object = None) -> "TileGeometry":
    """The geometry for a model with training config `cfg` (None: a foreign SavedModel)."""
    if tile_size is None:
      if cfg is None:
        raise ValueError(f"--model={model} records no training image size: pass --tile_size.")
      tile_size = cfg.data.image_size
    overlap = tile_size // 4 if overlap is None else overlap
    multiple = cfg.size_multiple() if cfg else 32
    tiling.check_tiling(tile_size, overlap, multiple)
    # The model learned to fill holes of half its training size; larger ones are
    # filled at a reduced scale first (`fill_large_holes`).
    reach = cfg.data.image_size if cfg else (tile_size or 128)
    return cls(tile_size, overlap, multiple, cfg.data.hole_fill if cfg else 0.5, reach,
               batch_size)

  def repair(self, image: np.ndarray, hole: np.ndarray | None, run, outputs=("restored",), *,
             progress=None, on_large=None, dtype=np.uint8) -> dict[str, np.ndarray]:
    """One photo through the model: large holes first (`fill_large_holes`), then tiles.

    Args:
      image: [H, W, 3] uint8 or float32 in [0, 1] (holes may hold anything).
      hole: bool [H, W] or None.
      run: (images [n, h, w, 3], masks [n, h, w, 1]) -> {output: array} in [0, 1].
      outputs: the model outputs to assemble.
      progress: called by `tiling.apply_tiled` per row of tiles.
      on_large: called with the number of large holes filled first, if any.
      dtype: of the returned images (uint8, or float32 in [0, 1]).

    Returns:
      {output: [H, W, 3] of `dtype`}.
    """
    tile_hole = hole
    if hole is not None:
      image, tile_hole, large = fill_large_holes(image, hole, run, tile_size=self.reach,
                                                 multiple=self.multiple, fill=self.fill)
      if large and on_large is not None:
        on_large(large)
    return tiling.apply_tiled(image, run, tile_size=self.tile_size, overlap=self.overlap,
                              multiple=self.multiple, batch_size=self.batch_size,
                              outputs=outputs, progress=progress, hole=tile_hole,
                              fill=self.fill, dtype=dtype)


def find_mask(mask_dir: str, name: str) -> str | None:
  """The mask of the image whose output name is `name` (relative, no extension): the file
  `<mask_dir>/<name>.<ext>` for an image extension, or None."""
  for extension in sources.IMAGE_EXTENSIONS:
    for candidate in (extension, extension.upper()):
      path = os.path.join(mask_dir, name + candidate)
      if os.path.isfile(path):
        return path
  return None


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


def _prepare_image(path: str, name: str, options: RestoreOptions,
                   mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
  """Reads `path` (and its mask from --mask_dir) and applies --resize and --mask_dilate;
  returns (image, hole).

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
  mask_path = options.mask_path
  if options.mask_dir:
    mask_path = find_mask(options.mask_dir, name)
    if mask_path is None:
      raise _SkipImage(f"no mask for it in --mask_dir={options.mask_dir} (looked for "
                       f"{name}.png and the other image extensions)")
    try:
      mask = read_mask(mask_path, options.max_pixels or None)
    except ValueError as e:
      raise _SkipImage(str(e).replace("--mask=", "its mask ")) from None
  hole = mask
  if mask is not None and mask.shape != image.shape[:2]:
    raise _SkipImage(f"the mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} px but "
                     f"the image {path} is {image.shape[1]}x{image.shape[0]} px")
  if hole is not None:
    hole = dilate(hole, options.mask_dilate)
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
  holes_given = [flag for flag, given in (("--hole", options.hole != "none"),
                                            ("--mask", options.mask_path),
                                            ("--mask_dir", options.mask_dir)) if given]
  if len(holes_given) > 1:
    raise ValueError(f"{' and '.join(holes_given)} all define the hole: pass only one of them.")
  if options.mode not in MODES:
    raise ValueError(f"--mode={options.mode}: expected one of {MODES}.")
  if options.mode == "inpaint" and not holes_given:
    raise ValueError("--mode=inpaint changes only the hole: give one with --mask, --mask_dir "
                     "or --hole=centre.")
  if options.mode == "inpaint" and options.save_intermediate:
    raise ValueError("--save_intermediate writes the generator's output beside the restored "
                     "photo (--mode=full); with --mode=inpaint that output is the result.")
  if options.mask_dilate < 0:
    raise ValueError(f"--mask_dilate={options.mask_dilate}: must be >= 0 px.")
  if options.mask_dir and not os.path.isdir(options.mask_dir):
    raise ValueError(f"--mask_dir={options.mask_dir} is not a folder.")
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
    repairer = inference.Repairer(inference.resolve_model(model), precision=options.precision,
                                  self_ensemble=options.self_ensemble, freeze=options.freeze)
  geometry = TileGeometry.for_model(repairer.config, options.tile_size, options.tile_overlap,
                                    options.batch_size, model)
  mask = read_mask(options.mask_path, options.max_pixels or None) if options.mask_path else None
  if options.mode == "inpaint":
    outputs = ("inpainted",)
  else:
    outputs = serving.OUTPUTS if options.save_intermediate else ("restored",)

  def run(batch, masks):
    return {name: value.numpy() for name, value in repairer(batch, masks).items()}

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
      image, hole = _prepare_image(path, name, options, mask)
    except _SkipImage as e:
      skip(path, name, str(e))
      continue
    try:
      original = image.copy() if options.mode == "inpaint" else None
      result = geometry.repair(
          image, hole, run, outputs,
          progress=functools.partial(progress.tiles, name),
          on_large=lambda large, name=name: progress.message(
              f"{name}: filled {large} hole(s) larger than the model's "
              f"{geometry.reach // 2}-px reach at a reduced scale"))
    except tf.errors.InvalidArgumentError as e:
      # A SavedModel refuses what its checks do not accept (e.g. over its
      # --max_pixels with --tile_size=0): this image is skipped, not the run.
      skip(path, name, f"the model refused it: {_error_text(e.message)}")
      continue
    if options.mode == "inpaint":
      # Only the hole changes: the generator's fill pasted into the photo as read.
      if original.dtype != np.uint8:
        original = np.round(np.clip(original, 0.0, 1.0) * 255.0).astype(np.uint8)
      result["restored"] = np.where(hole[..., None], result.pop("inpainted"), original)
      del original
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
