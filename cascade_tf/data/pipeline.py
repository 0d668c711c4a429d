"""tf.data pipelines that turn clean images into corrupted training pairs.

`make_dataset` is the one entry point. For training:

    decode (source) -> cache -> shuffle -> repeat -> random square crop,
    resized to S -> random flip (or any symmetry: `train_augment`) -> RGB order
    (`train_channel_permute`, when > 0) -> batch -> corrupt -> prefetch

and for evaluation (PROTOCOL.md):

    decode (source) -> central square crop of side min(H, W), anti-aliased
    bicubic resize to S -> cache -> batch -> corrupt with seeds (eval_seed, index)
    -> prefetch

Every element is a dict of batched tensors: `corrupted`, `clean` (float32
[B, S, S, 3] in [0, 1]), `mask` ([B, S, S, 1], 1 in the hole), the blur and
noise parameters used and which corruptions each image got (see
`corruptions.corrupt_batch`), and `seed` ([B, 2],
the stateless seed that produced each image's corruption). Evaluation
elements also carry `index` (position in the split) and `id`.

Images whose short side is below S follow `DataConfig.small_image_rule`:
`upscale` (default) enlarges them so that the short side is S before
cropping; `skip` drops them (they are counted in the log).

Training randomness (crop, flip, corruption) comes from one seeded stream
of per-image seeds, so a run is reproducible from `seed` and every step
sees fresh corruptions.
"""

from __future__ import annotations

from absl import logging
import tensorflow as tf

from cascade_tf import config as config_lib
from cascade_tf.config import DataConfig, TRACKS, TRAIN_TRACKS
from cascade_tf.data import augment as augment_lib
from cascade_tf.data import corruptions
from cascade_tf.data import sources as sources_lib

AUTOTUNE = tf.data.AUTOTUNE


def _short_side(image):
  shape = tf.shape(image)
  return tf.minimum(shape[0], shape[1])


def upscale_to_min_side(image, min_side):
  """Enlarges a uint8 or float image so that its short side is >= `min_side`."""
  shape = tf.shape(image)
  height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  scale = tf.maximum(1.0, tf.cast(min_side, tf.float32) / tf.minimum(height, width))
  new_size = tf.cast(tf.math.ceil(tf.stack([height, width]) * scale), tf.int32)
  dtype = image.dtype

  def enlarge():
    resized = tf.image.resize(image, new_size, method="bicubic")
    if dtype == tf.uint8:
      return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
    return tf.cast(resized, dtype)

  return tf.cond(scale > 1.0, enlarge, lambda: image)


def to_float01(image):
  """uint8 [H, W, 3] -> float32 in [0, 1]."""
  return tf.image.convert_image_dtype(image, tf.float32)


def resize_square(square, size):
  """Anti-aliased bicubic resize of a square image to [size, size], clipped to [0, 1].

  The protocol's resize (PROTOCOL.md): Keys cubic with its support stretched
  by the reduction factor, which matches PIL's BICUBIC to about 57 dB. Tables
  made before 2026-11-29 used an anti-aliased bilinear resize (softer).
  """
  resized = tf.image.resize(to_float01(square), [size, size], method="bicubic", antialias=True)
  return tf.clip_by_value(resized, 0.0, 1.0)


def central_square(image, size):
  """The protocol's preparation: central square of side min(H, W), resized to S."""
  shape = tf.shape(image)
  side = tf.minimum(shape[0], shape[1])
  top = (shape[0] - side) // 2
  left = (shape[1] - side) // 2
  square = image[top:top + side, left:left + side]
  return resize_square(square, size)


