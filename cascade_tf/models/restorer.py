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

Beyond the paper, `arch="unet"` builds a compact U-Net with the same
interface (docs/architecture.md, "Beyond the paper"): at scale i (full
size first) `unet_blocks` residual blocks of `unet_filters[i]` channels
(conv-ReLU-conv plus identity, no batch norm); a stride-2 3 x 3
convolution goes down a scale, a stride-2 2 x 2 transposed convolution
comes back up and is added to the encoder's features of that scale,
followed by one residual block; `residual_out` (3 channels, linear) and the
subtraction y = x - R(x) as above. Heights and widths must then be
multiples of 2 ** (len(unet_filters) - 1).
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


def _unet_block(x, filters: int, name: str):
  """conv-ReLU-conv plus identity, 3 x 3, no normalisation."""
  y = keras.layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv1")(x)
  y = keras.layers.ReLU(name=f"{name}_relu")(y)
  y = keras.layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv2")(y)
  return keras.layers.Add(name=f"{name}_add")([x, y])


def _unet_features(inputs, cfg: RestorerConfig):
  """The U-Net's features at full size, `unet_filters[0]` channels."""
  widths = cfg.unet_filters
  x = keras.layers.Conv2D(widths[0], 3, padding="same", name="in_conv")(inputs)
  skips = []
  for scale, width in enumerate(widths):
    if scale:
      x = keras.layers.Conv2D(width, 3, strides=2, padding="same", name=f"down{scale}")(x)
      x = keras.layers.ReLU(name=f"down{scale}_relu")(x)
    for b in range(cfg.unet_blocks):
      x = _unet_block(x, width, f"enc{scale}_block{b + 1}")
    skips.append(x)
  for scale in range(len(widths) - 2, -1, -1):
    x = keras.layers.Conv2DTranspose(widths[scale], 2, strides=2, padding="same",
                                     name=f"up{scale + 1}")(x)
    x = keras.layers.Add(name=f"skip{scale}_add")([x, skips[scale]])
    x = _unet_block(x, widths[scale], f"dec{scale}_block")
  # No activation before `residual_out`: a ReLU there died within 200 steps of L1
  # training (0.2% of its units ever positive), leaving R the identity.
  return x


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
    ValueError: for non-positive widths or depths, or an image size that is
      not positive (or, for the U-Net, not a multiple of its scales).
  """
  _validate(cfg)
  if image_size is not None and image_size < 1:
    raise ValueError(f"image_size={image_size}: must be positive or None.")
  inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
  if cfg.arch == "unet":
    multiple = 2 ** (len(cfg.unet_filters) - 1)
    if image_size is not None and image_size % multiple:
      raise ValueError(f"image_size={image_size}: the U-Net restorer needs a multiple of "
                       f"{multiple}.")
    residual = keras.layers.Conv2D(3, 3, padding="same", use_bias=True, dtype="float32",
                                   name="residual_out")(_unet_features(inputs, cfg))
    outputs = keras.layers.Subtract(dtype="float32", name="subtract_residual")(
        [inputs, residual])
    return keras.Model(inputs, outputs, name=name)
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
