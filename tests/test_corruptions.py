"""Tests of the corruption ops against PROTOCOL.md and independent references."""

import math

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from cascade_tf.config import DataConfig
from cascade_tf.data import appliers
from cascade_tf.data import corruptions


def _moments(kernel):
  """Returns (principal angle in [0, pi), weights' extent along that axis)."""
  size = kernel.shape[0]
  coords = np.arange(size) - (size - 1) / 2
  rows, cols = np.meshgrid(coords, coords, indexing="ij")
  x, y = cols, -rows  # Eye coordinates: x to the right, y up.
  cxx = (kernel * x * x).sum()
  cyy = (kernel * y * y).sum()
  cxy = (kernel * x * y).sum()
  angle = 0.5 * math.atan2(2 * cxy, cxx - cyy) % math.pi
  along = x * math.cos(angle) + y * math.sin(angle)
  extent = np.abs(along[kernel > 1e-6]).max() * 2
  return angle, extent


@pytest.mark.parametrize("sigma", [0.5, 1.2, 2.0])
def test_gaussian_kernel_matches_analytic(sigma):
  kernel = corruptions.gaussian_kernel(sigma, 15).numpy()
  coords = np.arange(15) - 7
  ref = np.exp(-(coords[:, None]**2 + coords[None, :]**2) / (2 * sigma**2))
  ref /= ref.sum()
  assert kernel.shape == (15, 15)
  np.testing.assert_allclose(kernel.sum(), 1.0, atol=1e-5)
  np.testing.assert_allclose(kernel, ref, atol=1e-6)


@pytest.mark.parametrize("length,angle", [(3.0, 0.0), (7.0, math.pi / 4), (11.0, math.pi / 2),
                                          (9.0, 2.0), (5.5, 2.9)])
def test_motion_kernel_extent_and_orientation(length, angle):
  kernel = corruptions.motion_kernel(length, angle, 15).numpy()
  assert kernel.shape == (15, 15)
  np.testing.assert_allclose(kernel.sum(), 1.0, atol=1e-5)
  assert (kernel >= 0).all()
  # Point-symmetric through the centre.
  np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-6)
  est_angle, extent = _moments(kernel)
  diff = abs(est_angle - angle) % math.pi
  assert min(diff, math.pi - diff) < 0.08, (est_angle, angle)
  # The support spans the segment's length, give or take the pixel footprint.
  assert length - 1.5 <= extent <= length + 1.5, (extent, length)


def test_motion_kernel_longer_is_wider():
  _, short = _moments(corruptions.motion_kernel(3.0, 0.3).numpy())
  _, long = _moments(corruptions.motion_kernel(11.0, 0.3).numpy())
  assert long > short + 6


def test_blur_matches_scipy_reflect_convolution():
  rng = np.random.default_rng(0)
  images = rng.random((3, 40, 33, 3)).astype(np.float32)
  kernels = rng.random((3, 15, 15)).astype(np.float32)  # Not symmetric: checks the flip.
  kernels /= kernels.sum(axis=(1, 2), keepdims=True)
  out = appliers.blur(images, kernels).numpy()
  ref = np.stack([
      np.stack([scipy.ndimage.convolve(images[b, :, :, c], kernels[b], mode="reflect")
                for c in range(3)], -1) for b in range(3)])
  np.testing.assert_allclose(out, ref, atol=1e-5)


def test_blur_with_delta_is_identity():
  images = np.random.default_rng(1).random((2, 32, 32, 3)).astype(np.float32)
  kernels = tf.stack([corruptions.delta_kernel(15)] * 2)
  np.testing.assert_allclose(appliers.blur(images, kernels).numpy(), images, atol=1e-5)


