"""The symmetries a training crop may be put through (`DataConfig.train_augment`).

A transform is an index k: bit 0 flips the image left-right, k >> 1 turns it
that many quarter turns counter-clockwise after the flip. `flip` draws k in
{0, 1} (the paper-era default: a random left-right flip); `dihedral` draws k
in [0, 8), all eight symmetries of the square (flips, transposes and quarter
turns), so a photo's content reaches the centre hole in eight orientations.
The two trainers share this definition: `dihedral_tf` for train.py's
tf.data pipeline, `dihedral_np` for scripts/train_jax.py's host sampler,
and `dihedral_ops` (batched, either direction) for the inference
self-ensemble (`models/cascade.py`); tests/test_augment.py checks that
they agree on every k.

`DataConfig.train_channel_permute` = p puts a crop's RGB channels, with
probability p, in one of the five other orders (`CHANNEL_ORDERS`, drawn
uniformly; order 0 keeps them): a photo's structure in other colours,
since the 400 training photos are few (docs/training.md, "Twelfth
sitting"). `channel_order_tf` / `channel_order_np` apply order j, and
`draw_channel_order_tf` / `draw_channel_order_np` draw it, for the two
trainers. TensorFlow is imported only by the `_tf` functions: the JAX
trainer runs where it is not installed.
"""

from __future__ import annotations

import numpy as np

from cascade_tf.config import TRAIN_AUGMENTS

# Transforms each mode draws from (k in [0, n)), for each of config.TRAIN_AUGMENTS.
NUM_TRANSFORMS = {"flip": 2, "dihedral": 8}
assert tuple(NUM_TRANSFORMS) == TRAIN_AUGMENTS


def num_transforms(augment: str) -> int:
  """How many transforms `augment` draws from; ValueError naming the choices otherwise."""
  if augment not in NUM_TRANSFORMS:
    raise ValueError(f"data.train_augment={augment!r}: expected one of {TRAIN_AUGMENTS}.")
  return NUM_TRANSFORMS[augment]


# The orders of the RGB channels: index j puts input channels CHANNEL_ORDERS[j] as R, G, B.
CHANNEL_ORDERS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def channel_order_tf(image, order):
  """The channels [..., 3] of `image` in CHANNEL_ORDERS[order] (an int32 scalar tensor)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.gather(image, tf.gather(tf.constant(CHANNEL_ORDERS, tf.int32), order), axis=-1)


def channel_order_np(array: np.ndarray, order: int) -> np.ndarray:
  """The channels [..., 3] of `array` in CHANNEL_ORDERS[order], as `channel_order_tf`."""
  return array[..., list(CHANNEL_ORDERS[order])]


def draw_channel_order_tf(seed, probability: float):
  """An order for one crop from a stateless seed [2]: with `probability` one of 1..5, else 0."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
  other = tf.random.stateless_uniform([], seeds[1], minval=1, maxval=len(CHANNEL_ORDERS),
                                      dtype=tf.int32)
  permute = tf.random.stateless_uniform([], seeds[0]) < probability
  return tf.where(permute, other, 0)


def draw_channel_order_np(rng: np.random.Generator, probability: float, count: int) -> np.ndarray:
  """`count` orders, as `draw_channel_order_tf` draws them, from a NumPy generator."""
  permute = rng.random(count) < probability
  return np.where(permute, rng.integers(1, len(CHANNEL_ORDERS), count), 0)


def dihedral_tf(image, k):
  """Transform k of a square [S, S, C] tensor (k an int32 scalar tensor in [0, 8))."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  k = tf.convert_to_tensor(k, tf.int32)
  flipped = tf.cond(k % 2 == 1, lambda: tf.reverse(image, axis=[1]), lambda: image)
  return tf.image.rot90(flipped, k // 2)


def dihedral_np(array: np.ndarray, k: int) -> np.ndarray:
  """Transform k of a square [S, S, C] array, as `dihedral_tf`."""
  flipped = array[:, ::-1] if k % 2 == 1 else array
  return np.rot90(flipped, k // 2, axes=(0, 1))


def _turn_ops(images, turns: int):
  """`turns` quarter turns counter-clockwise of a [B, H, W, C] batch, as np.rot90 on
  axes (1, 2), from flips and a transpose (keras.ops.rot90 mixes up non-square
  images when turning twice)."""
  from keras import ops  # pylint: disable=g-import-not-at-top
  turns %= 4
  if turns == 0:
    return images
  if turns == 2:
    return ops.flip(ops.flip(images, axis=1), axis=2)
  if turns == 1:
    return ops.transpose(ops.flip(images, axis=2), (0, 2, 1, 3))
  return ops.flip(ops.transpose(images, (0, 2, 1, 3)), axis=2)


def dihedral_ops(images, k: int, inverse: bool = False):
  """Transform k (a Python int) of every image of a [B, H, W, C] batch, as `dihedral_tf`;
  `inverse` undoes it. Keras ops: any backend, symbolic inputs too, any H and W."""
  from keras import ops  # pylint: disable=g-import-not-at-top
  if not 0 <= k < 8:
    raise ValueError(f"dihedral_ops: k={k}: expected 0 <= k < 8.")
  if inverse:
    turned = _turn_ops(images, -(k // 2))
    return ops.flip(turned, axis=2) if k % 2 == 1 else turned
  flipped = ops.flip(images, axis=2) if k % 2 == 1 else images
  return _turn_ops(flipped, k // 2)
