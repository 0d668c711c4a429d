"""Layer conventions shared by the networks."""

import keras
from keras import ops


def batch_norm(name: str, gamma_initializer: str = "ones") -> keras.layers.BatchNormalization:
  """Batch norm whose statistics span the global batch under tf.distribute.

  With `synchronized=True` every replica normalises with the mean and
  variance of the whole global batch, so a step on N replicas computes the
  same update as on one device with the same global batch (tested in
  tests/test_training.py). On one device it is the ordinary layer.

  Keras implements `synchronized` for the TensorFlow backend only; on the
  others (the JAX trainer, scripts/train_jax.py) the layer is the ordinary
  one, with the same variables, so weights move between backends.
  `gamma_initializer="zeros"` makes the last batch norm of a residual branch
  start the branch at zero (the block then starts as the identity).
  """
  return keras.layers.BatchNormalization(
      synchronized=keras.backend.backend() == "tensorflow", gamma_initializer=gamma_initializer,
      name=name)


def _blur3(images):
  """3 x 3 binomial blur ([1, 2, 1] / 4 in each direction) per channel, zero padding."""
  taps = ops.convert_to_tensor([0.25, 0.5, 0.25], images.dtype)
  kernel = ops.reshape(taps[:, None] * taps[None, :], (3, 3, 1, 1))
  kernel = ops.tile(kernel, (1, 1, images.shape[-1], 1))
  return ops.depthwise_conv(images, kernel, strides=1, padding="same")


def push_pull_fill(images, mask, levels: int = 7):
  """Fills the hole of `images` by push-pull interpolation of the known pixels.

  Pull: a pyramid of `levels` 2 x 2 averages of the known pixels (image
  times known weight) and of the weight. Push: from the coarsest level up,
  each level's estimate is its own average where it has known pixels and
  the upsampled (nearest, then a 3 x 3 binomial blur) coarser estimate
  where it has none, weighted by the known share: est = sum + (1 - w) up.
  Where even the coarsest level knows nothing the fill is 0 (mid-grey on
  [-1, 1]). Known pixels are returned unchanged.

  Args:
    images: [B, H, W, C] float, any values in the hole.
    mask: [B, H, W, 1], 1 in the hole (values in [0, 1]).
    levels: pyramid levels; 7 reaches 1 px from 128 px. Sizes need not be
      powers of two (odd sizes are padded and cropped).

  Returns:
    [B, H, W, C], the images with the hole filled smoothly.
  """
  known = 1.0 - ops.cast(mask, images.dtype)
  sums, weights = [images * known], [known]
  for _ in range(levels):
    sums.append(ops.average_pool(sums[-1], 2, 2, padding="same"))
    weights.append(ops.average_pool(weights[-1], 2, 2, padding="same"))
  estimate = sums[-1] / ops.maximum(weights[-1], 1e-6)
  for level in range(levels - 1, -1, -1):
    up = ops.repeat(ops.repeat(estimate, 2, axis=1), 2, axis=2)
    height, width = ops.shape(sums[level])[1], ops.shape(sums[level])[2]
    up = _blur3(up[:, :height, :width, :])
    estimate = sums[level] + (1.0 - weights[level]) * up
  return images * known + estimate * (1.0 - known)


@keras.saving.register_keras_serializable(package="cascade_tf")
class PushPullFill(keras.layers.Layer):
  """`push_pull_fill` as a layer without weights: (images, mask) -> filled images."""

  def __init__(self, levels: int = 7, **kwargs):
    super().__init__(**kwargs)
    self.levels = levels

  def call(self, images, holes):  # Not `mask`: Keras reserves that name for its masking.
    return push_pull_fill(images, holes, self.levels)

  def compute_output_shape(self, images_shape, holes_shape):
    return images_shape

  def get_config(self):
    return {**super().get_config(), "levels": self.levels}
