"""The deblurring-denoising network R (paper Sec. 3.3, Fig. 4).

A convolutional auto-encoder that keeps the full resolution: `num_encode`
convolutions that encode and `num_decode` that decode, all `kernel_size`
x `kernel_size` with stride 1 and zero ("same") padding. Hidden layers have
`filters` channels; the last, `residual_out`, has 3 and is linear. Batch
norm follows every convolution except the first and the last, and
LeakyReLU(`leaky_slope`, 0.001 in the paper) follows the batch norm (or the
first convolution directly).

The network learns the residual (the blur and noise) and subtracts it from
its input: y = x - v with v = R(x). A restorer whose last layer is zero is
therefore the identity. `residual_out` and the subtraction are float32
under every dtype policy.

Images are in [-1, 1]; any height and width work.
"""

from __future__ import annotations

import keras

from cascade_tf.config import RestorerConfig
from cascade_tf.models import layers


def _validate(cfg: RestorerConfig) -> None:
  if cfg.filters < 1 or cfg.kernel_size < 1:
    raise ValueError(f"restorer.filters={cfg.filters} and restorer.kernel_size="
                     f"{cfg.kernel_size}: must be >= 1.")
  if cfg.num_encode < 1 or cfg.num_decode < 1:
    raise ValueError(f"restorer.num_encode={cfg.num_encode} and restorer.num_decode="
                     f"{cfg.num_decode}: must be >= 1.")
  if cfg.num_encode + cfg.num_decode < 2:
    raise ValueError("The restorer needs at least two convolutions.")


def build_restorer(cfg: RestorerConfig, image_size: int | None = None,
                   name: str = "restorer") -> keras.Model:
  """Builds the deblurring-denoising network.

  Args:
    cfg: the restorer's sub-config.
    image_size: side S of the square input in px, or None for any height
      and width.
    name: the model's name.

  Returns:
    A functional keras.Model mapping float32 [B, H, W, 3] in [-1, 1] to
    float32 [B, H, W, 3] = x - R(x) (not clipped). The last convolution,
    which predicts R(x), is the layer named "residual_out".

  Raises:
    ValueError: for non-positive widths or depths, or a non-positive image size.
  """
  _validate(cfg)
  if image_size is not None and image_size < 1:
    raise ValueError(f"image_size={image_size}: must be positive or None.")
  inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
  names = ([f"encode{i + 1}" for i in range(cfg.num_encode)] +
           [f"decode{i + 1}" for i in range(cfg.num_decode - 1)])
  x = inputs
  for k, layer_name in enumerate(names):
    # Stride 1 everywhere (Fig. 4: "All feature maps keep the same size"), so
    # the decoding layers are ordinary convolutions: a stride-1 transposed
    # convolution is a convolution with a flipped kernel.
    first = k == 0
    x = keras.layers.Conv2D(cfg.filters, cfg.kernel_size, padding="same", use_bias=first,
                            name=f"{layer_name}_conv")(x)
    if not first:
      x = layers.batch_norm(f"{layer_name}_bn")(x)
    x = keras.layers.LeakyReLU(negative_slope=cfg.leaky_slope, name=f"{layer_name}_lrelu")(x)
  residual = keras.layers.Conv2D(3, cfg.kernel_size, padding="same", use_bias=True,
                                 dtype="float32", name="residual_out")(x)
  outputs = keras.layers.Subtract(dtype="float32", name="subtract_residual")([inputs, residual])
  return keras.Model(inputs, outputs, name=name)
