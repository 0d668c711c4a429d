"""The WGAN critic D of the paper's inpainting GAN (Sec. 3.2, Fig. 3).

VGG16-like without pooling: five groups of 3x3 convolutions (2, 2, 3, 3, 3
per group by default) whose widths double from `base_filters` up to
`max_filters`; every convolution has stride 1 except the last of each
group, which has stride 2 and takes the place of VGG's max pooling. Every
convolution is followed by LeakyReLU(`leaky_slope`). Then two dense layers:
a hidden one of `dense_units` with LeakyReLU and the linear one-unit output
`critic_out` (no sigmoid, as WGAN requires).

There is no batch norm. In training mode BN normalises real and fake
batches with different statistics (the critic step scores them in two
calls), so a critic's score would depend on the rest of its batch rather
than on the image alone; the paper does not say that its critic uses BN.

Without any normalisation, though, weight clipping starves a critic this
deep: with every weight in [-0.01, 0.01], each of the 13 convolutions
shrinks its input, the score of the `tiny` critic is ~1e-8 and its
gradients ~1e-15, below RMSProp's epsilon, so it never moves (measured:
docs/architecture.md). `normalization="group"` (the default) therefore puts
a per-image GroupNormalization with one group (layer norm over H, W and C,
with a per-channel scale and offset) after every convolution but the
first: each layer's output is rescaled whatever the clipped weights, and
no statistic crosses images. `normalization="none"` is the plain VGG-like
critic.

The input is [B, S, S, 3] in [-1, 1]; the output [B, 1] float32 under every
dtype policy.
"""

from __future__ import annotations

import keras

from cascade_tf.config import CriticConfig

# Far below the variance of clipped activations (~1e-8 and up), so that the
# normalisation really rescales them; Keras' default 1e-3 would swamp them.
_NORM_EPSILON = 1e-8


def _validate(cfg: CriticConfig, image_size: int) -> None:
  if not cfg.convs_per_group or min(cfg.convs_per_group) < 1:
    raise ValueError(f"critic.convs_per_group={cfg.convs_per_group}: need at least one group "
                     "and at least one convolution per group.")
  if cfg.base_filters < 1 or cfg.max_filters < 1 or cfg.dense_units < 1:
    raise ValueError(f"critic.base_filters={cfg.base_filters}, max_filters={cfg.max_filters}, "
                     f"dense_units={cfg.dense_units}: must all be >= 1.")
  if cfg.normalization not in ("group", "none"):
    raise ValueError(f"critic.normalization={cfg.normalization!r}: expected 'group' or 'none'.")
  multiple = 2**len(cfg.convs_per_group)
  if image_size is None or image_size < multiple or image_size % multiple:
    raise ValueError(f"image_size={image_size}: the critic needs a fixed positive multiple of "
                     f"{multiple} (2 ** number of conv groups), since it ends in dense layers.")


def build_critic(cfg: CriticConfig, image_size: int, name: str = "critic") -> keras.Model:
  """Builds the WGAN critic D.

  Args:
    cfg: the critic's sub-config.
    image_size: side S of the square input in px, a multiple of
      2**len(cfg.convs_per_group) (the dense layers need a fixed size).
    name: the model's name.

  Returns:
    A functional keras.Model mapping [B, S, S, 3] in [-1, 1] to float32
    scores [B, 1] (unbounded; the last layer, "critic_out", is linear).

  Raises:
    ValueError: for an empty group list, non-positive widths, or an image
      size that the stride-2 groups cannot divide.
  """
  _validate(cfg, image_size)
  inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
  x = inputs
  for g, num_convs in enumerate(cfg.convs_per_group):
    width = min(cfg.base_filters * 2**g, cfg.max_filters)
    for c in range(num_convs):
      stride = 2 if c == num_convs - 1 else 1
      x = keras.layers.Conv2D(width, 3, strides=stride, padding="same",
                              name=f"block{g + 1}_conv{c + 1}")(x)
      if cfg.normalization == "group" and (g, c) != (0, 0):
        x = keras.layers.GroupNormalization(groups=1, epsilon=_NORM_EPSILON,
                                            name=f"block{g + 1}_norm{c + 1}")(x)
      x = keras.layers.LeakyReLU(negative_slope=cfg.leaky_slope,
                                 name=f"block{g + 1}_lrelu{c + 1}")(x)
  x = keras.layers.Flatten(name="flatten")(x)
  x = keras.layers.Dense(cfg.dense_units, name="fc")(x)
  x = keras.layers.LeakyReLU(negative_slope=cfg.leaky_slope, name="fc_lrelu")(x)
  outputs = keras.layers.Dense(1, activation=None, dtype="float32", name="critic_out")(x)
  return keras.Model(inputs, outputs, name=name)