def random_square(image, size, seed, min_fraction, augment="flip"):
  """A random square crop resized to [size, size], then a random symmetry.

  The crop's side is drawn uniformly between max(size, min_fraction *
  short side) and the short side, so training sees the image at about the
  scale of the evaluation protocol (which resizes the whole short side to
  S) with some zoom augmentation, rather than at the camera's native scale.

  Args:
    image: uint8 [H, W, 3] with min(H, W) >= size.
    size: output side S in px.
    seed: int [2] stateless seed.
    min_fraction: smallest crop side as a fraction of the short side.
    augment: `flip` (a random left-right flip) or `dihedral` (one of the
      square's eight symmetries), `data/augment.py`.
  """
  count = augment_lib.num_transforms(augment)
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=4)
  shape = tf.shape(image)
  short = tf.minimum(shape[0], shape[1])
  low = tf.maximum(size, tf.cast(tf.math.ceil(min_fraction * tf.cast(short, tf.float32)), tf.int32))
  low = tf.minimum(low, short)
  side = tf.random.stateless_uniform([], seeds[0], minval=low, maxval=short + 1, dtype=tf.int32)
  top = tf.random.stateless_uniform([], seeds[1], minval=0, maxval=shape[0] - side + 1,
                                    dtype=tf.int32)
  left = tf.random.stateless_uniform([], seeds[2], minval=0, maxval=shape[1] - side + 1,
                                     dtype=tf.int32)
  square = image[top:top + side, left:left + side]
  resized = resize_square(square, size)
  if augment == "flip":  # The stream train.py has always drawn.
    return tf.image.stateless_random_flip_left_right(resized, seeds[3])
  k = tf.random.stateless_uniform([], seeds[3], minval=0, maxval=count, dtype=tf.int32)
  return augment_lib.dihedral_tf(resized, k)


def _apply_small_image_rule(dataset, cfg: DataConfig, split):
  if cfg.small_image_rule == "upscale":
    return dataset.map(lambda e: {**e, "image": upscale_to_min_side(e["image"], cfg.image_size)},
                       num_parallel_calls=AUTOTUNE)

  def keep(element):
    big_enough = _short_side(element["image"]) >= cfg.image_size
    return big_enough

  def warn_if_small(element):
    small = _short_side(element["image"]) < cfg.image_size
    tf.cond(small,
            lambda: tf.print("cascade_tf: skipping image", element["id"], "of split", split,
                             "smaller than image_size", cfg.image_size, "(small_image_rule=skip)"),
            tf.no_op)
    return element

  return dataset.map(warn_if_small).filter(keep)


