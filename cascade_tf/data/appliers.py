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
module imports only Keras and `cascade_tf.config`.
"""

from __future__ import annotations

from keras import ops

from cascade_tf.config import TRACKS


def _spectrum(real):
  """The 2-D discrete Fourier transform of `real` [..., W, H] over its last two axes.

  A real FFT over H, then a complex one over W; returns (real, imaginary)
  [..., H // 2 + 1, W].
  """
  re, im = ops.rfft(real)
  return ops.fft((ops.swapaxes(re, -1, -2), ops.swapaxes(im, -1, -2)))


def blur(images, kernels):
  """Convolves each image with its own kernel, with symmetric padding.

  The padding repeats the edge pixel (d c b a | a b c d), which is
  `scipy.ndimage.convolve(mode="reflect")` and MATLAB's "symmetric". The
  convolution is computed with FFTs (a real one over one axis, a complex
  one over the other: keras.ops has no 2-D real FFT). It matches the direct
  convolution to about 1e-6 on the [0, 1] scale; docs/benchmarks.md
  ("Corruptions") compares its speed with the alternatives.

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
  padded = ops.transpose(padded, [0, 3, 2, 1])  # [B, C, W + 2h, H + 2h]
  shape = ops.shape(padded)
  width, height = shape[2], shape[3]
  kernel_image = ops.pad(ops.transpose(kernels, [0, 2, 1]),
                         [[0, 0], [0, width - size], [0, height - size]])
  image_re, image_im = _spectrum(padded)
  kernel_re, kernel_im = _spectrum(kernel_image)
  kernel_re, kernel_im = kernel_re[:, None], kernel_im[:, None]
  product_re = image_re * kernel_re - image_im * kernel_im
  product_im = image_re * kernel_im + image_im * kernel_re
  # The inverse over W as the conjugate of the forward transform of the
  # conjugate (keras.ops has no 1-D inverse complex FFT), then the inverse
  # real FFT over H.
  inverse_re, inverse_im = ops.fft((product_re, -product_im))
  scale = ops.cast(width, "float32")
  inverse_re, inverse_im = inverse_re / scale, -inverse_im / scale
  circular = ops.irfft((ops.swapaxes(inverse_re, -1, -2), ops.swapaxes(inverse_im, -1, -2)),
                       fft_length=height)
  # Circular convolution equals the linear one wherever the kernel does not
  # wrap around: from index 2h on, which is exactly the unpadded image.
  out = circular[:, :, 2 * half:, 2 * half:]
  return ops.transpose(out, [0, 3, 2, 1])


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
  """Applies a track's corruptions to `clean` [B, H, W, C] in [0, 1].

  `restore` blurs with `kernels` [B, k, k] and adds `noise` [B, H, W, C]
  (clipping to [0, 1]); `inpaint` fills `mask` ([B or 1, H, W, 1]) with
  `fill`; `joint` does both, the hole last.

  Raises:
    ValueError: for an unknown track or a parameter the track needs but is None.
  """
  if track not in TRACKS:
    raise ValueError(f"Unknown track {track!r}: expected one of {TRACKS}.")
  corrupted = ops.cast(clean, "float32")
  if track in ("restore", "joint"):
    if kernels is None or noise is None:
      raise ValueError(f"Track {track!r} needs blur kernels and a noise field.")
    corrupted = add_noise(blur(corrupted, kernels), noise)
  if track in ("inpaint", "joint"):
    if mask is None:
      raise ValueError(f"Track {track!r} needs a hole mask.")
    corrupted = fill_hole(corrupted, mask, fill)
  return corrupted
