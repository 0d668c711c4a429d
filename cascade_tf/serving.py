"""Serving a trained cascade: SavedModel export, and repairing photo files.

`export_savedmodel(workdir, export_dir)` writes `<export_dir>/<N>/`, a
SavedModel in TF Serving's versioned layout, with two signatures:

* `serving_default`: `images`, float32 [batch, height, width, 3] in [0, 1],
  any batch, height and width >= 32 (2 ** generator.num_levels). Inside,
  the batch is padded at the bottom and right by reflection to a multiple
  of 32, run through generator and restorer, and cropped back. Outputs
  `restored` and `inpainted`: float32, same shape, clipped to [0, 1].
* `serving_bytes`: `images_bytes`, string [batch] of encoded JPEG or PNG
  images (what TF Serving's REST API passes on after decoding
  `{"b64": ...}`); each image is decoded to RGB, repaired on its own (so
  the sizes may differ) and encoded again. Outputs `restored_bytes` and
  `inpainted_bytes`: string [batch] of PNGs, 8 bits per channel. The
  `_bytes` suffix makes TF Serving's REST API return them as `{"b64": ...}`.

Both take the image as it is: a hole must already be in the pixels (the
networks were trained with holes filled with 0.5). Invalid input fails with
an InvalidArgumentError that says what was expected. Versions are never
overwritten: a version is written to a hidden temporary folder and renamed
into place when complete. `assets.extra/cascade_tf.json` records the config,
the checkpoints the weights came from and the signatures.

`restore_paths(model, inputs, output_dir, options)` is the library behind
`restore.py`: it reads image files and folders, applies a centre hole or a
mask, runs the model in overlapping tiles (`tiling.py`) and writes PNGs;
unreadable files are skipped, named and counted.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
from pathlib import Path
import sys
import time
from typing import Sequence, TextIO
import uuid

from absl import logging
import keras
import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError
import tensorflow as tf

from cascade_tf import config as config_lib
from cascade_tf import inference
from cascade_tf import ranges
from cascade_tf import tiling
from cascade_tf.data import sources

SIGNATURE_IMAGES = "serving_default"
SIGNATURE_BYTES = "serving_bytes"
INPUT_IMAGES = "images"
INPUT_BYTES = "images_bytes"
OUTPUTS = ("restored", "inpainted")
PROVENANCE_FILE = os.path.join("assets.extra", "cascade_tf.json")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# Inputs may overshoot [0, 1] by this much (rounding) before they are
# rejected; it catches 0-255 pixels sent by mistake.
_RANGE_TOLERANCE = 0.01


# --------------------------------------------------------------------------
# The exported module.


class CascadeModule(tf.Module):
  """generator -> restorer behind the two serving signatures."""

  def __init__(self, cascade: keras.Model, multiple: int):
    super().__init__(name="cascade_tf")
    self.cascade = cascade
    self.multiple = multiple

  def _repair(self, images, input_name=INPUT_IMAGES):
    """float32 [B, H, W, 3] in [0, 1] -> {"restored", "inpainted"} in [0, 1].

    Errors name `input_name`, the signature input the images came from.
    """
    shape = tf.shape(images)
    # The signature's static shape is not enforced on what TF Serving (or a
    # loaded signature) feeds in, so rank and channels are checked at run
    # time, from the dynamic shape. (tf.rank and tf.size of the shape would
    # be folded to the static rank 4.)
    rank = tf.reduce_sum(tf.cast(shape >= 0, tf.int32))
    layout_ok = tf.logical_and(tf.equal(rank, 4), tf.reduce_all(tf.equal(shape[-1:], 3)))
    layout_check = tf.debugging.Assert(
        layout_ok,
        [f"{input_name}: expected float32 [batch, height, width, 3] (RGB, batch first; one "
         "image is [1, height, width, 3]); got shape", shape], summarize=8)
    with tf.control_dependencies([layout_check]):
      height, width = shape[1], shape[2]
      largest, smallest = tf.reduce_max(images), tf.reduce_min(images)
    checks = [
        tf.debugging.Assert(
            tf.minimum(height, width) >= self.multiple,
            [f"{input_name}: expected height and width of at least {self.multiple} px "
             "(2 ** generator.num_levels); got [batch, height, width, channels] =", shape],
            summarize=4),
        tf.debugging.Assert(
            largest <= 1.0 + _RANGE_TOLERANCE,
            [f"{input_name}: expected float pixels in [0, 1] (divide 8-bit values by 255); "
             "the largest value is", largest]),
        tf.debugging.Assert(
            smallest >= -_RANGE_TOLERANCE,
            [f"{input_name}: expected float pixels in [0, 1]; the smallest value is",
             smallest]),
    ]
    with tf.control_dependencies(checks):
      pad_h = (-height) % self.multiple
      pad_w = (-width) % self.multiple
      padded = tf.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], mode="REFLECT")
    out = self.cascade(ranges.to_model(padded), training=False)
    return {name: ranges.from_model(out[name][:, :height, :width, :], clip=True)
            for name in OUTPUTS}

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32,
                                              name=INPUT_IMAGES)])
  def serve_images(self, images):
    return self._repair(images)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_BYTES)])
  def serve_bytes(self, images_bytes):
    def one(data):
      image = decode_image(data)
      out = self._repair(image[None], INPUT_BYTES)
      return {f"{name}_bytes": encode_png(out[name][0]) for name in OUTPUTS}

    spec = {f"{name}_bytes": tf.TensorSpec([], tf.string) for name in OUTPUTS}
    return tf.map_fn(one, images_bytes, fn_output_signature=spec)


def decode_image(data):
  """One encoded JPEG or PNG (string scalar) -> float32 [H, W, 3] in [0, 1].

  Grey images are repeated to RGB and alpha is dropped (tf.io.decode_image
  with channels=3); 16-bit PNGs are reduced to 8 bits. Anything but a JPEG
  or PNG fails with an InvalidArgumentError saying so.
  """
  is_png = tf.equal(tf.strings.substr(data, 0, len(_PNG_MAGIC)), _PNG_MAGIC)
  is_jpeg = tf.equal(tf.strings.substr(data, 0, len(_JPEG_MAGIC)), _JPEG_MAGIC)
  check = tf.debugging.Assert(
      tf.logical_or(is_png, is_jpeg),
      [f"{INPUT_BYTES}: expected encoded JPEG or PNG images (raw file bytes; in TF Serving's "
       'REST API as {"b64": "<base64 of the file>"}); got bytes that start neither with the '
       "PNG nor the JPEG signature. Length of the string in bytes:", tf.strings.length(data)])
  with tf.control_dependencies([check]):
    image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
  image.set_shape([None, None, 3])
  return tf.cast(image, tf.float32) / 255.0


def to_uint8(images_01):
  """[0, 1] floats -> uint8 by rounding to the nearest level (error <= 0.5 / 255)."""
  return tf.cast(tf.round(tf.clip_by_value(images_01, 0.0, 1.0) * 255.0), tf.uint8)


def encode_png(image_01):
  """float32 [H, W, 3] in [0, 1] -> PNG bytes (string scalar), 8 bits per channel."""
  return tf.io.encode_png(to_uint8(image_01))


# --------------------------------------------------------------------------
# Export.


def list_versions(export_dir: str) -> list[int]:
  """The integer-named version folders in `export_dir`, ascending."""
  if not tf.io.gfile.isdir(export_dir):
    return []
  names = [name.rstrip("/") for name in tf.io.gfile.listdir(export_dir)]
  return sorted(int(name) for name in names
                if name.isdigit() and tf.io.gfile.isdir(os.path.join(export_dir, name)))


def export_savedmodel(workdir: str, export_dir: str, version: int | None = None) -> str:
  """Exports the cascade of `workdir` as `<export_dir>/<version>/`.

  Args:
    workdir: a training workdir; the networks get its most trained weights
      (`inference.load_workdir_cascade`).
    export_dir: the model's base folder, e.g. exports/cascade (what TF
      Serving's --model_base_path points at).
    version: version number >= 1; default: one more than the largest
      existing version (1 for an empty export_dir).

  Returns:
    The path of the new version folder.

  Raises:
    ValueError: if `workdir` holds no trained cascade, `version` is not
      positive, or `<export_dir>/<version>` already exists.
  """
  if version is not None and version < 1:
    raise ValueError(f"--version={version}: must be a positive integer.")
  existing = list_versions(export_dir)
  next_version = (existing[-1] if existing else 0) + 1
  version = next_version if version is None else version
  final_path = os.path.join(export_dir, str(version))
  if tf.io.gfile.exists(final_path):
    raise ValueError(
        f"--version={version}: {final_path} already exists and versions are never "
        f"overwritten. Omit --version to write version {next_version}, or delete that "
        "folder yourself.")
  loaded = inference.load_workdir_cascade(workdir)
  tf.io.gfile.makedirs(export_dir)
  # A hidden, non-numeric name: TF Serving ignores it while it is written.
  temp_path = os.path.join(export_dir, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
  multiple = 2 ** loaded.config.generator.num_levels
  module = CascadeModule(loaded.model, multiple)
  signatures = {
      SIGNATURE_IMAGES: module.serve_images.get_concrete_function(),
      SIGNATURE_BYTES: module.serve_bytes.get_concrete_function(),
  }
  try:
    tf.saved_model.save(module, temp_path, signatures=signatures)
    provenance = {
        "format": "cascade_tf SavedModel",
        "version": version,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "workdir": os.path.abspath(workdir),
        "weights_from": loaded.weights_from,
        "size_multiple_px": multiple,
        "min_side_px": multiple,
        "training_image_size_px": loaded.config.data.image_size,
        "hole_fill": loaded.config.data.hole_fill,
        "signatures": {
            SIGNATURE_IMAGES: {
                "inputs": {INPUT_IMAGES: "float32 [batch, height, width, 3] in [0, 1]"},
                "outputs": {name: "float32 [batch, height, width, 3] in [0, 1]"
                            for name in OUTPUTS}},
            SIGNATURE_BYTES: {
                "inputs": {INPUT_BYTES: "string [batch], encoded JPEG or PNG"},
                "outputs": {f"{name}_bytes": "string [batch], PNG" for name in OUTPUTS}},
        },
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "config": config_lib.to_dict(loaded.config),
    }
    tf.io.gfile.makedirs(os.path.join(temp_path, "assets.extra"))
    with tf.io.gfile.GFile(os.path.join(temp_path, PROVENANCE_FILE), "w") as f:
      f.write(json.dumps(provenance, indent=2, sort_keys=True))
    tf.io.gfile.rename(temp_path, final_path, overwrite=False)
  except BaseException:
    if tf.io.gfile.exists(temp_path):
      tf.io.gfile.rmtree(temp_path)
    raise
  logging.info("Exported %s (weights: %s) to %s", workdir, loaded.weights_from, final_path)
  return final_path


def read_provenance(savedmodel_dir: str) -> dict | None:
  """The `assets.extra/cascade_tf.json` of an export, or None if it has none."""
  path = os.path.join(savedmodel_dir, PROVENANCE_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def resolve_model(path: str) -> str:
  """A SavedModel version folder, or a workdir, from what the user passed.

  `path` may be a version folder (holds saved_model.pb), an export base
  folder (its largest version is used) or a training workdir (holds
  config.json). ValueError naming `--model` otherwise.
  """
  if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
    return path
  if tf.io.gfile.exists(os.path.join(path, "config.json")):
    return path
  versions = [v for v in list_versions(path)
              if tf.io.gfile.exists(os.path.join(path, str(v), "saved_model.pb"))]
  if versions:
    return os.path.join(path, str(versions[-1]))
  raise ValueError(f"--model={path}: expected a SavedModel version folder (with saved_model.pb), "
                   "an export folder with numbered versions (python export.py --export_dir=...) "
                   "or a training workdir (with config.json).")


# --------------------------------------------------------------------------
# Repairing photo files (restore.py).

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


@dataclasses.dataclass
class RestoreReport:
  """What `restore_paths` did."""

  written: list[str] = dataclasses.field(default_factory=list)  # Restored PNGs.
  skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, reason).
  seconds: float = 0.0


def centre_hole_mask(height: int, width: int) -> np.ndarray:
  """bool [H, W]: a centred square of side min(H, W) // 2 (S/2 for an S x S image)."""
  side = min(height, width) // 2
  top, left = (height - side) // 2, (width - side) // 2
  mask = np.zeros([height, width], bool)
  mask[top:top + side, left:left + side] = True
  return mask


