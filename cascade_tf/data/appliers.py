"""Corruption appliers: sampled parameters in, corrupted images out (PROTOCOL.md).

`corruptions.py` samples the parameters (TensorFlow, stateless, one seed
per image); this module applies them, in `keras.ops`, so that the tf.data
pipeline and the JAX trainer (which gets its parameters as banks drawn by
that sampler, `scripts/prepare_jax_run.py`) corrupt images with the same
code:

    blur        one kernel per image, symmetric padding
    add_noise   add a noise field, clip to [0, 1]
    hole_mask   the centre square hole, [H, W, 1]
    fill_hole   put the hole's fill value where the mask is 1
    composite   the known pixels of the input, the network's inside the hole
    corrupt     a track's whole sequence: blur, noise, then the hole

Images are float32 in [0, 1], [B, H, W, C]; masks are 1 in the hole. This
module imports only Keras and `cascade_tf.config` (and, inside `blur`, the
running backend's 2-D real FFT, which keras.ops lacks). On TensorFlow the
pipeline's corrupted images are bit-identical to those of the TensorFlow-
only code this module replaced.
"""

from __future__ import annotations

import keras
from keras import ops

from cascade_tf.config import TRACK_CORRUPTIONS


def _circular_convolution(padded, kernel_image):
  """Circular 2-D convolution over the last two axes, by real FFTs.

  padded: [B, C, H, W]; kernel_image: [B, H, W] (one kernel per image,
  zero-padded to the image's size). Returns [B, C, H, W].

  keras.ops has no 2-D real FFT: composing one from its 1-D transforms made
  the training pipeline's restore and joint tracks 12-18% slower in paired
  runs (docs/benchmarks.md, "Data pipeline"), so this one step calls the
  backend's own rfft2 (the two backends the project trains on); everything
  around it is shared.
  """
  backend = keras.backend.backend()
  if backend == "tensorflow":
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    shape = tf.shape(padded)
    product = tf.signal.rfft2d(padded) * tf.signal.rfft2d(kernel_image)[:, None]
    return tf.signal.irfft2d(product, fft_length=tf.stack([shape[2], shape[3]]))
  if backend == "jax":
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    product = jnp.fft.rfft2(padded) * jnp.fft.rfft2(kernel_image)[:, None]
    return jnp.fft.irfft2(product, s=padded.shape[2:]).astype(padded.dtype)
  raise ValueError(f"appliers.blur runs on Keras' tensorflow and jax backends, not {backend!r}.")


def blur(images, kernels):
  """Convolves each image with its own kernel, with symmetric padding.

  The padding repeats the edge pixel (d c b a | a b c d), which is
  `scipy.ndimage.convolve(mode="reflect")` and MATLAB's "symmetric". The
  convolution is computed with real 2-D FFTs: for 15x15 kernels this was
  about 1.6x faster on a CPU than a depthwise convolution with one kernel
  per image (docs/benchmarks.md), and it matches the direct convolution to
  about 1e-4 on the [0, 1] scale.

  Args:
    images: float32 [B, H, W, C].
    kernels: float32 [B, k, k] with k odd, one kernel per image; rows go
      down the image, columns right.

  Returns:
    float32 [B, H, W, C].
  """
  images = ops.cast(images, "float32")
  kernels = ops.cast(kernels, "float32")
  size = kernels.shape[-1]
  if size is None or size % 2 == 0 or len(kernels.shape) != 3:
    raise ValueError(f"Blur kernels must be [B, k, k] with a static odd k, got {kernels.shape}.")
  half = size // 2
  padded = ops.pad(images, [[0, 0], [half, half], [half, half], [0, 0]], mode="symmetric")
  padded = ops.transpose(padded, [0, 3, 1, 2])  # [B, C, H + 2h, W + 2h]
  shape = ops.shape(padded)
  kernel_image = ops.pad(kernels, [[0, 0], [0, shape[2] - size], [0, shape[3] - size]])
  circular = _circular_convolution(padded, kernel_image)
  # Circular convolution equals the linear one wherever the kernel does not
  # wrap around: from index 2h on, which is exactly the unpadded image.
  out = circular[:, :, 2 * half:, 2 * half:]
  return ops.transpose(out, [0, 2, 3, 1])


