"""The SavedModel export that TF Serving loads.

`export_savedmodel(workdir, export_dir)` writes `<export_dir>/<N>/`, a
SavedModel in TF Serving's versioned layout, with four signatures:

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

* `serving_masked`: `images` as above and `masks`, float32 [batch, height,
  width, 1], values > 0.5 in the hole. The hole is filled with the training's
  fill value (0.5) and the mask goes to the cascade (a generator with the
  mask channel sees it; with `generator.composite` the pixels outside the
  hole pass to the restorer untouched). Outputs as `serving_default`.
* `serving_masked_bytes`: `images_bytes` and `masks_bytes`, string [batch],
  pair by pair; a mask is any JPEG or PNG whose pixels brighter than 0.5
  (after conversion to grey) are the hole. Outputs as `serving_bytes`.

The unmasked signatures take the image as it is: no pixel is marked as a
hole, so a model without the mask channel fills grey holes as trained, and
a mask-channel model treats every pixel as known. Invalid input fails with
an InvalidArgumentError that says what was expected, and so does input over
the export's pixel limit (`max_pixels`): encoded images are measured from
their header, before anything is decoded.

The SavedModel is written by Keras' `ExportArchive`, so that TF Serving's
session-based loader (`LoadSavedModel`, also used by `saved_model_cli run`)
restores every variable, not only `tf.saved_model.load`. Versions are never
overwritten: a version is written to a hidden temporary folder and renamed
into place when complete. `assets.extra/cascade_tf.json` records the config,
the checkpoints the weights came from, the pixel limit and the signatures
(`inference.read_provenance` reads it back).

Repairing photo files on this machine (`restore.py`) is `restoring.py`.
"""

from __future__ import annotations

import datetime
import json
import os
import uuid

from absl import logging
import keras
import tensorflow as tf

from cascade_tf import config as config_lib
from cascade_tf import inference
from cascade_tf import ranges
from cascade_tf.models import cascade as cascade_lib

SIGNATURE_IMAGES = "serving_default"
SIGNATURE_BYTES = "serving_bytes"
SIGNATURE_MASKED = "serving_masked"
SIGNATURE_MASKED_BYTES = "serving_masked_bytes"
INPUT_IMAGES = "images"
INPUT_BYTES = "images_bytes"
INPUT_MASKS = "masks"
INPUT_MASKS_BYTES = "masks_bytes"
OUTPUTS = ("restored", "inpainted")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# The default of export.py --max_pixels: 2 ** 24 = 16.8 million pixels, e.g.
# 4920 x 3264 (a 16-megapixel camera's photo).
DEFAULT_MAX_PIXELS = 2 ** 24
# Inputs may overshoot [0, 1] by this much (rounding) before they are
# rejected; it catches 0-255 pixels sent by mistake.
_RANGE_TOLERANCE = 0.01


# --------------------------------------------------------------------------
# The exported functions.


