"""Training-crop symmetries (data/augment.py) and their use by both trainers' samplers."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from cascade_tf import config as config_lib
from cascade_tf.data import augment
from cascade_tf.data import pipeline
from cascade_tf.data import sources


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


def test_channel_orders_agree_in_tf_and_numpy_and_are_the_six_permutations():
  image = np.random.default_rng(2).random((5, 5, 3)).astype(np.float32)
  outs = []
  for order, channels in enumerate(augment.CHANNEL_ORDERS):
    ours = augment.channel_order_tf(tf.constant(image), tf.constant(order)).numpy()
    np.testing.assert_array_equal(ours, augment.channel_order_np(image, order))
    np.testing.assert_array_equal(ours, np.stack([image[..., c] for c in channels], axis=-1))
    outs.append(ours)
  assert sorted(augment.CHANNEL_ORDERS) == sorted(itertools.permutations(range(3)))
  assert len({o.tobytes() for o in outs}) == 6
  np.testing.assert_array_equal(outs[0], image)  # Order 0 keeps the photo's colours.


@pytest.mark.parametrize("probability", [0.0, 0.3, 1.0])
def test_channel_order_draws_permute_at_the_probability_and_reach_every_other_order(probability):
  draws = {"tf": np.array([int(augment.draw_channel_order_tf(tf.constant([i, 5], tf.int64),
                                                             probability)) for i in range(600)]),
           "np": augment.draw_channel_order_np(np.random.default_rng(0), probability, 600)}
  for name, orders in draws.items():
    permuted = orders > 0
    # Binomial(600, p): 5 standard deviations (at most 0.1) either side.
    assert abs(permuted.mean() - probability) <= 0.1, name
    assert set(orders[permuted]) == (set(range(1, 6)) if probability > 0 else set()), name


def test_channel_permute_out_of_range_is_refused_by_name():
  tiny = config_lib.get_preset("tiny")
  for bad in (-0.1, 1.5):
    with pytest.raises(ValueError, match="data.train_channel_permute"):
      config_lib.with_overrides(tiny, {"data.train_channel_permute": bad})
  assert config_lib.with_overrides(
      tiny, {"data.train_channel_permute": 0.5}).data.train_channel_permute == 0.5


def test_pipeline_permutes_the_channels_of_the_same_crops_and_nothing_else():
  """p = 1 reorders every crop's channels; crops, holes, blur and noise are those of p = 0."""
  rng = np.random.default_rng(4)
  images = [rng.integers(0, 256, (40, 36, 3), dtype=np.uint8) for _ in range(3)]

  def batch(probability):
    cfg = config_lib.DataConfig(image_size=32, hole_size=16, shuffle_buffer=4,
                                train_channel_permute=probability)
    source = tf.data.Dataset.from_generator(
        lambda: ({"image": im, "id": str(i)} for i, im in enumerate(images)),
        output_signature={"image": tf.TensorSpec([None, None, 3], tf.uint8),
                          "id": tf.TensorSpec([], tf.string)})
    src = sources.ImageSource(name="memory", split="train", dataset=source, num_images=3,
                              cacheable=True, skipped=sources.SkipCounter())
    return next(iter(pipeline.make_dataset(cfg, split="train", track="joint", batch_size=8,
                                           training=True, seed=3, source=src)))

  plain, permuted = batch(0.0), batch(1.0)
  for key in ("mask", "noise_sigma", "blur_kernel"):
    np.testing.assert_array_equal(plain[key].numpy(), permuted[key].numpy())
  orders = []
  for a, b in zip(plain["clean"].numpy(), permuted["clean"].numpy()):
    errors = [np.abs(augment.channel_order_np(a, j) - b).max() for j in range(6)]
    orders.append(int(np.argmin(errors)))
    assert min(errors) < 1e-6
  assert 0 not in orders and len(set(orders)) > 1


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
