"""The corruption samplers: pure, seedable TensorFlow ops (PROTOCOL.md).

Everything here is graph-compatible and works inside `tf.data`:

* `gaussian_kernel`, `motion_kernel`: 2-D blur kernels that sum to 1.
* `sample_corruption`: draws one image's blur kernel, noise level and noise
  field from a stateless seed of shape [2].
* `corrupt_batch`: corrupts a batch of clean images given one seed per image,
  on one of the tracks (`config.TRAIN_TRACKS`): the parameters and masks
  (`masks.py`) are sampled here and applied by `appliers` (keras.ops,
  shared with the JAX trainer).

Randomness is always stateless: the caller passes a seed per image. The
evaluation pipeline uses (eval_seed, image index) so that reruns and
different methods see identical inputs; the training pipeline draws fresh
seeds from a seeded stream, so every step sees new corruptions.

Images are float32 in [0, 1] here (the protocol's scale). Kernels are
applied with symmetric (reflect) padding; noise is added after the blur and
the result clipped to [0, 1]; the hole comes last.

Conventions: kernels are [k, k] with rows going down the image and columns
going right. A motion blur of angle `a` is a line through the kernel centre
along the direction (cos a, -sin a) in (column, row) coordinates, i.e. `a`
is measured counter-clockwise from the image's x-axis as the eye sees it.
"""

import math

import tensorflow as tf

from cascade_tf.config import BLIND_TRACKS, DataConfig, TRACK_CORRUPTIONS, TRAIN_TRACKS
from cascade_tf.data import appliers
from cascade_tf.data import masks as masks_lib

# Blur types recorded in the element dict.
BLUR_NONE, BLUR_GAUSSIAN, BLUR_MOTION = 0, 1, 2


def _kernel_coordinates(size):
  """Returns (rows, cols), each [size, size], centred on the kernel centre."""
  half = (size - 1) / 2.0
  coords = tf.range(size, dtype=tf.float32) - half
  rows, cols = tf.meshgrid(coords, coords, indexing="ij")
  return rows, cols


def gaussian_kernel(sigma, size=15):
  """Isotropic Gaussian kernel.

  Args:
    sigma: scalar float tensor, standard deviation in px (> 0).
    size: odd int, side of the kernel in px.

  Returns:
    float32 [size, size], exp(-(r^2 + c^2) / (2 sigma^2)) normalised to sum 1.
  """
  sigma = tf.cast(sigma, tf.float32)
  rows, cols = _kernel_coordinates(size)
  kernel = tf.exp(-(rows**2 + cols**2) / (2.0 * sigma**2))
  return kernel / tf.reduce_sum(kernel)


def motion_kernel(length, angle, size=15):
  """Anti-aliased linear motion-blur kernel through the centre.

  Each kernel pixel is weighted by its coverage of a segment of `length`
  px and width 1 px: (1 - perpendicular distance) clipped to [0, 1], times
  the share of the pixel that lies within the segment's extent along its
  direction, (length / 2 + 1/2 - |along|) clipped to [0, 1]. The weights
  are normalised to sum 1, so a length below 1 degrades gracefully to a
  delta.

  Args:
    length: scalar float tensor, segment length in px (>= 0, at most size).
    angle: scalar float tensor, radians, counter-clockwise from the x-axis.
    size: odd int, side of the kernel in px.

  Returns:
    float32 [size, size] summing to 1.
  """
  length = tf.cast(length, tf.float32)
  angle = tf.cast(angle, tf.float32)
  rows, cols = _kernel_coordinates(size)
  dir_col, dir_row = tf.cos(angle), -tf.sin(angle)
  along = cols * dir_col + rows * dir_row
  across = -cols * dir_row + rows * dir_col
  weight_across = tf.clip_by_value(1.0 - tf.abs(across), 0.0, 1.0)
  weight_along = tf.clip_by_value(length / 2.0 + 0.5 - tf.abs(along), 0.0, 1.0)
  kernel = weight_across * weight_along
  # The centre pixel always has weight 1 in both factors, so the sum is > 0.
  return kernel / tf.reduce_sum(kernel)


def delta_kernel(size=15):
  """The identity kernel: 1 at the centre, 0 elsewhere."""
  centre = size // 2
  return tf.scatter_nd([[centre, centre]], [1.0], [size, size])


