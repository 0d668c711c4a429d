"""Tests of cascade_tf.metrics against scikit-image and direct numpy sums."""

import numpy as np
import pytest
import tensorflow as tf
from skimage import data, metrics as skmetrics, transform

from cascade_tf import metrics


def _astronaut(size=96):
  image = transform.resize(data.astronaut(), (size, size), anti_aliasing=True)
  return image.astype(np.float32)


def _degrade(image, seed=0):
  """A blurred, noisy copy of `image` in [0, 1] (float32)."""
  rng = np.random.default_rng(seed)
  blurred = (image + np.roll(image, 1, axis=0) + np.roll(image, 1, axis=1)) / 3.0
  noisy = blurred + rng.normal(0.0, 0.05, image.shape)
  return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def _pairs():
  """(clean, restored) batches [B, H, W, 3] float32: random and natural."""
  rng = np.random.default_rng(1)
  random_true = rng.uniform(size=(2, 40, 48, 3)).astype(np.float32)
  random_pred = np.clip(random_true + rng.normal(0, 0.1, random_true.shape), 0, 1)
  clean = _astronaut()
  natural_true = np.stack([clean, clean])
  natural_pred = np.stack([_degrade(clean, 0), clean + 0.01])  # The second stays in [0, 1.01].
  return [(random_true, random_pred.astype(np.float32)),
          (natural_true, np.clip(natural_pred, 0, 1).astype(np.float32))]


@pytest.mark.parametrize("pair_index", [0, 1])
def test_psnr_matches_skimage(pair_index):
  y_true, y_pred = _pairs()[pair_index]
  got = metrics.psnr(y_true, y_pred).numpy()
  expected = [
      skmetrics.peak_signal_noise_ratio(t.astype(np.float64), p.astype(np.float64), data_range=1.0)
      for t, p in zip(y_true, y_pred)
  ]
  assert got.shape == (len(y_true),)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("pair_index", [0, 1])
def test_ssim_matches_skimage(pair_index):
  y_true, y_pred = _pairs()[pair_index]
  got = metrics.ssim(y_true, y_pred).numpy()
  expected = [
      skmetrics.structural_similarity(
          t.astype(np.float64), p.astype(np.float64), gaussian_weights=True, sigma=1.5,
          use_sample_covariance=False, data_range=1.0, channel_axis=-1)
      for t, p in zip(y_true, y_pred)
  ]
  assert got.shape == (len(y_true),)
  # The protocol promises 1e-3; the two agree to about 1e-5 in practice.
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
  # The pairs are far from perfect, so a 1e-3 agreement is not trivial.
  assert np.all(np.asarray(expected) < 0.99)


def test_identical_images_give_cap_and_ssim_one():
  image = _astronaut(32)[None]
  assert metrics.psnr(image, image).numpy()[0] == pytest.approx(metrics.PSNR_CAP_DB)
  mask = np.zeros((1, 32, 32, 1), np.float32)
  mask[:, 8:24, 8:24] = 1
  assert metrics.hole_psnr(image, image, mask).numpy()[0] == pytest.approx(metrics.PSNR_CAP_DB)
  assert metrics.ssim(image, image).numpy()[0] == pytest.approx(1.0, abs=1e-6)


def test_hole_psnr_matches_numpy_on_hole_pixels():
  rng = np.random.default_rng(2)
  y_true = rng.uniform(size=(3, 32, 32, 3)).astype(np.float32)
  y_pred = rng.uniform(size=(3, 32, 32, 3)).astype(np.float32)
  mask = np.zeros((3, 32, 32, 1), np.float32)
  mask[0, 8:24, 8:24] = 1
  mask[1, 0:5, 3:30] = 1
  mask[2, 10:11, 10:11] = 1  # A single pixel.
  # Make the prediction exact outside the hole: only hole pixels can count.
  y_pred = np.where(mask > 0, y_pred, y_true)
  got = metrics.hole_psnr(y_true, y_pred, mask).numpy()
  for i in range(3):
    hole = mask[i, ..., 0] > 0
    err = y_true[i][hole].astype(np.float64) - y_pred[i][hole].astype(np.float64)
    expected = 10 * np.log10(1.0 / np.mean(err**2))
    assert got[i] == pytest.approx(expected, abs=1e-4)
  # Whole-image PSNR differs: the exact pixels outside dilute the error.
  assert np.all(metrics.psnr(y_true, y_pred).numpy() > got + 1.0)


