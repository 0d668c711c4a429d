"""Tests of the tf.data pipeline: element contract, determinism, randomness, rules."""

import numpy as np
import skimage
import pytest
import tensorflow as tf

from cascade_tf.config import DataConfig
from cascade_tf.data import pipeline
from cascade_tf.data import sources


def _source(images, split="train"):
  """An in-memory ImageSource of uint8 images of any sizes."""
  ids = [f"img{i}" for i in range(len(images))]
  dataset = tf.data.Dataset.from_generator(
      lambda: ({"image": im, "id": i} for im, i in zip(images, ids)),
      output_signature={"image": tf.TensorSpec([None, None, 3], tf.uint8),
                        "id": tf.TensorSpec([], tf.string)})
  return sources.ImageSource(name="memory", split=split, dataset=dataset,
                             num_images=len(images), cacheable=True,
                             skipped=sources.SkipCounter())


def _images(n=6, seed=0, shape=(48, 40)):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(n)]


CFG = DataConfig(image_size=32, hole_size=16, shuffle_buffer=8)


def test_eval_element_contract_and_protocol_preparation():
  images = _images(3, shape=(40, 64))
  batch = next(iter(pipeline.make_dataset(CFG, split="test", track="joint", batch_size=3,
                                          training=False, source=_source(images, "test"))))
  assert batch["corrupted"].shape == (3, 32, 32, 3)
  assert batch["clean"].shape == (3, 32, 32, 3)
  assert batch["mask"].shape == (3, 32, 32, 1)
  assert batch["blur_kernel"].shape == (3, 15, 15)
  for key in ("noise_sigma", "blur_type", "gaussian_sigma", "motion_length", "motion_angle"):
    assert batch[key].shape == (3,)
  assert list(batch["index"].numpy()) == [0, 1, 2]
  assert [i.decode() for i in batch["id"].numpy()] == ["img0", "img1", "img2"]
  # Clean = central 40x40 square of the 40x64 image, anti-aliased bicubic resize to 32.
  square = images[1][:, 12:52].astype(np.float32) / 255.0
  expected = tf.image.resize(square, [32, 32], method="bicubic",
                             antialias=True).numpy().clip(0, 1)
  np.testing.assert_allclose(batch["clean"][1].numpy(), expected, atol=1e-5)
  values = batch["corrupted"].numpy()
  assert values.min() >= 0 and values.max() <= 1


def test_evaluation_is_deterministic_and_seeded():
  images = _images(5)

  def run(eval_seed, batch_size):
    cfg = DataConfig(image_size=32, hole_size=16, eval_seed=eval_seed)
    ds = pipeline.make_dataset(cfg, split="test", track="joint", batch_size=batch_size,
                               training=False, source=_source(images, "test"))
    return np.concatenate([b["corrupted"].numpy() for b in ds])

  first, second = run(0, 2), run(0, 2)
  np.testing.assert_array_equal(first, second)
  assert first.shape == (5, 32, 32, 3)
  # Batch size does not change what image i sees.
  np.testing.assert_allclose(run(0, 5), first, atol=1e-6)
  assert np.abs(run(1, 2) - first).max() > 1e-2


def test_training_randomness_differs_between_steps_and_is_seeded():
  images = _images(4)

  def batches(seed, n=3):
    ds = pipeline.make_dataset(CFG, split="train", track="joint", batch_size=4, training=True,
                               seed=seed, source=_source(images))
    it = iter(ds)
    return [next(it) for _ in range(n)]

  a, b = batches(0), batches(0)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["corrupted"].numpy(), y["corrupted"].numpy())
  # Consecutive steps see fresh crops and corruptions.
  assert np.abs(a[0]["corrupted"].numpy() - a[1]["corrupted"].numpy()).max() > 1e-2
  assert not np.array_equal(a[0]["noise_sigma"].numpy(), a[1]["noise_sigma"].numpy())
  other = batches(1)
  assert np.abs(other[0]["corrupted"].numpy() - a[0]["corrupted"].numpy()).max() > 1e-2