class CascadeModule:
  """generator -> restorer behind the two serving signatures.

  A plain holder of the Keras cascade and the export's constants; the
  SavedModel is written by `keras.export.ExportArchive` (see
  `export_savedmodel`), which tracks the model's variables so that both
  loaders restore them. With `freeze` the signatures call the cascade
  frozen (`inference.freeze`), and there are no variables to track.
  """

  def __init__(self, cascade: keras.Model, multiple: int, max_pixels: int,
               hole_fill: float = 0.5, freeze: bool = False):
    self.cascade = cascade
    self.multiple = multiple
    self.max_pixels = max_pixels
    self.hole_fill = hole_fill
    run = lambda corrupted, masks: cascade(cascade_lib.cascade_inputs(corrupted, masks),
                                           training=False)
    # Frozen, every signature calls one graph whose weights are constants.
    self._run = inference.freeze(run, *inference.BATCH_SPECS) if freeze else run

  def _check_masks(self, masks, images, mask_name):
    """The masks [B, H, W, 1] of `images`, binarised (> 0.5 is the hole), or an
    InvalidArgumentError naming `mask_name`."""
    shape, image_shape = tf.shape(masks), tf.shape(images)
    rank = tf.reduce_sum(tf.cast(shape >= 0, tf.int32))
    layout_ok = tf.logical_and(tf.equal(rank, 4), tf.reduce_all(tf.equal(shape[-1:], 1)))
    layout_check = tf.debugging.Assert(
        layout_ok, [f"{mask_name}: expected float32 [batch, height, width, 1] (1 in the hole, "
                    "0 elsewhere); got shape", shape], summarize=8)
    with tf.control_dependencies([layout_check]):
      same = tf.reduce_all(tf.equal(shape[:3], image_shape[:3]))
    size_check = tf.debugging.Assert(
        same, [f"{mask_name}: expected one mask per image, of the image's height and width; "
               "got masks [batch, height, width, 1] =", shape, "for images", image_shape],
        summarize=8)
    with tf.control_dependencies([size_check]):
      largest, smallest = tf.reduce_max(masks), tf.reduce_min(masks)
    range_check = tf.debugging.Assert(
        tf.logical_and(largest <= 1.0 + _RANGE_TOLERANCE, smallest >= -_RANGE_TOLERANCE),
        [f"{mask_name}: expected values in [0, 1] (1 in the hole); got values from", smallest,
         "to", largest])
    with tf.control_dependencies([range_check]):
      return tf.cast(masks > 0.5, tf.float32)

  def _repair(self, images, input_name=INPUT_IMAGES, masks=None, mask_name=INPUT_MASKS):
    """float32 [B, H, W, 3] in [0, 1] -> {"restored", "inpainted"} in [0, 1].

    With `masks` ([B, H, W, 1], > 0.5 in the hole) the hole is filled with
    the training's fill value and the mask goes to the cascade; without, no
    pixel is a hole (the pixels are taken as they are). Errors name
    `input_name` and `mask_name`, the signature inputs the tensors came from.
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
      shape64 = tf.cast(shape, tf.int64)
      pixels = shape64[0] * shape64[1] * shape64[2]
    size_check = pixel_limit_check(
        pixels, self.max_pixels,
        f"{input_name}: too large; a request may hold (batch * height * width)",
        [pixels, "pixels; [batch, height, width, channels] =", shape])
    with tf.control_dependencies([size_check]):
      height, width = shape[1], shape[2]
      largest, smallest = tf.reduce_max(images), tf.reduce_min(images)
    checks = [
        tf.debugging.Assert(
            tf.minimum(height, width) >= self.multiple,
            [f"{input_name}: expected height and width of at least {self.multiple} px "
             "(the networks' size multiple); got [batch, height, width, channels] =", shape],
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
      if masks is not None:
        masks = self._check_masks(masks, images, mask_name)
        images = images * (1.0 - masks) + self.hole_fill * masks
        masks = tf.pad(masks, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], mode="REFLECT")
      padded = tf.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], mode="REFLECT")
    if masks is None:
      masks = tf.zeros_like(padded[..., :1])  # No pixel is a hole.
    out = self._run(ranges.to_model(padded), masks)
    return {name: ranges.from_model(out[name][:, :height, :width, :], clip=True)
            for name in OUTPUTS}

  def serve_images(self, images):
    """The `serving_default` signature."""
    return self._repair(images)

  def serve_bytes(self, images_bytes):
    """The `serving_bytes` signature: each image decoded, repaired and encoded on its own."""
    def one(data):
      image = decode_image(data, self.max_pixels)
      out = self._repair(image[None], INPUT_BYTES)
      return {f"{name}_bytes": encode_png(out[name][0]) for name in OUTPUTS}

    spec = {f"{name}_bytes": tf.TensorSpec([], tf.string) for name in OUTPUTS}
    return tf.map_fn(one, images_bytes, fn_output_signature=spec)

  def serve_masked(self, images, masks):
    """The `serving_masked` signature: images and their hole masks."""
    return self._repair(images, masks=masks)

  def serve_masked_bytes(self, images_bytes, masks_bytes):
    """The `serving_masked_bytes` signature: encoded images and masks, pair by pair."""
    count_check = tf.debugging.assert_equal(
        tf.shape(images_bytes), tf.shape(masks_bytes),
        message=f"{INPUT_MASKS_BYTES}: expected one mask per image of {INPUT_BYTES}")

    def one(pair):
      data, mask_data = pair
      image = decode_image(data, self.max_pixels)
      mask = tf.image.rgb_to_grayscale(decode_image(mask_data, self.max_pixels,
                                                    INPUT_MASKS_BYTES))
      out = self._repair(image[None], INPUT_BYTES, mask[None], INPUT_MASKS_BYTES)
      return {f"{name}_bytes": encode_png(out[name][0]) for name in OUTPUTS}

    spec = {f"{name}_bytes": tf.TensorSpec([], tf.string) for name in OUTPUTS}
    with tf.control_dependencies([count_check]):
      images_bytes = tf.identity(images_bytes)
    return tf.map_fn(one, (images_bytes, masks_bytes), fn_output_signature=spec)


def pixel_limit_check(pixels, max_pixels: int, what: str, got: list):
  """An Assert op that `pixels` (int64 scalar) is at most `max_pixels` (0: no limit).

  The message is `what`, the limit, then "got" and the tensors in `got`.
  """
  if not max_pixels:
    return tf.no_op()
  return tf.debugging.Assert(
      pixels <= max_pixels,
      [f"{what} at most {max_pixels} pixels (export.py --max_pixels, a limit fixed when the "
       "model was exported); got", *got], summarize=4)


def _big_endian_uint32(data, offset: int):
  """The unsigned 32-bit big-endian integer at byte `offset` of a string scalar, as int64."""
  raw = tf.io.decode_raw(tf.strings.substr(data, offset, 4), tf.uint8)
  raw = tf.cast(raw, tf.int64)
  return raw[0] * 2 ** 24 + raw[1] * 2 ** 16 + raw[2] * 2 ** 8 + raw[3]


def encoded_image_size(data, input_name: str = INPUT_BYTES):
  """(height, width), int64 scalars, read from a JPEG or PNG header without decoding pixels.

  PNG: the IHDR chunk, which every PNG has first (bytes 8-24); JPEG: the
  frame header, found by `tf.io.extract_jpeg_shape` (libjpeg reading the
  markers only). These are the sizes the decoders allocate for, so a check
  on them bounds the decoder's memory before it runs. Bytes that are
  neither fail with an InvalidArgumentError saying so.
  """
  length = tf.strings.length(data)
  is_png = tf.equal(tf.strings.substr(data, 0, len(_PNG_MAGIC)), _PNG_MAGIC)
  is_jpeg = tf.equal(tf.strings.substr(data, 0, len(_JPEG_MAGIC)), _JPEG_MAGIC)
  kind_check = tf.debugging.Assert(
      tf.logical_or(is_png, is_jpeg),
      [f"{input_name}: expected encoded JPEG or PNG images (raw file bytes; in TF Serving's "
       'REST API as {"b64": "<base64 of the file>"}); got bytes that start neither with the '
       "PNG nor the JPEG signature. Length of the string in bytes:", length])

  def png_size():
    header_check = tf.debugging.Assert(
        tf.logical_and(length >= 24, tf.equal(tf.strings.substr(data, 12, 4), b"IHDR")),
        [f"{input_name}: a PNG signature without the IHDR header chunk that must follow it "
         "(truncated or corrupt PNG). Length of the string in bytes:", length])
    with tf.control_dependencies([header_check]):
      return _big_endian_uint32(data, 20), _big_endian_uint32(data, 16)

  def jpeg_size():
    shape = tf.cast(tf.io.extract_jpeg_shape(data), tf.int64)
    return shape[0], shape[1]

  with tf.control_dependencies([kind_check]):
    return tf.cond(is_png, png_size, jpeg_size)


def decode_image(data, max_pixels: int = 0, input_name: str = INPUT_BYTES):
  """One encoded JPEG or PNG (string scalar) -> float32 [H, W, 3] in [0, 1].

  The header is read first (`encoded_image_size`): an image of more than
  `max_pixels` pixels (0: no limit) fails with an InvalidArgumentError
  naming the limit before any pixel is decoded. Grey images are repeated to
  RGB and alpha is dropped (tf.io.decode_image with channels=3); 16-bit PNGs
  are reduced to 8 bits. Anything but a JPEG or PNG fails with an
  InvalidArgumentError saying so. Errors name `input_name`.
  """
  height, width = encoded_image_size(data, input_name)
  size_check = pixel_limit_check(
      height * width, max_pixels, f"{input_name}: image too large; each image may have",
      ["height x width =", height, width, "according to its header (nothing was decoded)"])
  with tf.control_dependencies([size_check]):
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


def export_savedmodel(workdir: str, export_dir: str, version: int | None = None, *,
                      max_pixels: int = DEFAULT_MAX_PIXELS, self_ensemble: int = 1,
                      freeze: bool = False) -> str:
  """Exports the cascade of `workdir` as `<export_dir>/<version>/`.

  Args:
    workdir: a training workdir, whose most trained weights the networks
      get (`inference.load_workdir_cascade`), or `pretrained`, the shipped
      cascade.
    export_dir: the model's base folder, e.g. exports/cascade (what TF
      Serving's --model_base_path points at).
    version: version number >= 1; default: one more than the largest
      existing version (1 for an empty export_dir).
    max_pixels: the most pixels an image (bytes signature, read from its
      header before decoding) or a request (float signature, batch *
      height * width) may have; larger ones fail with InvalidArgumentError.
      0: no limit, which lets one request exhaust the server's memory.
    self_ensemble: every signature runs each network on this many
      symmetries of its input and averages (`cascade.forward`): n times the
      compute; recorded in the provenance.
    freeze: write the weights as constants of the signatures' graph
      (`inference.freeze`) rather than as variables: the SavedModel has no
      variables to restore and TensorFlow optimises the graph with the
      weights in it; recorded in the provenance as `frozen`.

  Returns:
    The path of the new version folder.

  Raises:
    ValueError: if `workdir` holds no trained cascade, `version` is not
      positive, `max_pixels` is negative, `self_ensemble` is not one of
      cascade.SELF_ENSEMBLE_SIZES, or `<export_dir>/<version>` already
      exists.
  """
  if version is not None and version < 1:
    raise ValueError(f"--version={version}: must be a positive integer.")
  if max_pixels < 0:
    raise ValueError(f"--max_pixels={max_pixels}: must be a positive number of pixels, or 0 "
                     "for no limit.")
  existing = inference.list_versions(export_dir)
  next_version = (existing[-1] if existing else 0) + 1
  version = next_version if version is None else version
  final_path = os.path.join(export_dir, str(version))
  if tf.io.gfile.exists(final_path):
    raise ValueError(
        f"--version={version}: {final_path} already exists and versions are never "
        f"overwritten. Omit --version to write version {next_version}, or delete that "
        "folder yourself.")
  loaded = inference.load_cascade(workdir, self_ensemble=self_ensemble)
  tf.io.gfile.makedirs(export_dir)
  # A hidden, non-numeric name: TF Serving ignores it while it is written.
  temp_path = os.path.join(export_dir, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
  multiple = loaded.config.size_multiple()
  module = CascadeModule(loaded.model, multiple, max_pixels, loaded.config.data.hole_fill,
                         freeze=freeze)
  # Keras' export archive, not tf.saved_model.save of a tf.Module: the
  # archive lists the variables the functions use where the MetaGraph's
  # saver finds them, so that TF Serving's session-based loader
  # (LoadSavedModel, also behind `saved_model_cli run`) restores them.
  archive = keras.export.ExportArchive()
  if not freeze:
    archive.track(loaded.model)
  archive.add_endpoint(SIGNATURE_IMAGES, module.serve_images, input_signature=[
      tf.TensorSpec([None, None, None, 3], tf.float32, name=INPUT_IMAGES)])
  archive.add_endpoint(SIGNATURE_BYTES, module.serve_bytes, input_signature=[
      tf.TensorSpec([None], tf.string, name=INPUT_BYTES)])
  archive.add_endpoint(SIGNATURE_MASKED, module.serve_masked, input_signature=[
      tf.TensorSpec([None, None, None, 3], tf.float32, name=INPUT_IMAGES),
      tf.TensorSpec([None, None, None, 1], tf.float32, name=INPUT_MASKS)])
  archive.add_endpoint(SIGNATURE_MASKED_BYTES, module.serve_masked_bytes, input_signature=[
      tf.TensorSpec([None], tf.string, name=INPUT_BYTES),
      tf.TensorSpec([None], tf.string, name=INPUT_MASKS_BYTES)])
  try:
    archive.write_out(temp_path, verbose=False)
    provenance = {
        "format": "cascade_tf SavedModel",
        "version": version,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "workdir": workdir if inference.is_pretrained(workdir) else os.path.abspath(workdir),
        "weights_from": loaded.weights_from,
        "size_multiple_px": multiple,
        "max_pixels": max_pixels,
        "self_ensemble": self_ensemble,
        "frozen": freeze,
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
            SIGNATURE_MASKED: {
                "inputs": {INPUT_IMAGES: "float32 [batch, height, width, 3] in [0, 1]",
                           INPUT_MASKS: "float32 [batch, height, width, 1], > 0.5 in the hole"},
                "outputs": {name: "float32 [batch, height, width, 3] in [0, 1]"
                            for name in OUTPUTS}},
            SIGNATURE_MASKED_BYTES: {
                "inputs": {INPUT_BYTES: "string [batch], encoded JPEG or PNG",
                           INPUT_MASKS_BYTES: "string [batch], encoded JPEG or PNG, grey "
                                              "> 0.5 in the hole"},
                "outputs": {f"{name}_bytes": "string [batch], PNG" for name in OUTPUTS}},
        },
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "config": config_lib.to_dict(loaded.config),
    }
    tf.io.gfile.makedirs(os.path.join(temp_path, "assets.extra"))
    with tf.io.gfile.GFile(os.path.join(temp_path, inference.PROVENANCE_FILE), "w") as f:
      f.write(json.dumps(provenance, indent=2, sort_keys=True))
    tf.io.gfile.rename(temp_path, final_path, overwrite=False)
  except BaseException:
    if tf.io.gfile.exists(temp_path):
      tf.io.gfile.rmtree(temp_path)
    raise
  logging.info("Exported %s (weights: %s) to %s", workdir, loaded.weights_from, final_path)
  return final_path