def sample_corruption(seed, image_shape, cfg: DataConfig):
  """Draws one image's blur and noise from a stateless seed.

  Args:
    seed: int32/int64 tensor of shape [2].
    image_shape: [H, W, C] (a tensor or list) of the image to corrupt.
    cfg: the data config (kernel size and parameter ranges).

  Returns:
    A dict: `blur_kernel` float32 [k, k] (sum 1); `blur_type` int32
    (BLUR_GAUSSIAN or BLUR_MOTION); `gaussian_sigma`, `motion_length`,
    `motion_angle` float32 (the unused family's values are 0); `noise_sigma`
    float32; `noise` float32 [H, W, C], standard normal times noise_sigma.
  """
  seed = tf.cast(seed, tf.int64)
  seeds = tf.random.experimental.stateless_split(seed, num=6)
  size = cfg.blur_kernel_size

  def uniform(seed_i, lo, hi):
    return tf.random.stateless_uniform([], seed_i, minval=lo, maxval=hi, dtype=tf.float32)

  is_gaussian = uniform(seeds[0], 0.0, 1.0) < cfg.gaussian_blur_prob
  sigma = uniform(seeds[1], cfg.gaussian_sigma_min, cfg.gaussian_sigma_max)
  length = uniform(seeds[2], cfg.motion_length_min, cfg.motion_length_max)
  angle = uniform(seeds[3], 0.0, math.pi)
  kernel = tf.where(is_gaussian, gaussian_kernel(sigma, size), motion_kernel(length, angle, size))
  noise_sigma = uniform(seeds[4], cfg.noise_sigma_min, cfg.noise_sigma_max)
  noise = noise_sigma * tf.random.stateless_normal(image_shape, seeds[5], dtype=tf.float32)
  zero = tf.constant(0.0, tf.float32)
  return {
      "blur_kernel": kernel,
      "blur_type": tf.where(is_gaussian, BLUR_GAUSSIAN, BLUR_MOTION),
      "gaussian_sigma": tf.where(is_gaussian, sigma, zero),
      "motion_length": tf.where(is_gaussian, zero, length),
      "motion_angle": tf.where(is_gaussian, zero, angle),
      "noise_sigma": noise_sigma,
      "noise": noise,
  }


def protocol_mask_family(track: str) -> str:
  """The mask family of an evaluation track: `centre` (inpaint, joint) or `free` (*_free)."""
  return "free" if track.endswith("_free") else "centre"


def fold_in(seeds, data: int):
  """Each seed [B, 2] folded with `data`: an independent stream per image, int64 [B, 2]."""
  return tf.map_fn(lambda s: tf.cast(tf.random.experimental.stateless_fold_in(s, data), tf.int64),
                   seeds, fn_output_signature=tf.int64)


def _blind_flags(seeds, cfg: DataConfig):
  """Track `blind`: per image, independent draws of (hole, blur, noise), bool [B] each."""
  u = tf.map_fn(lambda s: tf.random.stateless_uniform([3], s), fold_in(seeds, 2),
                fn_output_signature=tf.float32)
  return (u[:, 0] < cfg.blind_hole_prob, u[:, 1] < cfg.blind_blur_prob,
          u[:, 2] < cfg.blind_noise_prob)


