"""Tests of cascade_tf.losses on tensors whose answers are known by hand."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from cascade_tf import config
from cascade_tf import losses
from cascade_tf.models import build_critic
from cascade_tf.models import build_vgg_features


def test_mse_loss_per_example():
  y_true = tf.zeros([2, 4, 4, 3])
  y_pred = tf.stack([tf.fill([4, 4, 3], 0.5), tf.fill([4, 4, 3], -1.0)])
  np.testing.assert_allclose(losses.mse_loss(y_true, y_pred).numpy(), [0.25, 1.0])


def test_mse_loss_means_over_pixels_and_channels():
  y_pred = np.zeros([1, 2, 2, 3], np.float32)
  y_pred[0, 0, 0, 0] = 1.2
  np.testing.assert_allclose(losses.mse_loss(tf.zeros_like(y_pred), y_pred).numpy(),
                             [1.44 / 12], rtol=1e-6)


def test_l1_loss_per_example():
  y_true = tf.zeros([2, 4, 4, 3])
  y_pred = tf.stack([tf.fill([4, 4, 3], 0.5), tf.fill([4, 4, 3], -1.0)])
  np.testing.assert_allclose(losses.l1_loss(y_true, y_pred).numpy(), [0.5, 1.0])
  with pytest.raises(ValueError, match="differ"):
    losses.l1_loss(tf.zeros([1, 4, 4, 3]), tf.zeros([1, 4, 5, 3]))


def test_neg_psnr_loss_is_minus_the_metric_and_weighs_images_by_their_error():
  rng = np.random.default_rng(0)
  clean = rng.uniform(0.2, 0.8, (2, 8, 8, 3)).astype("float32")  # Nothing clipped below.
  # One image 0.01 off everywhere, one 0.1: 40 dB and 20 dB on the [0, 1] scale.
  output = clean + np.array([0.01, 0.1], np.float32)[:, None, None, None]
  to_model = lambda x: tf.constant(x * 2 - 1)
  loss = losses.neg_psnr_loss(to_model(clean), to_model(output)).numpy()
  np.testing.assert_allclose(loss, [10 * np.log10(1e-4 + losses.NEG_PSNR_FLOOR),
                                    10 * np.log10(1e-2 + losses.NEG_PSNR_FLOOR)], rtol=1e-5)
  metric = losses.psnr(tf.constant(clean), tf.constant(output)).numpy()
  # The metric's PSNR, less the floor's share: 10 log10(1 + floor / MSE), 0.004 dB at 20 dB.
  assert loss == pytest.approx(-metric + 10 * np.log10(1 + losses.NEG_PSNR_FLOOR / np.array(
      [1e-4, 1e-2])), abs=1e-4)
  # d loss / d MSE = 10 / ln(10) / (MSE + floor): the closer image pulls 91 times harder.
  pred = tf.Variable(to_model(output))
  with tf.GradientTape() as tape:
    total = tf.reduce_sum(losses.neg_psnr_loss(to_model(clean), pred))
  grad = tape.gradient(total, pred).numpy()
  per_unit_error = np.abs(grad).mean(axis=(1, 2, 3)) / np.array([0.01, 0.1])
  assert per_unit_error[0] / per_unit_error[1] == pytest.approx(
      (1e-2 + losses.NEG_PSNR_FLOOR) / (1e-4 + losses.NEG_PSNR_FLOOR), rel=1e-3)


def test_share_at_bound_and_gradient_penalty_by_hand():
  values = [tf.constant([0.01, -0.01, 0.005]), tf.constant([[0.0099999, 0.0]])]
  assert float(losses.share_at_bound(values, 0.01)) == pytest.approx(3 / 5)
  gradients = tf.constant([[[3.0, 4.0]], [[0.0, 1.0]]])  # Norms 5 and 1.
  np.testing.assert_allclose(losses.gradient_penalty(gradients).numpy(), [16.0, 0.0], atol=1e-5)


def test_mse_loss_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match="differ"):
    losses.mse_loss(tf.zeros([2, 4, 4, 3]), tf.zeros([2, 4, 4, 1]))


def test_perceptual_loss_by_hand():
  # Layer 1 differs by 2 everywhere (L = 4), layer 2 by 1 in one of 4 cells (L = 0.25).
  true = [tf.zeros([1, 2, 2, 1]), tf.zeros([1, 1, 2, 2])]
  pred = [tf.fill([1, 2, 2, 1], 2.0), tf.constant([[[[1.0, 0.0], [0.0, 0.0]]]])]
  np.testing.assert_allclose(losses.perceptual_loss(true, pred).numpy(), [(4.0 + 0.25) / 2])


def test_perceptual_loss_rejects_mismatched_lists():
  with pytest.raises(ValueError, match="equally long"):
    losses.perceptual_loss([tf.zeros([1, 2, 2, 1])], [])
  with pytest.raises(ValueError, match="non-empty"):
    losses.perceptual_loss([], [])


def test_perceptual_loss_with_vgg_is_zero_only_for_identical_images():
  keras.utils.set_random_seed(0)
  vgg = build_vgg_features("none", 32)
  images = tf.random.stateless_uniform([2, 32, 32, 3], [0, 1], -1.0, 1.0)
  other = tf.concat([images[:1], images[1:] * 0.5], axis=0)
  per_example = losses.perceptual_loss(vgg(images), vgg(other)).numpy()
  assert per_example.shape == (2,)
  assert per_example[0] == 0.0 and per_example[1] > 0.0
  np.testing.assert_array_equal(losses.perceptual_loss(vgg(images), vgg(images)).numpy(), [0, 0])


@pytest.mark.parametrize("shape", [[3, 1], [3]])
def test_wasserstein_losses(shape):
  real = tf.reshape(tf.constant([1.0, 2.0, -1.0]), shape)
  fake = tf.reshape(tf.constant([0.5, 3.0, 1.0]), shape)
  np.testing.assert_allclose(losses.wasserstein_critic_loss(real, fake).numpy(), [-0.5, 1.0, 2.0])
  np.testing.assert_allclose(losses.wasserstein_generator_loss(fake).numpy(), [-0.5, -3.0, -1.0])


def test_wasserstein_losses_reject_bad_shapes():
  with pytest.raises(ValueError, match=r"\[B, 1\] or \[B\]"):
    losses.wasserstein_generator_loss(tf.zeros([3, 2]))


def test_total_generator_loss_weights_terms():
  cfg = config.LossConfig(lambda_mse=1.0, lambda_per=0.1, lambda_adv=0.01)
  terms = {"mse": tf.constant([1.0, 2.0]), "perceptual": tf.constant([10.0, 0.0]),
           "adversarial": tf.constant([-100.0, 100.0])}
  np.testing.assert_allclose(losses.total_generator_loss(terms, cfg).numpy(), [1.0, 3.0],
                             rtol=1e-6)
  # Missing keys count as zero.
  np.testing.assert_allclose(losses.total_generator_loss({"mse": 2.0}, cfg).numpy(), 2.0)


def test_total_generator_loss_skips_disabled_terms_and_rejects_unknown_ones():
  cfg = config.LossConfig(lambda_per=0.0)
  total = losses.total_generator_loss({"mse": 1.0, "perceptual": float("nan")}, cfg)
  assert float(total) == 1.0
  with pytest.raises(ValueError, match="unknown terms"):
    losses.total_generator_loss({"mse": 1.0, "percep": 1.0}, cfg)


def test_clip_weights_bounds_every_critic_weight():
  keras.utils.set_random_seed(0)
  critic = build_critic(config.tiny().critic, 32)
  for variable in critic.trainable_variables:  # Make every weight exceed the bound.
    variable.assign(tf.fill(variable.shape, 0.5))
  critic.get_layer("critic_out").bias.assign([-0.3])
  losses.clip_weights(critic, 0.01)
  for variable in critic.trainable_variables:
    values = variable.numpy()
    assert np.abs(values).max() <= np.float32(0.01), variable.path
  assert float(critic.get_layer("critic_out").bias[0]) == pytest.approx(-0.01)

  clip = tf.function(lambda: losses.clip_weights(critic, tf.constant(0.001)))
  clip()
  for variable in critic.trainable_variables:
    assert np.abs(variable.numpy()).max() <= np.float32(0.001), variable.path


def test_clip_weights_rejects_non_positive_bound():
  critic = build_critic(dataclasses.replace(config.tiny().critic), 32)
  with pytest.raises(ValueError, match="must be > 0"):
    losses.clip_weights(critic, 0.0)


def test_reduce_per_example_divides_by_global_batch():
  value = losses.reduce_per_example(tf.constant([1.0, 2.0, 3.0, 4.0]), 8)
  assert float(value) == pytest.approx(10.0 / 8)
  with pytest.raises(ValueError, match="global_batch_size"):
    losses.reduce_per_example(tf.constant([1.0]), 0)


def test_validation_psnr_is_the_evaluation_psnr():
  """losses.psnr (keras.ops: both trainers' validation) = metrics.psnr (the evaluation's)."""
  from cascade_tf import metrics  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  clean = rng.uniform(size=(3, 8, 8, 3)).astype(np.float32)
  # Out-of-range outputs are clipped by both; an exact copy reaches the same cap.
  noisy = clean + rng.normal(0, 0.3, size=clean.shape).astype(np.float32)
  for pred in (noisy, clean, clean + 1e-3):
    np.testing.assert_allclose(np.asarray(losses.psnr(clean, pred)),
                               metrics.psnr(clean, pred).numpy(), atol=1e-4)
  assert losses.PSNR_CAP_DB == metrics.PSNR_CAP_DB
  assert float(losses.psnr(clean, clean)[0]) == pytest.approx(losses.PSNR_CAP_DB, abs=1e-4)
  # 0.1 everywhere: 20 dB.
  assert float(losses.psnr(clean * 0, clean * 0 + 0.1)[0]) == pytest.approx(20.0, abs=1e-4)