def test_hole_psnr_ignores_errors_outside_hole_and_empty_mask_is_nan():
  y_true = np.full((2, 16, 16, 3), 0.5, np.float32)
  y_pred = np.zeros_like(y_true)
  mask = np.zeros((2, 16, 16, 1), np.float32)
  mask[0, 4:8, 4:8] = 1
  y_pred[0, 4:8, 4:8] = 0.5 + 0.1  # Error 0.1 inside: 20 dB.
  got = metrics.hole_psnr(y_true, y_pred, mask).numpy()
  assert got[0] == pytest.approx(20.0, abs=1e-4)
  assert np.isnan(got[1])


def test_predictions_are_clipped_to_unit_range():
  rng = np.random.default_rng(3)
  y_true = rng.uniform(size=(2, 24, 24, 3)).astype(np.float32)
  y_pred = y_true + rng.normal(0, 0.5, y_true.shape).astype(np.float32)
  assert y_pred.min() < 0 and y_pred.max() > 1
  clipped = np.clip(y_pred, 0, 1)
  mask = np.ones((2, 24, 24, 1), np.float32)
  for fn, args in ((metrics.psnr, ()), (metrics.ssim, ()), (metrics.hole_psnr, (mask,))):
    np.testing.assert_allclose(fn(y_true, y_pred, *args), fn(y_true, clipped, *args), atol=1e-6)
  # Without clipping the unclipped error would be larger: clipping did change the value.
  raw_mse = np.mean((y_true - y_pred)**2, axis=(1, 2, 3))
  assert np.all(metrics.psnr(y_true, y_pred).numpy() > 10 * np.log10(1 / raw_mse) + 0.5)


def test_works_inside_tf_function_with_unknown_batch():
  spec = tf.TensorSpec([None, 16, 16, 3], tf.float32)
  mask_spec = tf.TensorSpec([None, 16, 16, 1], tf.float32)

  @tf.function(input_signature=[spec, spec, mask_spec])
  def all_metrics(y_true, y_pred, mask):
    return (metrics.psnr(y_true, y_pred), metrics.hole_psnr(y_true, y_pred, mask),
            metrics.ssim(y_true, y_pred))

  rng = np.random.default_rng(4)
  y_true = rng.uniform(size=(3, 16, 16, 3)).astype(np.float32)
  y_pred = rng.uniform(size=(3, 16, 16, 3)).astype(np.float32)
  mask = np.ones((3, 16, 16, 1), np.float32)
  value_psnr, value_hole, value_ssim = all_metrics(y_true, y_pred, mask)
  assert value_psnr.shape == value_hole.shape == value_ssim.shape == (3,)
  np.testing.assert_allclose(value_psnr, value_hole, atol=1e-5)  # Full mask: same thing.


def test_shape_mismatch_raises_value_error():
  a = np.zeros((2, 16, 16, 3), np.float32)
  with pytest.raises(ValueError, match="same shape"):
    metrics.psnr(a, np.zeros((2, 16, 12, 3), np.float32))
  with pytest.raises(ValueError, match="same shape"):
    metrics.ssim(a, np.zeros((1, 16, 16, 3), np.float32))
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    metrics.psnr(a[0], a[0])
  with pytest.raises(ValueError, match="mask"):
    metrics.hole_psnr(a, a, np.zeros((2, 16, 16, 3), np.float32))
  with pytest.raises(ValueError, match="mask"):
    metrics.hole_psnr(a, a, np.zeros((2, 8, 16, 1), np.float32))


def test_hole_ssim_is_the_ssim_map_averaged_over_the_hole():
  rng = np.random.default_rng(3)
  clean = rng.uniform(0, 1, (2, 48, 48, 3)).astype(np.float32)
  noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
  damaged = noisy.copy()
  damaged[:, 10:30, 10:30] = 0.5  # Worse inside the hole than outside.
  whole = np.ones((2, 48, 48, 1), np.float32)
  np.testing.assert_allclose(metrics.hole_ssim(clean, noisy, whole).numpy(),
                             metrics.ssim(clean, noisy).numpy(), atol=1e-6)
  hole = np.zeros((2, 48, 48, 1), np.float32)
  hole[:, 10:30, 10:30] = 1.0
  inside = metrics.hole_ssim(clean, damaged, hole).numpy()
  assert np.all(inside < metrics.ssim(clean, damaged).numpy())
  # By hand: the SSIM map (valid windows) averaged where the mask is 1 at the window's centre.
  index_map = tf.image.ssim(clean, damaged, 1.0, return_index_map=True).numpy()
  if index_map.ndim == 4:
    index_map = index_map.mean(-1)
  np.testing.assert_allclose(inside, index_map[:, 5:25, 5:25].mean(axis=(1, 2)), atol=1e-6)
  hole[1] = 0.0
  assert np.isnan(metrics.hole_ssim(clean, damaged, hole).numpy()[1])