def read_mask(path: str) -> np.ndarray:
  """bool [H, W]: True where the mask image is brighter than mid-grey."""
  try:
    rgb = sources.decode_image_file(path)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"--mask={path}: cannot read it as an image ({type(e).__name__}: {e}).")
  return rgb.astype(np.float32).mean(axis=-1) > 127.5


def resize_short_side(image: np.ndarray, short_side: int) -> np.ndarray:
  """Anti-aliased bilinear resize (as the training pipeline) to a short side of `short_side`."""
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


def write_png(path: str, image_01: np.ndarray) -> None:
  """Writes float [H, W, 3] in [0, 1] as an 8-bit PNG, rounding to the nearest level."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  pixels = np.round(np.clip(image_01, 0.0, 1.0) * 255.0).astype(np.uint8)
  Image.fromarray(pixels).save(path, format="PNG")


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


class _SkipImage(Exception):
  """An input file that `restore_paths` skips; the message says why."""


def _prepare_image(path: str, options: RestoreOptions, mask: np.ndarray | None,
                   fill: float) -> np.ndarray:
  """Reads `path` and applies --resize and the hole: float32 [H, W, 3] in [0, 1]."""
  try:
    image = sources.decode_image_file(path).astype(np.float32) / 255.0
  except FileNotFoundError:
    raise _SkipImage("no such file") from None
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
  if hole is not None:
    image = np.where(hole[..., None], np.float32(fill), image)
  return image


def restore_paths(model: str | inference.Repairer, inputs: Sequence[str], output_dir: str,
                  options: RestoreOptions = RestoreOptions(), *,
                  stream: TextIO = sys.stderr) -> RestoreReport:
  """Repairs every image in `inputs` and writes `<output_dir>/<name>.png`.

  Args:
    model: a SavedModel version folder, an export folder (largest version)
      or a training workdir (see `resolve_model`), or a loaded Repairer.
    inputs: image files and folders (searched recursively).
    output_dir: where the PNGs go; folder layout is kept.
    options: hole, mask, tiling and resizing; see `RestoreOptions`.
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
  if not inputs:
    raise ValueError("No input given: pass image files or folders, e.g. restore.py photo.jpg.")
  if isinstance(model, inference.Repairer):
    repairer = model
  else:
    repairer = inference.Repairer(resolve_model(model))
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
  mask = read_mask(options.mask_path) if options.mask_path else None
  outputs = OUTPUTS if options.save_intermediate else ("restored",)

  def run(batch):
    return {name: value.numpy() for name, value in repairer(batch).items()}

  report = RestoreReport()
  start = time.perf_counter()
  images = find_images(inputs)
  if not images:
    raise ValueError(f"No image files found in {list(inputs)} (looked for "
                     f"{', '.join(sources.IMAGE_EXTENSIONS)}).")
  progress = _Progress(len(images), stream)

  for path, name in images:
    try:
      image = _prepare_image(path, options, mask, fill)
    except _SkipImage as e:
      report.skipped.append((path, str(e)))
      logging.info("Skipped %s: %s", path, e)
      progress.message(f"Skipped {path}: {e}")
      progress.image_done(name, " (skipped)")
      continue
    result = tiling.apply_tiled(image, run, tile_size=tile_size, overlap=overlap,
                                multiple=multiple, batch_size=options.batch_size,
                                outputs=outputs, progress=functools.partial(progress.tiles, name))
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
