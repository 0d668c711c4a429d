"""Image-quality metrics of the evaluation protocol: PSNR, hole PSNR, SSIM.

All three take batches of images on the protocol's [0, 1] scale,
`y_true` and `y_pred` of shape [B, H, W, C] (C = 3 for RGB), and return
one value per image, shape [B], float32. Averaging over images is left to
the caller (PROTOCOL.md: "mean over the images").

Conventions, as PROTOCOL.md fixes them:

* The prediction is clipped to [0, 1] before it is scored; the reference
  `y_true` is taken as it is (it is a clean image, already in [0, 1]).
* The data range is 1.0.
* PSNR is capped at `PSNR_CAP_DB` = 100 dB. A perfect reconstruction has
  MSE 0 and an infinite PSNR, which would make the mean over images
  infinite; with the cap a perfect image scores 100 dB, far above anything
  a real method reaches on 8-bit-derived data (a 1/255 error everywhere is
  48.1 dB), so the cap never changes a real result and keeps means finite.
* SSIM is `tf.image.ssim` with an 11 x 11 Gaussian window, sigma 1.5,
  K1 = 0.01, K2 = 0.03, averaged over the valid window positions and the
  channels. `skimage.metrics.structural_similarity(gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1)`
  agrees to about 1e-3 (tests/test_metrics.py).

The functions are pure TensorFlow ops, usable eagerly and inside
`tf.function` with unknown batch size. Shape problems that can be seen
when the graph is built raise ValueError; a mismatch hidden behind unknown
dimensions fails at run time with `tf.errors.InvalidArgumentError`.

This module imports only TensorFlow.
"""

import tensorflow as tf

DATA_RANGE = 1.0  # Peak value of the [0, 1] scale.
PSNR_CAP_DB = 100.0  # dB, the PSNR of a perfect image (MSE 0).
SSIM_FILTER_SIZE = 11  # px, side of the Gaussian SSIM window. Protocol: 11.
SSIM_FILTER_SIGMA = 1.5  # px. Protocol: 1.5.
SSIM_K1 = 0.01  # Protocol: 0.01.
SSIM_K2 = 0.03  # Protocol: 0.03.

# The MSE at which PSNR reaches the cap: 10 log10(1 / mse) = PSNR_CAP_DB.
_MIN_MSE = DATA_RANGE**2 * 10.0**(-PSNR_CAP_DB / 10.0)


def _check_pair(y_true, y_pred, name):
  """Converts both images to float32 tensors and checks that shapes agree."""
  y_true = tf.cast(tf.convert_to_tensor(y_true), tf.float32)
  y_pred = tf.cast(tf.convert_to_tensor(y_pred), tf.float32)
  for label, image in (("y_true", y_true), ("y_pred", y_pred)):
    if image.shape.rank is not None and image.shape.rank != 4:
      raise ValueError(
          f"{name}: {label} must be a batch of images [B, H, W, C], got shape "
          f"{image.shape}. Add a batch axis for a single image (image[None]).")
  if not y_true.shape.is_compatible_with(y_pred.shape):
    raise ValueError(
        f"{name}: y_true and y_pred must have the same shape [B, H, W, C], got "
        f"{y_true.shape} and {y_pred.shape}.")
  with tf.control_dependencies([
      tf.debugging.assert_equal(
          tf.shape(y_true), tf.shape(y_pred),
          message=f"{name}: y_true and y_pred must have the same shape.")
  ]):
    y_pred = tf.identity(y_pred)
  return y_true, tf.clip_by_value(y_pred, 0.0, DATA_RANGE)


def _psnr_from_mse(mse):
  """10 log10(range^2 / mse), capped at PSNR_CAP_DB; a NaN mse stays NaN."""
  mse = tf.maximum(mse, _MIN_MSE)  # tf.maximum propagates NaN.
  return 10.0 * tf.math.log(DATA_RANGE**2 / mse) / tf.math.log(10.0)


def psnr(y_true, y_pred):
  """Peak signal-to-noise ratio of each image, data range 1.0.

  Args:
    y_true: float [B, H, W, C], the clean images in [0, 1].
    y_pred: float [B, H, W, C], the restored images; clipped to [0, 1].

  Returns:
    float32 [B], dB, capped at PSNR_CAP_DB (100 dB for identical images).

  Raises:
    ValueError: if an input is not rank 4 or the shapes differ.
  """
  y_true, y_pred = _check_pair(y_true, y_pred, "psnr")
  mse = tf.reduce_mean(tf.math.squared_difference(y_true, y_pred), axis=[1, 2, 3])
  return _psnr_from_mse(mse)


