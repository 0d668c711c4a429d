"""Packs training images and corruption parameters for scripts/train_jax.py.

The JAX trainer runs on machines without TensorFlow, so what needs
TensorFlow happens here, once:

* corruption parameters: `--kernels` draws of this package's own sampler
  (`cascade_tf.data.corruptions.sample_corruption`: blur kernels half
  Gaussian, half motion, and noise levels, PROTOCOL.md's ranges), saved as
  `corruption_bank.npz` with `blur_kernel` [N, k, k] and `noise_sigma` [N]
  (row i of both from one draw); the trainer applies them with the same
  `cascade_tf.data.appliers` as the tf.data pipeline;
* hole masks, when the config's training holes are not the centre square
  (`--mask_family`, or a preset such as `photo`): `--masks` draws of
  `cascade_tf.data.masks` at the training size, stored as bits
  (`mask_bits` [M, S, S/8] and `mask_family`); the trainer picks one per image;
* training images: every readable image of `--image_dirs`, shrunk so that
  its short side is ceil(S / train_crop_min_fraction) px (the largest size
  a training crop is ever taken at before it is resized to S), re-encoded
  as JPEG quality 95 under `images/`. Unreadable files are skipped and
  counted. Shrinking keeps the bundle small enough to travel (the BSDS300
  train + BSDS500 test images: 30 MB -> about 13 MB);
* the validation batches (`--validation`, on by default): for every
  validation set of the config's stages (`training/validation.py`: each
  stage's own track, `train.val_tracks`, and with `train.val_train_images`
  the same tracks on training images), the very batch train.py validates
  on (`pipeline.validation_batch`: the first `train.val_images` test images
  of `--dataset`, the protocol's crops and corruptions), saved as
  `validation.npz` with `<set>.clean`, `<set>.corrupted` and `<set>.mask`
  (`<set>`: the track, or `<track>@train`); the trainer scores its networks on them every
  `--eval_every` steps, so a JAX run's validation curves are comparable with
  train.py's.

    python scripts/prepare_jax_run.py --preset=paper \
        --image_dirs=../shared/data/BSDS300/images/train,../shared/data/BSDS500-test \
        --dataset=bsd300 --manual_dir=../shared/data/BSDS300 --out_dir=/tmp/jax_bundle

Then `python scripts/train_jax.py --bundle=/tmp/jax_bundle ...` on the
machine with JAX (docs/training.md, "Training with Keras' JAX backend").
"""

from __future__ import annotations

import json
import math
import os
import sys

# The TensorFlow side: the tf.data pipeline runs Keras ops (data/appliers.py) on
# TensorFlow tensors, whatever KERAS_BACKEND the shell has for the trainer.
os.environ["KERAS_BACKEND"] = "tensorflow"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
from PIL import Image

import cascade_tf  # noqa: F401  (before TensorFlow)
from cascade_tf import cli
from cascade_tf.data import corruptions
from cascade_tf.data import masks as masks_lib
from cascade_tf.data import pipeline
from cascade_tf.data import sources
from cascade_tf.training import stages as stages_lib
from cascade_tf.training import validation as validation_lib
import tensorflow as tf  # pylint: disable=g-bad-import-order

_IMAGE_DIRS = flags.DEFINE_list("image_dirs", None, "Folders of training images.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Bundle folder to write (must not exist).")
_KERNELS = flags.DEFINE_integer("kernels", 4096, "Corruption draws (blur kernel + noise level) "
                                "in the bank.")
_KERNEL_SEED = flags.DEFINE_integer("kernel_seed", 1, "Seed of the bank's draws.")
_MASKS = flags.DEFINE_integer("masks", 2048, "Hole masks in the bank when the training holes are "
                              "not the centre square.")
_QUALITY = flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality of the packed images.")
_VALIDATION = flags.DEFINE_bool("validation", True, "Store train.py's validation batches (the "
                                "first train.val_images test images of --dataset) in the bundle.")
# Every config flag of train.py, so that the bundle is made with the very flags the
# run trains with (scripts/table2.py --trainer=jax); the data's, the masks' and
# the stages' tracks (for the validation batches) are the ones that matter here.
_CONFIG_FLAGS = cli.TRAIN_FLAGS
VALIDATION_FILE = "validation.npz"
cli.define_flags(flags, _CONFIG_FLAGS)


def corruption_bank(data_cfg, count: int, seed: int) -> dict[str, np.ndarray]:
  """`count` draws of the package's sampler: {"blur_kernel" [count, k, k], "noise_sigma" [count]}.

  Draw i uses the stateless seed (seed, i).
  """
  seeds = tf.stack([tf.fill([count], tf.constant(seed, tf.int64)),
                    tf.range(count, dtype=tf.int64)], axis=1)
  size = data_cfg.blur_kernel_size

  def draw(one_seed):
    params = corruptions.sample_corruption(one_seed, [1, 1, 1], data_cfg)
    return {"blur_kernel": params["blur_kernel"], "noise_sigma": params["noise_sigma"]}

  bank = tf.map_fn(draw, seeds, fn_output_signature={
      "blur_kernel": tf.TensorSpec([size, size], tf.float32),
      "noise_sigma": tf.TensorSpec([], tf.float32)})
  return {name: value.numpy().astype(np.float32) for name, value in bank.items()}