@pytest.mark.parametrize("size", [32, 128])
def test_hole_is_exactly_the_centre_half_square(size):
  cfg = DataConfig(image_size=size, hole_size=size // 2)
  clean = np.random.default_rng(2).random((2, size, size, 3)).astype(np.float32)
  seeds = corruptions.eval_seeds(tf.range(2), 0)
  out = corruptions.corrupt_batch(clean, seeds, "inpaint", cfg)
  mask = out["mask"].numpy()[..., 0]
  expected = np.zeros((size, size), np.float32)
  expected[size // 4:3 * size // 4, size // 4:3 * size // 4] = 1
  np.testing.assert_array_equal(mask[0], expected)
  np.testing.assert_array_equal(mask[1], expected)
  corrupted = out["corrupted"].numpy()
  np.testing.assert_array_equal(corrupted[:, expected == 1], 0.5)
  np.testing.assert_array_equal(corrupted[:, expected == 0], clean[:, expected == 0])


def test_noise_std_on_flat_image():
  cfg = DataConfig(image_size=128, noise_sigma_min=0.02, noise_sigma_max=0.05)
  clean = np.full((6, 128, 128, 3), 0.5, np.float32)
  seeds = corruptions.eval_seeds(tf.range(6), 3)
  out = corruptions.corrupt_batch(clean, seeds, "restore", cfg)
  residual = out["corrupted"].numpy() - clean
  sigma = out["noise_sigma"].numpy()
  assert ((sigma >= 0.02) & (sigma <= 0.05)).all()
  measured = residual.reshape(6, -1).std(axis=1)
  # A flat image is unchanged by any normalised kernel; only the noise remains.
  np.testing.assert_allclose(measured, sigma, rtol=0.03)
  np.testing.assert_allclose(residual.reshape(6, -1).mean(axis=1), 0.0, atol=0.002)


def test_sampled_parameters_follow_the_protocol_ranges():
  cfg = DataConfig()
  params = [corruptions.sample_corruption(tf.constant([0, i]), [8, 8, 3], cfg) for i in range(200)]
  kinds = np.array([int(p["blur_type"]) for p in params])
  share_gaussian = (kinds == corruptions.BLUR_GAUSSIAN).mean()
  assert 0.38 < share_gaussian < 0.62
  for p in params:
    kernel = p["blur_kernel"].numpy()
    assert kernel.shape == (15, 15)
    np.testing.assert_allclose(kernel.sum(), 1.0, atol=1e-5)
    if int(p["blur_type"]) == corruptions.BLUR_GAUSSIAN:
      assert 0.5 <= float(p["gaussian_sigma"]) <= 2.0
    else:
      assert 3.0 <= float(p["motion_length"]) <= 11.0
      assert 0.0 <= float(p["motion_angle"]) < math.pi
    assert 0.0 <= float(p["noise_sigma"]) <= 0.05


def test_joint_track_order_blur_noise_then_hole():
  cfg = DataConfig(image_size=32, hole_size=16)
  clean = np.random.default_rng(3).random((2, 32, 32, 3)).astype(np.float32)
  seeds = corruptions.eval_seeds(tf.range(2), 0)
  joint = corruptions.corrupt_batch(clean, seeds, "joint", cfg)
  restore = corruptions.corrupt_batch(clean, seeds, "restore", cfg)
  mask = joint["mask"].numpy()
  # Outside the hole, joint is exactly restore; inside, the fill value.
  np.testing.assert_allclose(joint["corrupted"].numpy() * (1 - mask),
                             restore["corrupted"].numpy() * (1 - mask), atol=1e-6)
  assert np.all(joint["corrupted"].numpy()[np.broadcast_to(mask, clean.shape) == 1] == 0.5)
  assert restore["mask"].numpy().sum() == 0
  corrupted = restore["corrupted"].numpy()
  assert corrupted.min() >= 0.0 and corrupted.max() <= 1.0


def test_per_image_seed_independent_of_batch():
  cfg = DataConfig(image_size=32, hole_size=16)
  clean = np.random.default_rng(4).random((3, 32, 32, 3)).astype(np.float32)
  seeds = corruptions.eval_seeds(tf.range(3), 0)
  full = corruptions.corrupt_batch(clean, seeds, "joint", cfg)["corrupted"].numpy()
  alone = corruptions.corrupt_batch(clean[2:], seeds[2:], "joint", cfg)["corrupted"].numpy()
  np.testing.assert_allclose(full[2], alone[0], atol=1e-6)
  other = corruptions.corrupt_batch(clean, corruptions.eval_seeds(tf.range(3), 1), "joint",
                                    cfg)["corrupted"].numpy()
  assert np.abs(other - full).max() > 1e-3


def test_corrupt_batch_runs_in_a_tf_function_with_unknown_batch():
  cfg = DataConfig(image_size=32, hole_size=16)
  fn = tf.function(lambda x, s: corruptions.corrupt_batch(x, s, "joint", cfg),
                   input_signature=[tf.TensorSpec([None, 32, 32, 3]),
                                    tf.TensorSpec([None, 2], tf.int64)])
  out = fn(tf.zeros([5, 32, 32, 3]), corruptions.eval_seeds(tf.range(5), 0))
  assert out["corrupted"].shape == (5, 32, 32, 3)
  assert out["blur_kernel"].shape == (5, 15, 15)


def test_unknown_track_is_rejected():
  with pytest.raises(ValueError, match="track"):
    corruptions.corrupt_batch(np.zeros((1, 32, 32, 3), np.float32), [[0, 0]], "denoise",
                              DataConfig(image_size=32, hole_size=16))


def test_appliers_corrupt_checks_its_track_and_parameters():
  clean = np.full((1, 32, 32, 3), 0.5, np.float32)
  with pytest.raises(ValueError, match="Unknown track 'blur'"):
    appliers.corrupt(clean, "blur")
  with pytest.raises(ValueError, match="needs blur kernels and a noise field"):
    appliers.corrupt(clean, "joint", mask=np.zeros((1, 32, 32, 1), np.float32))
  with pytest.raises(ValueError, match="needs a hole mask"):
    appliers.corrupt(clean, "inpaint")
  with pytest.raises(ValueError, match="static odd k"):
    appliers.blur(clean, np.ones((1, 4, 4), np.float32) / 16)


def test_hole_mask_fill_and_composite():
  mask = appliers.hole_mask(6, 10, 2).numpy()[..., 0]
  expected = np.zeros((6, 10))
  expected[2:4, 4:6] = 1.0  # top = (6 - 2) // 2, left = (10 - 2) // 2.
  np.testing.assert_array_equal(mask, expected)
  images = np.random.default_rng(3).random((2, 6, 10, 3)).astype(np.float32)
  filled = appliers.fill_hole(images, mask[None, :, :, None], 0.25).numpy()
  np.testing.assert_array_equal(filled[:, mask > 0], 0.25)
  np.testing.assert_array_equal(filled[:, mask == 0], images[:, mask == 0])
  outputs = np.zeros_like(images)
  pasted = appliers.composite(tf.constant(outputs), images, mask[None, :, :, None]).numpy()
  np.testing.assert_array_equal(pasted[:, mask > 0], 0.0)  # The network's pixels in the hole.
  np.testing.assert_array_equal(pasted[:, mask == 0], images[:, mask == 0])  # Known ones kept.


def test_noise_is_added_then_clipped():
  images = np.array([0.0, 0.5, 0.98], np.float32).reshape(1, 1, 3, 1)
  noise = np.array([-0.1, 0.1, 0.1], np.float32).reshape(1, 1, 3, 1)
  np.testing.assert_allclose(appliers.add_noise(images, noise).numpy().ravel(), [0.0, 0.6, 1.0])
