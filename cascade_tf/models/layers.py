"""Layer conventions shared by the networks."""

import keras


def batch_norm(name: str) -> keras.layers.BatchNormalization:
  """Batch norm whose statistics span the global batch under tf.distribute.

  With `synchronized=True` every replica normalises with the mean and
  variance of the whole global batch, so a step on N replicas computes the
  same update as on one device with the same global batch (tested in
  tests/test_training.py). On one device it is the ordinary layer.

  Keras implements `synchronized` for the TensorFlow backend only; on the
  others (the JAX trainer, scripts/train_jax.py) the layer is the ordinary
  one, with the same variables, so weights move between backends.
  """
  return keras.layers.BatchNormalization(
      synchronized=keras.backend.backend() == "tensorflow", name=name)