def mask_bank(data_cfg, count: int, seed: int) -> dict[str, np.ndarray]:
  """`count` masks of `data_cfg.mask_family` as bits: {"mask_bits" [count, S, S/8], "mask_family"}.

  Mask i uses the stateless seed (seed, i) folded with 1, as the training
  pipeline folds an image's seed for its mask.
  """
  size = data_cfg.image_size
  if size % 8:
    raise ValueError(f"--image_size={size}: the mask bank packs 8 pixels per byte; use a "
                     "multiple of 8.")
  seeds = corruptions.fold_in(corruptions.eval_seeds(tf.range(count), seed), 1)
  drawn = masks_lib.masks(data_cfg.mask_family, seeds, size, size, data_cfg).numpy()
  return {"mask_bits": np.packbits(drawn[..., 0] > 0.5, axis=-1),
          "mask_family": np.array(data_cfg.mask_family)}


def validation_batches(cfg) -> dict[str, np.ndarray]:
  """train.py's validation batches of every validation set of the config's stages.

  {"<set>.clean", "<set>.corrupted", "<set>.mask"}: float32 NumPy arrays
  from `pipeline.validation_batch`, one per set of `validation.all_sets`
  (named by `validation.key`: the track, or `<track>@train` for the
  training images of `train.val_train_images`).
  """
  arrays, sources_by_split = {}, {}
  for track, split in validation_lib.all_sets(cfg, stages_lib.STAGES):
    if split not in sources_by_split:
      sources_by_split[split] = sources.load_source(cfg.data, split)
    batch = pipeline.validation_batch(cfg.data, track, validation_lib.num_images(cfg, split),
                                      source=sources_by_split[split], split=split)
    for name in ("clean", "corrupted", "mask"):
      arrays[f"{validation_lib.key(track, split)}.{name}"] = (
          batch[name].numpy().astype(np.float32))
  return arrays


def pack_images(image_dirs, out_dir: str, short_side: int, quality: int) -> dict:
  """Shrinks and re-encodes every readable image; returns counts."""
  os.makedirs(out_dir, exist_ok=True)
  packed, skipped = 0, []
  for directory in image_dirs:
    if not os.path.isdir(directory):
      raise FileNotFoundError(f"--image_dirs: {directory} is not a folder.")
    for file_name in sorted(os.listdir(directory)):
      if not file_name.lower().endswith(sources.IMAGE_EXTENSIONS):
        continue
      path = os.path.join(directory, file_name)
      try:
        # The package's decoder: the same rules as training from files (EXIF
        # orientation, alpha on white, 16-bit and TIFF handling).
        image = Image.fromarray(sources.decode_image_file(path))
      except Exception as error:  # pylint: disable=broad-except
        # Decoders raise many types on corrupt data; one bad file is skipped.
        skipped.append(f"{path}: {type(error).__name__}: {error}")
        continue
      scale = short_side / min(image.size)
      if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=None)
      stem = os.path.splitext(file_name)[0]
      image.save(os.path.join(out_dir, f"{packed:05d}_{stem}.jpg"), quality=quality)
      packed += 1
  for line in skipped:
    print(f"skipped unreadable image {line}", file=sys.stderr)
  return {"images": packed, "skipped": len(skipped)}


def main(argv):
  del argv
  if not _IMAGE_DIRS.value or not _OUT_DIR.value:
    raise app.UsageError("--image_dirs and --out_dir are required.")
  if os.path.exists(_OUT_DIR.value):
    raise app.UsageError(f"--out_dir={_OUT_DIR.value} exists; choose a new folder.")
  cfg = cli.config_from_flags(flags.FLAGS, _CONFIG_FLAGS)
  short_side = math.ceil(cfg.data.image_size / cfg.data.train_crop_min_fraction)
  counts = pack_images(_IMAGE_DIRS.value, os.path.join(_OUT_DIR.value, "images"), short_side,
                       _QUALITY.value)
  if not counts["images"]:
    raise app.UsageError(f"--image_dirs={','.join(_IMAGE_DIRS.value)}: no readable image.")
  bank = corruption_bank(cfg.data, _KERNELS.value, _KERNEL_SEED.value)
  if cfg.data.mask_family != "centre":
    bank.update(mask_bank(cfg.data, _MASKS.value, _KERNEL_SEED.value))
  np.savez(os.path.join(_OUT_DIR.value, "corruption_bank.npz"), **bank)
  validation = {}
  if _VALIDATION.value:
    validation = validation_batches(cfg)
    np.savez_compressed(os.path.join(_OUT_DIR.value, VALIDATION_FILE), **validation)
  info = {"image_dirs": _IMAGE_DIRS.value, "short_side": short_side,
          "jpeg_quality": _QUALITY.value, "kernels": int(bank["blur_kernel"].shape[0]),
          "kernel_seed": _KERNEL_SEED.value, "mask_family": cfg.data.mask_family,
          "masks": int(bank["mask_bits"].shape[0]) if "mask_bits" in bank else 0,
          "validation": {"dataset": cfg.data.dataset, "images": {
              k.split(".")[0]: int(v.shape[0]) for k, v in validation.items()}},
          **counts}
  with open(os.path.join(_OUT_DIR.value, "bundle.json"), "w") as f:
    json.dump(info, f, indent=1)
  print(json.dumps(info))


if __name__ == "__main__":
  app.run(main)
