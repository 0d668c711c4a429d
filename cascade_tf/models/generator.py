"""The inpainting generator G of the paper's inpainting GAN (Sec. 3.2, Fig. 3).

An encoder-decoder with residual blocks at the bottleneck, mirrored skip
connections and an input-to-output skip:

    x -> [enc_1 .. enc_L] -> [res_1 .. res_N] -> [dec_1 .. dec_L] -> + -> G(x)
         mirrored skips: enc_i output + the decoder output of its size
         input skip:     x + dec_L (`decoder_out`)

* Encoder: `num_levels` stride-2 convolutions (kernel `down_kernel_size`),
  each followed by batch norm and LeakyReLU(`leaky_slope`); widths
  min(base_filters * 2**i, max_filters).
* Bottleneck: `num_res_blocks` residual blocks, conv-BN-ReLU-conv-BN plus
  the identity, with no activation after the sum (Fig. 3's caption).
* Decoder: `num_levels` stride-2 transposed convolutions mirroring the
  encoder's widths, each followed by batch norm and ReLU except the last,
  `decoder_out`, which is linear with 3 channels and a bias.
* Mirrored skips: the output of encoder level i (after its LeakyReLU) is
  added to the decoder output of the same size (after its ReLU).
* Input-to-output skip: G(x) = x + decoder_out(...), so a generator whose
  last layer is zero is the identity.
* With `mask_channel` (beyond the paper) the input has a 4th channel, the
  hole mask (1 in the hole), and the input skip adds the 3 image channels.
* With `dilations` (beyond the paper) the residual blocks' convolutions are
  dilated, rates cycled over the blocks, so that the bottleneck sees
  across a large hole; with `prefill` (needs the mask channel) the hole is
  first filled by a push-pull interpolation of the known pixels
  (`layers.PushPullFill`, no weights), which feeds the encoder and the
  input skip, so the network learns a correction of a smooth fill rather
  than the hole's content from a constant.
* With `bottleneck_filters` (beyond the paper) the deepest encoder level
  and the residual blocks have that width instead of the level's
  min(base_filters * 2**(L - 1), max_filters); the decoder's widths stay.
  A trained generator grows into a wider one by `train.py
  --init_from=pretrained` (`weights_io.assign_grown`: the new
  channels get no path into the old ones, so its output is unchanged).
* With `decoder_res_blocks` (beyond the paper) each decoder level but the
  last is followed, after its mirrored skip, by that many residual blocks of
  its width; their second batch norm starts at gamma = 0, so each starts as
  the identity and a trained generator without them can grow into one with
  them (`train.py --init_from=pretrained`) with its output unchanged.

Images are in [-1, 1]; the output is not clipped. The network is fully
convolutional: any height and width that are multiples of 2**num_levels
work. `decoder_out` and the final sum are float32 under every Keras dtype
policy so that mixed precision leaves the output in full precision.

docs/architecture.md lists the choices made where the paper is silent.
"""

from __future__ import annotations

import keras

from cascade_tf.config import GeneratorConfig
from cascade_tf.models import layers


def _level_filters(cfg: GeneratorConfig) -> list[int]:
  """Output channels of encoder level i = 0 .. num_levels - 1 (the last: the bottleneck's)."""
  filters = [min(cfg.base_filters * 2**i, cfg.max_filters) for i in range(cfg.num_levels)]
  if cfg.bottleneck_filters:
    filters[-1] = cfg.bottleneck_filters
  return filters


def _residual_block(x, filters: int, kernel_size: int, name: str, dilation: int = 1,
                    zero_init: bool = False):
  """conv-BN-ReLU-conv-BN plus identity (Fig. 3); no activation after the sum.

  With `zero_init` the second batch norm's gamma starts at 0: the block starts as
  the identity."""
  shortcut = x
  y = keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=False,
                          dilation_rate=dilation, name=f"{name}_conv1")(x)
  y = layers.batch_norm(f"{name}_bn1")(y)
  y = keras.layers.ReLU(name=f"{name}_relu")(y)
  y = keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=False,
                          dilation_rate=dilation, name=f"{name}_conv2")(y)
  y = layers.batch_norm(f"{name}_bn2", gamma_initializer="zeros" if zero_init else "ones")(y)
  return keras.layers.Add(name=f"{name}_add")([shortcut, y])