def hole_psnr(y_true, y_pred, mask):
  """PSNR over the hole pixels only (the `inpaint` and `joint` tracks).

  MSE = sum(mask * (y_true - y_pred)^2) / (sum(mask) * C): the mean squared
  error over the masked pixels and all channels. A soft mask acts as
  per-pixel weights.

  Args:
    y_true: float [B, H, W, C], the clean images in [0, 1].
    y_pred: float [B, H, W, C], the restored images; clipped to [0, 1].
    mask: float [B, H, W, 1], 1 inside the hole and 0 outside.

  Returns:
    float32 [B], dB, capped at PSNR_CAP_DB. An image whose mask is all zeros
    has no hole to score and gets NaN (not 100 dB, which would pass for a
    perfect score); leave those images out of the mean.

  Raises:
    ValueError: if the images are not rank 4 with equal shapes, or the mask
      is not [B, H, W, 1] matching them.
  """
  y_true, y_pred = _check_pair(y_true, y_pred, "hole_psnr")
  mask = tf.cast(tf.convert_to_tensor(mask), tf.float32)
  expected = y_true.shape[:-1].concatenate([1])
  if mask.shape.rank is not None and (mask.shape.rank != 4 or
                                      not mask.shape.is_compatible_with(expected)):
    raise ValueError(
        f"hole_psnr: mask must be [B, H, W, 1] matching the images {y_true.shape}, "
        f"got {mask.shape}.")
  with tf.control_dependencies([
      tf.debugging.assert_equal(
          tf.shape(mask)[:3], tf.shape(y_true)[:3],
          message="hole_psnr: mask must be [B, H, W, 1] matching the images."),
      tf.debugging.assert_equal(
          tf.shape(mask)[3], 1, message="hole_psnr: mask must have one channel."),
  ]):
    mask = tf.identity(mask)
  channels = tf.cast(tf.shape(y_true)[3], tf.float32)
  squared_error = mask * tf.math.squared_difference(y_true, y_pred)
  error_sum = tf.reduce_sum(squared_error, axis=[1, 2, 3])
  weight_sum = tf.reduce_sum(mask, axis=[1, 2, 3]) * channels
  # An empty mask gives 0 / 0 = NaN, which _psnr_from_mse keeps: there is
  # nothing to score.
  return _psnr_from_mse(error_sum / weight_sum)


def hole_ssim(y_true, y_pred, mask):
  """SSIM averaged over the hole: the protocol's SSIM map, weighted by the mask.

  The SSIM map (`tf.image.ssim`'s index map, averaged over channels) has a
  value per 11 x 11 window fully inside the image; each window is weighted
  by the mask at its centre pixel. An image without a hole pixel at a
  window centre gets NaN (leave it out of the mean, as `hole_psnr` does).

  Args:
    y_true, y_pred: float [B, H, W, C] in [0, 1], as for `ssim`.
    mask: float [B, H, W, 1], 1 inside the hole.

  Returns:
    float32 [B].
  """
  y_true, y_pred = _check_pair(y_true, y_pred, "hole_ssim")
  index_map = tf.image.ssim(
      y_true, y_pred, max_val=DATA_RANGE, filter_size=SSIM_FILTER_SIZE,
      filter_sigma=SSIM_FILTER_SIGMA, k1=SSIM_K1, k2=SSIM_K2, return_index_map=True)
  if index_map.shape.rank == 4:  # [B, H', W', C] on some versions: average the channels.
    index_map = tf.reduce_mean(index_map, axis=-1)
  half = SSIM_FILTER_SIZE // 2
  mask = tf.cast(tf.convert_to_tensor(mask), tf.float32)[:, half:-half, half:-half, 0]
  return tf.reduce_sum(index_map * mask, axis=[1, 2]) / tf.reduce_sum(mask, axis=[1, 2])


def ssim(y_true, y_pred):
  """Structural similarity of each image, averaged over space and channels.

  `tf.image.ssim` with the protocol's settings: 11 x 11 Gaussian window of
  sigma 1.5, K1 = 0.01, K2 = 0.03, max_val 1.0. Only window positions fully
  inside the image are used. Images should be at least 11 x 11 px.

  Args:
    y_true: float [B, H, W, C], the clean images in [0, 1].
    y_pred: float [B, H, W, C], the restored images; clipped to [0, 1].

  Returns:
    float32 [B], in [-1, 1] (1 for identical images).

  Raises:
    ValueError: if an input is not rank 4 or the shapes differ.
  """
  y_true, y_pred = _check_pair(y_true, y_pred, "ssim")
  return tf.image.ssim(
      y_true, y_pred, max_val=DATA_RANGE, filter_size=SSIM_FILTER_SIZE,
      filter_sigma=SSIM_FILTER_SIGMA, k1=SSIM_K1, k2=SSIM_K2)
