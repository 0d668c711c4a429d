"""Training-crop symmetries (data/augment.py) and their use by both trainers' samplers."""

import numpy as np
import pytest
import tensorflow as tf

from cascade_tf import config as config_lib
from cascade_tf.data import augment
from cascade_tf.data import pipeline


def test_tf_and_numpy_transforms_agree_and_are_the_eight_symmetries():
  image = np.random.default_rng(0).random((6, 6, 3)).astype(np.float32)
  outs = []
  for k in range(8):
    ours = augment.dihedral_tf(tf.constant(image), tf.constant(k)).numpy()
    np.testing.assert_array_equal(ours, augment.dihedral_np(image, k))
    outs.append(ours)
  # Eight different images, each a permutation of the pixels.
  assert len({o.tobytes() for o in outs}) == 8
  for o in outs:
    np.testing.assert_array_equal(np.sort(o, axis=None), np.sort(image, axis=None))
  np.testing.assert_array_equal(outs[0], image)
  np.testing.assert_array_equal(outs[1], image[:, ::-1])  # k = 1: the `flip` mode's flip.
  np.testing.assert_array_equal(outs[2], np.rot90(image))


def test_unknown_augment_is_refused_by_name():
  with pytest.raises(ValueError, match="train_augment"):
    augment.num_transforms("rotate")
  with pytest.raises(ValueError, match="data.train_augment"):
    config_lib.with_overrides(config_lib.get_preset("tiny"), {"data.train_augment": "rotate"})


def _symmetries(window):
  return [augment.dihedral_np(window, k) for k in range(8)]


@pytest.mark.parametrize("mode,reachable", [("flip", 2), ("dihedral", 8)])
def test_random_square_draws_only_its_modes_transforms_and_all_of_them(mode, reachable):
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
  window = image.astype(np.float32) / 255
  candidates = _symmetries(window)
  seen = set()
  for i in range(48):
    out = pipeline.random_square(image, 40, tf.constant([i, 7], tf.int64), 1.0, mode).numpy()
    errors = [np.abs(c - out).max() for c in candidates]
    k = int(np.argmin(errors))
    assert errors[k] < 1e-5
    seen.add(k)
  assert seen == set(range(reachable))


def test_batched_ops_transform_each_image_like_numpy_and_invert_on_non_square_batches():
  batch = np.random.default_rng(1).random((2, 4, 6, 3)).astype(np.float32)
  for k in range(8):
    ours = np.asarray(augment.dihedral_ops(tf.constant(batch), k))
    np.testing.assert_array_equal(ours, np.stack([augment.dihedral_np(x, k) for x in batch]))
    back = np.asarray(augment.dihedral_ops(tf.constant(ours), k, inverse=True))
    np.testing.assert_array_equal(back, batch)
  with pytest.raises(ValueError, match="k=8"):
    augment.dihedral_ops(tf.constant(batch), 8)