def _validate(cfg: GeneratorConfig, image_size: int | None) -> None:
  if cfg.num_levels < 1:
    raise ValueError(f"generator.num_levels={cfg.num_levels}: must be >= 1.")
  if cfg.num_res_blocks < 0:
    raise ValueError(f"generator.num_res_blocks={cfg.num_res_blocks}: must be >= 0.")
  if cfg.base_filters < 1 or cfg.max_filters < 1 or cfg.bottleneck_filters < 0:
    raise ValueError(f"generator.base_filters={cfg.base_filters}, "
                     f"generator.max_filters={cfg.max_filters}: must be >= 1; "
                     f"generator.bottleneck_filters={cfg.bottleneck_filters}: >= 0.")
  for name in ("down_kernel_size", "res_kernel_size"):
    if getattr(cfg, name) < 1:
      raise ValueError(f"generator.{name}={getattr(cfg, name)}: must be >= 1.")
  multiple = 2**cfg.num_levels
  if image_size is not None and (image_size < multiple or image_size % multiple):
    raise ValueError(f"image_size={image_size}: the generator needs a positive multiple of "
                     f"{multiple} (2 ** generator.num_levels).")


def build_generator(cfg: GeneratorConfig, image_size: int | None = None,
                    name: str = "generator") -> keras.Model:
  """Builds the inpainting generator G.

  Args:
    cfg: the generator's sub-config.
    image_size: side S of the square input in px, a multiple of
      2**cfg.num_levels; None leaves height and width unspecified (they must
      still be multiples of 2**cfg.num_levels at call time).
    name: the model's name.

  Returns:
    A functional keras.Model mapping float32 [B, H, W, 3] in [-1, 1] (with
    `cfg.mask_channel`: [B, H, W, 4], the image then the mask, 1 in the
    hole) to float32 [B, H, W, 3] = image + decoder output (not clipped).
    The last transposed convolution is the layer named "decoder_out".

  Raises:
    ValueError: for a non-positive width or depth, or an image size that is
      not a multiple of 2**cfg.num_levels.
  """
  _validate(cfg, image_size)
  filters = _level_filters(cfg)
  channels = 4 if cfg.mask_channel else 3
  inputs = keras.Input(shape=(image_size, image_size, channels), name="corrupted")
  image = inputs[..., :3] if cfg.mask_channel else inputs
  x = inputs
  if cfg.prefill:
    mask = inputs[..., 3:]
    image = layers.PushPullFill(name="prefill")(image, mask)
    x = keras.layers.Concatenate(name="prefill_concat")([image, mask])

  # Encoder. Every stride-2 conv is followed by BN (so it carries no bias)
  # and LeakyReLU, as in Sec. 3.2 ("Batch normalization layer is used after
  # every convolution layer"). `skips[i]` has 1 / 2**(i + 1) of the input size.
  skips = []
  for i, width in enumerate(filters):
    x = keras.layers.Conv2D(width, cfg.down_kernel_size, strides=2, padding="same",
                            use_bias=False, name=f"enc{i + 1}_conv")(x)
    x = layers.batch_norm(f"enc{i + 1}_bn")(x)
    x = keras.layers.LeakyReLU(negative_slope=cfg.leaky_slope, name=f"enc{i + 1}_lrelu")(x)
    skips.append(x)

  for j in range(cfg.num_res_blocks):
    dilation = cfg.dilations[j % len(cfg.dilations)] if cfg.dilations else 1
    x = _residual_block(x, filters[-1], cfg.res_kernel_size, name=f"res{j + 1}",
                        dilation=dilation)

  # Decoder: transposed conv j brings the features to the size of encoder
  # level L - 2 - j and to its width, then the mirrored skip adds that
  # level's output. The bottleneck itself has no same-size decoder output,
  # so it gets no mirrored skip (the residual blocks already carry identities).
  for j in range(cfg.num_levels - 1):
    level = cfg.num_levels - 2 - j
    x = keras.layers.Conv2DTranspose(filters[level], cfg.down_kernel_size, strides=2,
                                     padding="same", use_bias=False,
                                     name=f"dec{j + 1}_deconv")(x)
    x = layers.batch_norm(f"dec{j + 1}_bn")(x)
    x = keras.layers.ReLU(name=f"dec{j + 1}_relu")(x)
    x = keras.layers.Add(name=f"skip{level + 1}_add")([x, skips[level]])
    for k in range(cfg.decoder_res_blocks):
      x = _residual_block(x, filters[level], cfg.res_kernel_size, name=f"dec{j + 1}_res{k + 1}",
                          zero_init=True)

  residual = keras.layers.Conv2DTranspose(3, cfg.down_kernel_size, strides=2, padding="same",
                                          use_bias=True, dtype="float32",
                                          name="decoder_out")(x)
  outputs = keras.layers.Add(dtype="float32", name="input_skip_add")([image, residual])
  return keras.Model(inputs, outputs, name=name)
