"""Layer conventions shared by the networks."""

import keras
from keras import ops


def batch_norm(name: str, gamma_initializer: str = "ones") -> keras.layers.BatchNormalization:
  """Batch norm whose statistics span the global batch under tf.distribute.

  With `synchronized=True` every replica normalises with the mean and
  variance of the whole global batch, so a step on N replicas computes the
  same update as on one device with the same global batch (tested in
  tests/test_training.py). On one device it is the ordinary layer, and
  there `FusedBatchNorm` trains it with TensorFlow's fused kernel.

  Keras implements `synchronized` for the TensorFlow backend only; on the
  others (the JAX trainer, scripts/train_jax.py) the layer is the ordinary
  one, with the same variables, so weights move between backends.
  `gamma_initializer="zeros"` makes the last batch norm of a residual branch
  start the branch at zero (the block then starts as the identity).
  """
  return FusedBatchNorm(
      synchronized=keras.backend.backend() == "tensorflow", gamma_initializer=gamma_initializer,
      name=name)


@keras.saving.register_keras_serializable(package="cascade_tf")
class FusedBatchNorm(keras.layers.BatchNormalization):
  """Keras' batch norm, trained with TensorFlow's fused kernel where that computes the same.

  In training, Keras computes batch norm from separate operations, in
  float32 even under a bfloat16 policy (a cast in, moments, the
  normalisation, a cast out, each a pass over the activations, and as
  many again for the gradient): on a CPU with AMX they took more of the
  joint update's time than the convolutions (docs/benchmarks.md, "The
  joint update's time by operation"). On the TensorFlow backend, with one
  replica, a channels-last 4-D input, no mask and no renorm, this layer
  trains with `FusedBatchNormV3` instead (one pass each way, bfloat16 in
  and out, its statistics in float32; oneDNN's kernel on CPUs, cuDNN's on
  GPUs) and updates the moving statistics exactly as Keras does (with the
  batch's biased variance). Everything else, inference and the
  synchronized statistics of several replicas included, is Keras' own
  code. Same variables, same config: weights and checkpoints are
  unchanged, and `fold.py` folds it as any batch norm.
  """

  # Read when a step is traced; benchmarks/layers.py --batch_norm_ab turns it
  # off to time Keras' operations against the fused kernel in one run.
  enabled = True

  def _fusable(self, inputs, training, mask) -> bool:
    if not self.enabled or keras.backend.backend() != "tensorflow" or training is not True:
      return False
    if not self.trainable or mask is not None or self.renorm or len(inputs.shape) != 4:
      return False
    import tensorflow as tf  # pylint: disable=g-import-not-at-top  (TensorFlow backend only)
    if self.axis not in (-1, 3) or tf.as_dtype(inputs.dtype).name not in (
        "float32", "bfloat16", "float16"):
      return False
    return tf.distribute.get_strategy().num_replicas_in_sync == 1

  def call(self, inputs, training=None, mask=None):
    if not self._fusable(inputs, training, mask):
      return super().call(inputs, training=training, mask=mask)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    channels = inputs.shape[-1]
    gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
    beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
    outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        inputs, gamma, beta, epsilon=self.epsilon, is_training=True)
    # The kernel returns the unbiased variance; Keras averages the biased one.
    count = tf.cast(tf.size(inputs) // channels, tf.float32)
    variance = variance * ((count - 1.0) / tf.maximum(count, 1.0))
    self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
    self.moving_variance.assign(
        self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
    return tf.cast(outputs, self.compute_dtype)


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
