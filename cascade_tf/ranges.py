"""The one place where pixel ranges are converted.

Images are float32 in [0, 1] at the edges of the system (files, the data
pipeline, metrics, the serving signatures) and in [-1, 1] inside the
networks. Every conversion goes through these two functions.

Written in `keras.ops`, so that the TensorFlow pipeline and the JAX trainer
share them.
"""

from keras import ops


def to_model(images_01):
  """[0, 1] -> [-1, 1]."""
  return images_01 * 2.0 - 1.0


def from_model(images_pm1, clip=False):
  """[-1, 1] -> [0, 1]; with `clip`, the result is clipped to [0, 1]."""
  images_01 = (images_pm1 + 1.0) * 0.5
  return ops.clip(images_01, 0.0, 1.0) if clip else images_01