def add_noise(images, noise):
  """images + noise, clipped to [0, 1]; both float32 [B, H, W, C]."""
  return ops.clip(ops.cast(images, "float32") + ops.cast(noise, "float32"), 0.0, 1.0)


def hole_mask(height, width, hole_size):
  """Mask [H, W, 1] float32, 1 inside the centred square hole of side `hole_size` px."""
  top = (height - hole_size) // 2
  left = (width - hole_size) // 2
  rows = ops.arange(height)
  cols = ops.arange(width)
  in_rows = ops.logical_and(rows >= top, rows < top + hole_size)
  in_cols = ops.logical_and(cols >= left, cols < left + hole_size)
  mask = ops.logical_and(in_rows[:, None], in_cols[None, :])
  return ops.cast(mask, "float32")[:, :, None]


def fill_hole(images, mask, fill=0.5):
  """`fill` where `mask` [B or 1, H, W, 1] is 1, `images` [B, H, W, C] elsewhere."""
  mask = ops.cast(mask, "float32")
  return ops.cast(images, "float32") * (1.0 - mask) + fill * mask


def composite(outputs, corrupted, mask):
  """The network's `outputs` inside the hole, the `corrupted` input's known pixels outside.

  Args:
    outputs, corrupted: [B, H, W, C], one scale (either [0, 1] or [-1, 1]).
    mask: [B or 1, H, W, 1], 1 in the hole (values between blend).
  """
  mask = ops.cast(mask, outputs.dtype)
  return mask * outputs + (1.0 - mask) * ops.cast(corrupted, outputs.dtype)


def corrupt(clean, track: str, *, kernels=None, noise=None, mask=None, fill=0.5):
  """Applies a track's corruptions (`config.TRACK_CORRUPTIONS`) to `clean` [B, H, W, C].

  Blur with `kernels` [B, k, k], then add `noise` [B, H, W, C] (clipping to
  [0, 1]), then fill `mask` ([B or 1, H, W, 1]) with `fill`, as far as the
  track applies them (`restore`: blur and noise; `inpaint`: the hole;
  `joint`: all three, the hole last).

  Raises:
    ValueError: for an unknown track or a parameter the track needs but is None.
  """
  if track not in TRACK_CORRUPTIONS:
    raise ValueError(f"Unknown track {track!r}: expected one of {tuple(TRACK_CORRUPTIONS)}.")
  applied = TRACK_CORRUPTIONS[track]
  corrupted = ops.cast(clean, "float32")
  if "blur" in applied:
    if kernels is None or noise is None:
      raise ValueError(f"Track {track!r} needs blur kernels and a noise field.")
    corrupted = add_noise(blur(corrupted, kernels), noise)
  if "hole" in applied:
    if mask is None:
      raise ValueError(f"Track {track!r} needs a hole mask.")
    corrupted = fill_hole(corrupted, mask, fill)
  return corrupted


def corrupt_each(clean, *, kernels, noise, mask, has_blur, has_noise, has_hole, fill=0.5):
  """Each image gets the blur, the noise and the hole or not: the `blind` tracks.

  The order of `corrupt` (blur, noise with clipping, then the hole), each
  step applied only to the images whose flag is true; an image without
  blur stays exactly itself (not the FFT of a delta).

  Args:
    clean: [B, H, W, C] in [0, 1].
    kernels: [B, k, k]; noise: [B, H, W, C]; mask: [B, H, W, 1].
    has_blur, has_noise, has_hole: bool [B].
    fill: the hole's value.

  Returns:
    (corrupted [B, H, W, C], the mask actually applied [B, H, W, 1]).
  """
  def per_image(flag):
    return ops.reshape(flag, (-1, 1, 1, 1))

  corrupted = ops.cast(clean, "float32")
  corrupted = ops.where(per_image(has_blur), blur(corrupted, kernels), corrupted)
  corrupted = ops.where(per_image(has_noise), add_noise(corrupted, noise), corrupted)
  mask = ops.cast(mask, "float32") * ops.cast(per_image(has_hole), "float32")
  return fill_hole(corrupted, mask, fill), mask