def make_dataset(cfg: DataConfig,
                 *,
                 split: str,
                 track: str,
                 batch_size: int,
                 training: bool,
                 seed: int = 0,
                 source: sources_lib.ImageSource | None = None,
                 max_images: int | None = None,
                 start_index: int = 0,
                 drop_remainder: bool | None = None) -> tf.data.Dataset:
  """Builds the batched pipeline of corrupted/clean pairs.

  Args:
    cfg: data config (source, image and hole size, corruption ranges).
    split: "train" or "test".
    track: an evaluation track (config.TRACKS), or for training also
      "blind" (config.TRAIN_TRACKS). Training holes are of
      `cfg.mask_family` (the *_free tracks: box or free-form); evaluation
      holes are the protocol's.
    batch_size: images per batch (the global batch under tf.distribute).
    training: True for the infinite, shuffled, freshly corrupted stream;
      False for one deterministic pass in the protocol's order.
    seed: seed of the training stream (shuffle, crops, corruptions).
    source: an already loaded source (default: `sources.load_source`).
    max_images: evaluation only: keep the first N images of the split.
    start_index: training only: images already drawn from this stream (a
      resumed run passes batches_drawn * batch_size). Image k of the
      stream always gets the crop and corruption seeds of (seed, k); the
      shuffle order is re-seeded with (seed + start_index).
    drop_remainder: default True for training, False for evaluation.

  Returns:
    A `tf.data.Dataset` of dicts, see the module docstring.
  """
  valid = TRAIN_TRACKS if training else TRACKS
  if track not in valid:
    raise ValueError(f"Unknown {'training' if training else 'evaluation'} track {track!r}: "
                     f"expected one of {valid}.")
  if split not in ("train", "test"):
    raise ValueError(f"Unknown split {split!r}: expected 'train' or 'test'.")
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size}: must be >= 1.")
  if source is None:
    source = sources_lib.load_source(cfg, split)
  size = cfg.image_size
  if drop_remainder is None:
    drop_remainder = training
  dataset = _apply_small_image_rule(source.dataset, cfg, split)

  if training:
    if source.cacheable and cfg.cache:
      dataset = dataset.cache()
    dataset = dataset.shuffle(cfg.shuffle_buffer, seed=seed + start_index,
                              reshuffle_each_iteration=True)
    dataset = dataset.repeat()
    # Image k of the stream gets the stateless seed (seed, k), split into one
    # seed for the crop and flip and one for the corruption.
    per_image = tf.data.Dataset.counter(start=start_index).map(
        lambda k: tf.random.experimental.stateless_split(
            tf.stack([tf.constant(seed, tf.int64), k]), 2))
    dataset = tf.data.Dataset.zip((dataset, per_image))

    def crop(element, seeds):
      clean = random_square(element["image"], size, seeds[0], cfg.train_crop_min_fraction,
                            cfg.train_augment)
      if cfg.train_channel_permute > 0:
        # Its own seed, folded from the corruption's, so that the crops and corruptions
        # of a run without it are drawn exactly as before.
        order = augment_lib.draw_channel_order_tf(
            tf.random.experimental.stateless_fold_in(seeds[1], 1), cfg.train_channel_permute)
        clean = augment_lib.channel_order_tf(clean, order)
      return {"clean": clean, "seed": seeds[1]}

    dataset = dataset.map(crop, num_parallel_calls=AUTOTUNE)
  else:
    dataset = dataset.enumerate()
    if max_images is not None:
      if max_images < 1:
        raise ValueError(f"max_images={max_images}: must be >= 1.")
      dataset = dataset.take(max_images)
    dataset = dataset.map(
        lambda i, e: {"clean": central_square(e["image"], size), "index": i, "id": e["id"],
                      "seed": corruptions.eval_seeds(i, cfg.eval_seed)},
        num_parallel_calls=AUTOTUNE)
    if source.cacheable and cfg.cache:
      dataset = dataset.cache()

  dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)

  # Training holes take the config's mask family (except on the *_free tracks);
  # evaluation holes are the protocol's.
  mask_family = (config_lib.training_mask_family(cfg.mask_family, track) if training else None)

  def corrupt(element):
    out = corruptions.corrupt_batch(element["clean"], element["seed"], track, cfg,
                                    mask_family=mask_family)
    return {**element, **out}

  dataset = dataset.map(corrupt, num_parallel_calls=AUTOTUNE)
  return dataset.prefetch(AUTOTUNE)


def validation_batch(cfg: DataConfig, track: str, num_images: int,
                     source: sources_lib.ImageSource | None = None, split: str = "test") -> dict:
  """The trainers' fixed validation batch: the first `num_images` images of `split` on `track`.

  `track` is an evaluation track (`training/validation.py` names a stage's
  sets: its own `config.validation_track`, `train.val_tracks`, on the test
  split and optionally the training images); the images, crops and
  corruptions are the protocol's (`make_dataset(..., training=False)`), so
  every validation of a run, and of every run on the same data, scores the
  same batch. train.py builds them per stage; scripts/prepare_jax_run.py
  stores them in the JAX trainer's bundle.
  Returns the batch's dict of tensors (fewer images if the split has fewer).
  """
  return next(iter(make_dataset(cfg, split=split, track=track, batch_size=num_images,
                                training=False, source=source, max_images=num_images)))


def log_skipped(source: sources_lib.ImageSource) -> None:
  """Logs how many unreadable files a source has skipped so far."""
  if source.skipped.count:
    logging.warning("%s/%s: skipped %d unreadable image(s): %s", source.name, source.split,
                    source.skipped.count, ", ".join(map(str, source.skipped.names[:20])))