def test_training_resume_continues_the_corruption_stream():
  images = _images(1)  # One image: the shuffle order cannot differ.

  def stream(start_index, n):
    ds = pipeline.make_dataset(CFG, split="train", track="restore", batch_size=2, training=True,
                               seed=3, source=_source(images), start_index=start_index)
    it = iter(ds)
    return np.concatenate([next(it)["corrupted"].numpy() for _ in range(n)])

  full = stream(0, 3)
  resumed = stream(2, 2)
  np.testing.assert_allclose(resumed, full[2:], atol=1e-6)


def test_small_images_upscale_or_skip():
  images = [np.full((20, 24, 3), 100, np.uint8), np.full((64, 64, 3), 50, np.uint8)]
  up = pipeline.make_dataset(CFG, split="test", track="inpaint", batch_size=4, training=False,
                             source=_source(images, "test"))
  batch = next(iter(up))
  assert batch["clean"].shape[0] == 2
  np.testing.assert_allclose(batch["clean"][0].numpy(), 100 / 255, atol=2e-3)
  skip_cfg = DataConfig(image_size=32, hole_size=16, small_image_rule="skip")
  skipped = pipeline.make_dataset(skip_cfg, split="test", track="inpaint", batch_size=4,
                                  training=False, source=_source(images, "test"))
  batch = next(iter(skipped))
  assert batch["clean"].shape[0] == 1
  assert [i.decode() for i in batch["id"].numpy()] == ["img1"]
  # Training crops need the short side >= S: upscaling makes it so.
  train = pipeline.make_dataset(CFG, split="train", track="inpaint", batch_size=2, training=True,
                                source=_source(images))
  assert next(iter(train))["clean"].shape == (2, 32, 32, 3)


def test_max_images_and_bad_arguments():
  images = _images(5)
  ds = pipeline.make_dataset(CFG, split="test", track="inpaint", batch_size=2, training=False,
                             source=_source(images, "test"), max_images=3)
  assert sum(int(b["clean"].shape[0]) for b in ds) == 3
  with pytest.raises(ValueError, match="track"):
    pipeline.make_dataset(CFG, split="test", track="blur", batch_size=2, training=False,
                          source=_source(images, "test"))
  with pytest.raises(ValueError, match="split"):
    pipeline.make_dataset(CFG, split="val", track="joint", batch_size=2, training=False,
                          source=_source(images, "test"))


def test_random_square_is_a_flipped_or_plain_crop_of_the_image():
  image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
  out = pipeline.random_square(image, 50, tf.constant([1, 2], tf.int64), 1.0).numpy()
  # min_fraction 1.0 and S = short side: the crop is an exact 50x50 window.
  windows = [image[:, left:left + 50].astype(np.float32) / 255 for left in range(21)]
  best = min(min(np.abs(w - out).max(), np.abs(w[:, ::-1] - out).max()) for w in windows)
  assert best < 1e-5


def test_samples_source_end_to_end():
  cfg = DataConfig(image_size=64, hole_size=32)
  ds = pipeline.make_dataset(cfg, split="train", track="joint", batch_size=2, training=True)
  batch = next(iter(ds))
  assert batch["corrupted"].shape == (2, 64, 64, 3)
  assert np.isfinite(batch["corrupted"].numpy()).all()


def test_protocol_resize_matches_pil_bicubic():
  """PROTOCOL.md: the clean images' resize is PIL's BICUBIC (reducing_gap=None) to ~57 dB."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  photo = skimage.data.astronaut()[:481, :481]
  ours = pipeline.resize_square(tf.constant(photo), 128).numpy()
  pil = np.asarray(Image.fromarray(photo).resize((128, 128), Image.BICUBIC,
                                                 reducing_gap=None)).astype(np.float32) / 255.0
  mse = float(np.mean((ours - pil) ** 2))
  assert 10 * np.log10(1.0 / mse) > 50.0
  bilinear = tf.image.resize(photo.astype(np.float32) / 255.0, [128, 128], method="bilinear",
                             antialias=True).numpy()
  assert float(np.mean((bilinear - pil) ** 2)) > 10 * mse  # The old, softer prep is further off.
