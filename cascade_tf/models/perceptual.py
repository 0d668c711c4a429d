"""The frozen VGG16 feature extractor behind the perceptual loss (eqs. 2-3).

`build_vgg_features` returns a model that takes images in [-1, 1], applies
VGG16's own ("caffe") preprocessing itself and returns the four feature
maps the paper uses, phi_{1,2}, phi_{2,2}, phi_{3,3}, phi_{4,3}: the ReLU
outputs of Keras' `block1_conv2`, `block2_conv2`, `block3_conv3` and
`block4_conv3` (the ReLU is fused into those layers). Block 5 is not
computed. The model is frozen (`trainable=False`).

Weights, `LossConfig.vgg_weights`:

* "imagenet": Keras' ImageNet weights, downloaded once and cached in
  ~/.keras/models/. Without network access this fails with a RuntimeError
  that says how to proceed.
* a path to a local .h5 file holding those weights (the "notop" file).
* "none": random weights, for tests only (a warning is logged); the
  perceptual term is then meaningless.
"""

from __future__ import annotations

import os

from absl import logging
import keras

# The layers whose outputs are phi_{1,2}, phi_{2,2}, phi_{3,3}, phi_{4,3}.
FEATURE_LAYERS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3")
# ImageNet channel means in BGR order, on the 0-255 scale (keras' caffe mode).
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
# Keras' VGG16 "notop" weights: file name, URL and MD5, as in keras.applications.vgg16.
VGG16_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG16_NOTOP_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
                   + VGG16_NOTOP_FILE)
VGG16_NOTOP_MD5 = "6d6bbae143d832006294945121d1f1fc"


@keras.saving.register_keras_serializable(package="cascade_tf")
class VGGPreprocess(keras.layers.Layer):
  """[-1, 1] RGB -> VGG16's input: [0, 255], RGB -> BGR, minus the ImageNet mean.

  Equal to `keras.applications.vgg16.preprocess_input` applied to
  (x + 1) * 127.5. Computes in float32 whatever the dtype policy, so that
  the 0-255 values keep their precision before the first convolution.
  """

  def __init__(self, **kwargs):
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)

  def call(self, images):
    pixels = (keras.ops.cast(images, "float32") + 1.0) * 127.5
    bgr = keras.ops.flip(pixels, axis=-1)
    return bgr - keras.ops.convert_to_tensor(IMAGENET_MEAN_BGR, "float32")

  def compute_output_shape(self, input_shape):
    return input_shape


def _imagenet_weights_path() -> str:
  """Returns the cached (or freshly downloaded) ImageNet "notop" file."""
  try:
    return keras.utils.get_file(VGG16_NOTOP_FILE, VGG16_NOTOP_URL, cache_subdir="models",
                                file_hash=VGG16_NOTOP_MD5)
  except Exception as error:  # Keras raises bare Exceptions for fetch failures.
    cache = os.path.join(os.path.expanduser("~"), ".keras", "models", VGG16_NOTOP_FILE)
    raise RuntimeError(
        f"Could not fetch the VGG16 ImageNet weights for the perceptual loss ({error}). "
        f"Either download {VGG16_NOTOP_URL} on a machine with network access and pass it "
        f"with --vgg_weights=/path/to/{VGG16_NOTOP_FILE} (or copy it to {cache}, "
        "Keras' cache), or disable the perceptual term with --lambda_per=0.") from error


def build_vgg_features(weights: str, image_size: int | None = None) -> keras.Model:
  """Builds the frozen VGG16 feature extractor of the perceptual loss.

  Args:
    weights: "imagenet", "none" (random, tests only), or the path to a
      local .h5 file with Keras' VGG16 notop weights.
    image_size: side S of the square input in px (>= 32), or None for any
      height and width of at least 32 px (VGG16 has four 2x poolings before
      block4_conv3, and Keras needs 32 px at least).

  Returns:
    A frozen keras.Model mapping RGB images [B, H, W, 3] in [-1, 1] to a
    list of the four feature maps [phi_12, phi_22, phi_33, phi_43] of
    shapes [B, H, W, 64], [B, H/2, W/2, 128], [B, H/4, W/4, 256] and
    [B, H/8, W/8, 512], non-negative, on the scale of VGG's 0-255 inputs.

  Raises:
    RuntimeError: if "imagenet" weights cannot be fetched; the message says
      how to proceed.
    ValueError: for a weights path that does not exist, or an image size
      below 32 px.
  """
  if image_size is not None and image_size < 32:
    raise ValueError(f"image_size={image_size}: VGG16 features need at least 32 px.")
  if weights == "none":
    logging.warning("VGG16 perceptual features use RANDOM weights (--vgg_weights=none): "
                    "for tests only, the perceptual loss means nothing.")
    weights_arg = None
  elif weights == "imagenet":
    weights_arg = _imagenet_weights_path()
  else:
    if not os.path.isfile(weights):
      raise ValueError(
          f"--vgg_weights={weights!r}: no such file. Expected 'imagenet', 'none', or the path "
          f"to a local {VGG16_NOTOP_FILE} (from {VGG16_NOTOP_URL}).")
    weights_arg = weights

  vgg = keras.applications.VGG16(include_top=False, weights=weights_arg,
                                 input_shape=(image_size, image_size, 3))
  inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
  x = VGGPreprocess(name="vgg_preprocess")(inputs)
  features = []
  # Reuse the loaded layers (and their weights) on the preprocessed input,
  # stopping at block4_conv3: the block-5 layers are never called.
  for layer in vgg.layers[1:]:
    x = layer(x)
    if layer.name in FEATURE_LAYERS:
      features.append(x)
    if layer.name == FEATURE_LAYERS[-1]:
      break
  model = keras.Model(inputs, features, name="vgg16_features")
  model.trainable = False
  return model