def corrupt_batch(clean, seeds, track, cfg: DataConfig, *, mask_family: str | None = None):
  """Corrupts a batch of clean images on one track (PROTOCOL.md, config.TRACK_CORRUPTIONS).

  Args:
    clean: float32 [B, H, W, 3] in [0, 1].
    seeds: int [B, 2], one stateless seed per image. The same seed always
      gives the same corruption, whatever the batch it sits in. The blur
      and noise come from the seed itself, the mask from its fold-in with
      1 and `blind`'s choices from its fold-in with 2, so `joint` and
      `joint_free` differ only in the mask.
    track: one of config.TRAIN_TRACKS: "inpaint" (hole only), "restore"
      (blur + noise), "joint" (blur, then noise, then the hole),
      "inpaint_free" and "joint_free" (the same with free-form masks),
      "clean" (nothing), "blind_restore" (training: blur and noise, each
      or not, independently) or "blind" (training: each image gets a hole, a
      blur and noise or not, independently, with `cfg.blind_*_prob`).
    cfg: the data config.
    mask_family: family of the holes (data/masks.py); None: the
      protocol's for the track (`centre`, or `free` on *_free tracks),
      `cfg.mask_family` on `blind`.

  Returns:
    A dict with `corrupted` and `clean` float32 [B, H, W, 3] in [0, 1],
    `mask` float32 [B, H, W, 1] (1 in the hole; zeros without one),
    `blur_kernel` [B, k, k] (a delta without blur), `blur_type` int32 [B],
    `gaussian_sigma`, `motion_length`, `motion_angle`, `noise_sigma`
    float32 [B] (zeros where that corruption is not applied), and
    `has_hole`, `has_blur`, `has_noise` bool [B], and `mix` float32 [B],
    a uniform draw in [0, 1) per image (the WGAN-GP critic's interpolation
    between the clean image and the generator's output).
  """
  if track not in TRAIN_TRACKS:
    raise ValueError(f"Unknown track {track!r}: expected one of {TRAIN_TRACKS}.")
  applied = TRACK_CORRUPTIONS[track]
  clean = tf.convert_to_tensor(clean, tf.float32)
  seeds = tf.cast(tf.convert_to_tensor(seeds), tf.int64)
  shape = tf.shape(clean)
  batch = shape[0]
  size = cfg.blur_kernel_size
  every = tf.fill([batch], True)
  if track in BLIND_TRACKS:
    has_hole, has_blur, has_noise = _blind_flags(seeds, cfg)
    has_hole = has_hole & ("hole" in applied)
  else:
    has_hole, has_blur, has_noise = (every & (name in applied)
                                     for name in ("hole", "blur", "noise"))
  corrupted = clean
  zeros = tf.zeros([batch], tf.float32)
  params = {
      "blur_kernel": tf.tile(delta_kernel(size)[None], [batch, 1, 1]),
      "blur_type": tf.fill([batch], BLUR_NONE),
      "gaussian_sigma": zeros,
      "motion_length": zeros,
      "motion_angle": zeros,
      "noise_sigma": zeros,
  }
  if "blur" in applied:
    signature = {
        "blur_kernel": tf.TensorSpec([size, size], tf.float32),
        "blur_type": tf.TensorSpec([], tf.int32),
        "gaussian_sigma": tf.TensorSpec([], tf.float32),
        "motion_length": tf.TensorSpec([], tf.float32),
        "motion_angle": tf.TensorSpec([], tf.float32),
        "noise_sigma": tf.TensorSpec([], tf.float32),
        "noise": tf.TensorSpec([None, None, None], tf.float32),
    }
    sampled = tf.map_fn(lambda s: sample_corruption(s, shape[1:], cfg), seeds,
                        fn_output_signature=signature)
    noise = sampled.pop("noise")
    if track in BLIND_TRACKS:  # Keep each image's draw only where it gets that corruption.
      for name, flag in (("blur_kernel", has_blur), ("blur_type", has_blur),
                         ("gaussian_sigma", has_blur), ("motion_length", has_blur),
                         ("motion_angle", has_blur), ("noise_sigma", has_noise)):
        keep = tf.reshape(flag, [-1] + [1] * (len(sampled[name].shape) - 1))
        sampled[name] = tf.where(keep, sampled[name], params[name])
      noise = noise * tf.cast(has_noise, tf.float32)[:, None, None, None]
      corrupted, _ = appliers.corrupt_each(
          corrupted, kernels=sampled["blur_kernel"], noise=noise,
          mask=tf.zeros_like(clean[..., :1]), has_blur=has_blur, has_noise=has_noise,
          has_hole=has_hole, fill=cfg.hole_fill)
    else:
      corrupted = appliers.corrupt(corrupted, "restore", kernels=sampled["blur_kernel"],
                                   noise=noise)
    params = sampled
  if "hole" in applied:
    family = mask_family or (cfg.mask_family if track == "blind"
                             else protocol_mask_family(track))
    mask_seeds = fold_in(seeds, 1)
    mask = masks_lib.masks(family, mask_seeds, shape[1], shape[2], cfg)
    mask = mask * tf.cast(has_hole, tf.float32)[:, None, None, None]
    corrupted = appliers.fill_hole(corrupted, mask, cfg.hole_fill)
  else:
    mask = tf.zeros_like(clean[..., :1])
  mix = tf.map_fn(lambda s: tf.random.stateless_uniform([], s), fold_in(seeds, 3),
                  fn_output_signature=tf.float32)
  return {"corrupted": corrupted, "clean": clean, "mask": mask, **params,
          "has_hole": has_hole, "has_blur": has_blur, "has_noise": has_noise, "mix": mix}


def eval_seeds(indices, eval_seed):
  """Per-image stateless seeds (eval_seed, index) for evaluation, [B, 2] int64."""
  indices = tf.cast(indices, tf.int64)
  return tf.stack([tf.fill(tf.shape(indices), tf.cast(eval_seed, tf.int64)), indices], axis=-1)
