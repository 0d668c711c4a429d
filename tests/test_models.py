"""Tests of cascade_tf.models: shapes, parameter counts, identities, serialisation."""

import logging
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from cascade_tf import config
from cascade_tf import losses
from cascade_tf import runtime
from cascade_tf import weights_io
from cascade_tf.data import augment
from cascade_tf.models import build_cascade
from cascade_tf.models.cascade import cascade_inputs
from cascade_tf.models import build_critic
from cascade_tf.models import build_generator
from cascade_tf.models import build_restorer
from cascade_tf.models import build_vgg_features
from cascade_tf.models import layers
from cascade_tf.models import perceptual

ARCHITECTURE_DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
# Parameter counts of the paper preset (also in docs/architecture.md).
PAPER_PARAMS = {"generator": 46_968_323, "critic": 23_113_665, "restorer": 505_251}


@pytest.fixture(scope="module")
def tiny():
  return config.tiny()


@pytest.fixture(scope="module")
def tiny_nets(tiny):
  keras.utils.set_random_seed(0)
  size = tiny.data.image_size
  return {
      "generator": build_generator(tiny.generator, size),
      "critic": build_critic(tiny.critic, size),
      "restorer": build_restorer(tiny.restorer, size),
  }


def _images(batch=2, size=32, seed=0):
  return tf.random.stateless_uniform([batch, size, size, 3], [seed, 1], -1.0, 1.0)


# --------------------------------------------------------------------------
# Shapes and parameter counts.


@pytest.mark.parametrize("preset", sorted(config.PRESETS))
def test_output_shapes_for_every_preset(preset):
  cfg = config.get_preset(preset)
  size = cfg.data.image_size
  generator = build_generator(cfg.generator, size)
  critic = build_critic(cfg.critic, size)
  restorer = build_restorer(cfg.restorer, size)
  assert generator.output_shape == (None, size, size, 3)
  assert critic.output_shape == (None, 1)
  assert restorer.output_shape == (None, size, size, 3)
  if preset == "tiny":  # Run only the tiny networks; the others are checked statically.
    images = _images(size=size)
    assert generator(images).shape == (2, size, size, 3)
    assert critic(images).shape == (2, 1)
    assert restorer(images).shape == (2, size, size, 3)


def test_paper_parameter_counts_match_docs():
  cfg = config.paper()
  counts = {
      "generator": build_generator(cfg.generator, 128).count_params(),
      "critic": build_critic(cfg.critic, 128).count_params(),
      "restorer": build_restorer(cfg.restorer, 128).count_params(),
  }
  assert counts == PAPER_PARAMS
  doc = ARCHITECTURE_DOC.read_text()
  for name, count in PAPER_PARAMS.items():
    assert re.search(rf"{name}\b.*\b{count:,}\b", doc, re.IGNORECASE), (name, count)


def test_paper_layer_widths():
  cfg = config.paper()
  generator = build_generator(cfg.generator, 128)
  enc = [generator.get_layer(f"enc{i}_conv").filters for i in range(1, 6)]
  assert enc == [64, 128, 256, 512, 512]
  dec = [generator.get_layer(f"dec{j}_deconv").filters for j in range(1, 5)]
  assert dec == [512, 256, 128, 64]
  assert len([l for l in generator.layers if l.name.endswith("_add") and l.name.startswith("res")]) == 7
  critic = build_critic(cfg.critic, 128)
  convs = [l for l in critic.layers if isinstance(l, keras.layers.Conv2D)]
  assert [c.filters for c in convs] == [64] * 2 + [128] * 2 + [256] * 3 + [512] * 6
  assert [c.strides[0] for c in convs] == [1, 2, 1, 2, 1, 1, 2, 1, 1, 2, 1, 1, 2]
  assert not [l for l in critic.layers if isinstance(l, keras.layers.MaxPooling2D)]
  restorer = build_restorer(cfg.restorer, 128)
  convs = [l for l in restorer.layers if isinstance(l, keras.layers.Conv2D)]
  assert len(convs) == 8 and [c.filters for c in convs] == [96] * 7 + [3]
  assert all(c.kernel_size == (3, 3) and c.strides == (1, 1) for c in convs)
  bns = [l for l in restorer.layers if isinstance(l, keras.layers.BatchNormalization)]
  assert len(bns) == 6  # After every conv but the first and the last.


def test_generator_is_fully_convolutional(tiny):
  generator = build_generator(tiny.generator)  # image_size=None.
  assert generator(_images(size=64)[:, :, :32]).shape == (2, 64, 32, 3)
  assert generator(_images(size=96)).shape == (2, 96, 96, 3)


def test_builders_reject_bad_sizes(tiny):
  with pytest.raises(ValueError, match="multiple of 32"):
    build_generator(tiny.generator, 48)
  with pytest.raises(ValueError, match="multiple of 32"):
    build_critic(tiny.critic, 40)
  with pytest.raises(ValueError, match="num_res_blocks"):
    build_generator(config.GeneratorConfig(num_res_blocks=-1), 32)


# --------------------------------------------------------------------------
# Residual identities and the cascade.


def _zero_layer(model, name):
  for variable in model.get_layer(name).weights:
    variable.assign(tf.zeros_like(variable))


@pytest.mark.parametrize("training", [False, True])
def test_restorer_with_zero_last_layer_is_identity(tiny, training):
  restorer = build_restorer(tiny.restorer)
  _zero_layer(restorer, "residual_out")
  images = _images()
  np.testing.assert_array_equal(restorer(images, training=training).numpy(), images.numpy())


@pytest.mark.parametrize("training", [False, True])
def test_generator_with_zero_decoder_is_identity(tiny, training):
  generator = build_generator(tiny.generator)
  _zero_layer(generator, "decoder_out")
  images = _images()
  np.testing.assert_array_equal(generator(images, training=training).numpy(), images.numpy())


def test_networks_are_not_identity_by_default(tiny_nets):
  images = _images()
  for name in ("generator", "restorer"):
    assert np.abs(tiny_nets[name](images).numpy() - images.numpy()).max() > 1e-4, name


def test_cascade_returns_both_images(tiny_nets):
  cascade = build_cascade(tiny_nets["generator"], tiny_nets["restorer"])
  images = _images()
  outputs = cascade(cascade_inputs(images))
  assert set(outputs) == {"inpainted", "restored"}
  inpainted = tiny_nets["generator"](images)
  np.testing.assert_allclose(outputs["inpainted"].numpy(), inpainted.numpy(), atol=1e-6)
  np.testing.assert_allclose(outputs["restored"].numpy(),
                             tiny_nets["restorer"](inpainted).numpy(), atol=1e-6)


def test_self_ensemble_averages_the_symmetries_and_is_equivariant(tiny):
  # The mask-channel generator with the composite: the mask is transformed with the image.
  cfg = config.with_overrides(tiny, {"generator.mask_channel": True, "generator.composite": True})
  keras.utils.set_random_seed(0)
  generator = build_generator(cfg.generator)
  restorer = build_restorer(cfg.restorer)
  images = _images()
  mask = np.zeros((2, 32, 32, 1), np.float32)
  mask[:, 4:20, 10:30] = 1.0  # Not symmetric: each transform moves it.
  inputs = cascade_inputs(images, mask)
  plain = build_cascade(generator, restorer, composite=True)(inputs)
  np.testing.assert_array_equal(
      build_cascade(generator, restorer, composite=True, self_ensemble=1)(inputs)["restored"],
      plain["restored"])
  ensemble = build_cascade(generator, restorer, composite=True, self_ensemble=8)
  out = ensemble(inputs)
  # By hand: G on each transformed image and mask, mapped back, averaged; composited; R alike.
  with_mask = tf.concat([images, mask], axis=-1)
  inpainted = np.mean([augment.dihedral_ops(generator(augment.dihedral_ops(with_mask, k)), k,
                                            inverse=True) for k in range(8)], axis=0)
  inpainted = mask * inpainted + (1 - mask) * images.numpy()
  restored = np.mean([augment.dihedral_ops(restorer(augment.dihedral_ops(inpainted, k)), k,
                                           inverse=True) for k in range(8)], axis=0)
  np.testing.assert_allclose(out["inpainted"], inpainted, atol=1e-5)
  np.testing.assert_allclose(out["restored"], restored, atol=1e-5)
  assert np.abs(out["restored"] - plain["restored"]).max() > 1e-4  # It changes something.
  # Over all eight symmetries the result no longer depends on the image's orientation.
  for k in (1, 2, 5):
    turned = ensemble(cascade_inputs(augment.dihedral_ops(images, k),
                                     augment.dihedral_ops(mask, k)))["restored"]
    np.testing.assert_allclose(turned, augment.dihedral_ops(out["restored"], k), atol=1e-5)
  with pytest.raises(ValueError, match="self_ensemble=3"):
    build_cascade(generator, restorer, self_ensemble=3)


def test_cascade_rejects_mismatched_sizes(tiny):
  with pytest.raises(ValueError, match="same image_size"):
    build_cascade(build_generator(tiny.generator, 32), build_restorer(tiny.restorer, 64))


def test_restorer_loss_reaches_generator_weights(tiny_nets):
  generator = tiny_nets["generator"]
  cascade = build_cascade(generator, tiny_nets["restorer"])
  images, targets = _images(seed=1), _images(seed=2)
  with tf.GradientTape() as tape:
    restored = cascade(cascade_inputs(images), training=True)["restored"]
    loss = tf.reduce_mean(losses.mse_loss(targets, restored))
  gradients = tape.gradient(loss, generator.trainable_variables)
  assert all(g is not None for g in gradients)
  # The first encoder conv is the farthest from the loss.
  first = generator.get_layer("enc1_conv").kernel
  index = [v.path for v in generator.trainable_variables].index(first.path)
  assert float(tf.reduce_max(tf.abs(gradients[index]))) > 0.0


# --------------------------------------------------------------------------
# The critic.


def test_critic_output_is_linear_and_unbounded(tiny):
  critic = build_critic(tiny.critic, 32)
  out = critic.get_layer("critic_out")
  assert out.activation is keras.activations.linear
  assert not [l for l in critic.layers if isinstance(l, keras.layers.BatchNormalization)]
  images = _images()
  for bias in (-5.0, 5.0):  # A sigmoid would keep the scores inside (0, 1).
    out.bias.assign([bias])
    scores = critic(images).numpy()
    assert np.all(np.abs(scores - bias) < 4.0), scores
  assert critic(images).dtype == tf.float32


# --------------------------------------------------------------------------
# Serialisation and mixed precision.


@pytest.mark.parametrize("name", ["generator", "critic", "restorer", "cascade"])
def test_keras_save_load_round_trip(tiny_nets, tmp_path, name):
  if name == "cascade":
    model = build_cascade(tiny_nets["generator"], tiny_nets["restorer"])
  else:
    model = tiny_nets[name]
  path = tmp_path / f"{name}.keras"
  model.save(path)
  loaded = keras.saving.load_model(path)
  images = _images(seed=3)
  if name == "cascade":
    images = cascade_inputs(images)
  expected, actual = model(images, training=False), loaded(images, training=False)
  for a, b in zip(tf.nest.flatten(expected), tf.nest.flatten(actual)):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.fixture
def bfloat16_policy():
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  yield
  keras.mixed_precision.set_global_policy("float32")


def test_outputs_are_float32_under_mixed_precision(tiny, bfloat16_policy):
  images = _images()
  generator = build_generator(tiny.generator, 32)
  restorer = build_restorer(tiny.restorer, 32)
  critic = build_critic(tiny.critic, 32)
  assert generator.get_layer("enc1_conv").compute_dtype == "bfloat16"
  for model in (generator, restorer, critic):
    assert model(images).dtype == tf.float32
  _zero_layer(restorer, "residual_out")  # The identity must survive in full precision.
  np.testing.assert_array_equal(restorer(images).numpy(), images.numpy())


# --------------------------------------------------------------------------
# The perceptual VGG16.


@pytest.fixture(scope="module")
def random_vgg():
  keras.utils.set_random_seed(0)
  return build_vgg_features("none", 32)


def test_vgg_features_shapes_and_frozen(random_vgg):
  features = random_vgg(_images())
  assert [tuple(f.shape) for f in features] == [
      (2, 32, 32, 64), (2, 16, 16, 128), (2, 8, 8, 256), (2, 4, 4, 512)]
  assert all(float(tf.reduce_min(f)) >= 0.0 for f in features)  # Post-ReLU.
  assert random_vgg.trainable_weights == []
  assert len(random_vgg.non_trainable_weights) == 2 * 10  # 10 convs up to block4_conv3.
  names = [l.name for l in random_vgg.layers]
  assert names[-1] == "block4_conv3" and "block5_conv1" not in names


def test_vgg_none_logs_a_warning(caplog):
  with caplog.at_level(logging.WARNING):
    build_vgg_features("none", 32)
  assert "tests only" in caplog.text


def test_vgg_preprocessing_matches_keras():
  images = _images(seed=4).numpy()
  expected = keras.applications.vgg16.preprocess_input((images + 1.0) * 127.5)
  actual = perceptual.VGGPreprocess()(images)
  np.testing.assert_allclose(actual.numpy(), expected, atol=1e-4)


def test_vgg_preprocess_layer_serialises(tmp_path):
  inputs = keras.Input((None, None, 3))
  model = keras.Model(inputs, perceptual.VGGPreprocess(name="pre")(inputs))
  model.save(tmp_path / "pre.keras")
  loaded = keras.saving.load_model(tmp_path / "pre.keras")
  images = _images()
  np.testing.assert_array_equal(loaded(images).numpy(), model(images).numpy())


def test_vgg_imagenet_failure_says_how_to_proceed(monkeypatch):
  def offline(*args, **kwargs):
    raise Exception("URL fetch failure: no network")  # What keras raises offline.

  monkeypatch.setattr(keras.utils, "get_file", offline)
  with pytest.raises(RuntimeError) as error:
    build_vgg_features("imagenet", 32)
  message = str(error.value)
  assert f"--vgg_weights=/path/to/{perceptual.VGG16_NOTOP_FILE}" in message
  assert perceptual.VGG16_NOTOP_URL in message
  assert "--lambda_per=0" in message


def test_vgg_missing_local_file_names_the_path(tmp_path):
  path = str(tmp_path / "missing_vgg.h5")
  with pytest.raises(ValueError, match=re.escape(path)):
    build_vgg_features(path, 32)


def test_vgg_loads_a_local_h5_file(tmp_path):
  keras.utils.set_random_seed(1)
  source = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
  path = str(tmp_path / perceptual.VGG16_NOTOP_FILE)
  source.save(path)  # Legacy HDF5, the format of Keras' download.
  features = build_vgg_features(path, 32)
  for name in perceptual.FEATURE_LAYERS:
    np.testing.assert_array_equal(features.get_layer(name).kernel.numpy(),
                                  source.get_layer(name).kernel.numpy())


def test_clipped_critic_keeps_a_usable_signal_only_with_normalization():
  """Weight clipping starves the plain 13-conv critic; group norm keeps it alive."""
  images = tf.random.stateless_uniform([4, 32, 32, 3], [0, 1], minval=-1.0, maxval=1.0)
  scores = {}
  for normalization in ("group", "none"):
    cfg = config.with_overrides(config.tiny(), {"critic.normalization": normalization})
    critic = build_critic(cfg.critic, 32)
    losses.clip_weights(critic, 0.01)
    scores[normalization] = float(tf.reduce_max(tf.abs(critic(images))))
  assert scores["none"] < 1e-12
  assert scores["group"] > 1e-7


# --------------------------------------------------------------------------
# Beyond the paper: push-pull prefill, dilated blocks, the U-Net restorer.


def _centre_mask(batch, height, width, top, left, side):
  mask = np.zeros((batch, height, width, 1), np.float32)
  mask[:, top:top + side, left:left + side] = 1.0
  return mask


@pytest.mark.parametrize("height,width", [(128, 128), (100, 90), (33, 17)])
def test_push_pull_fill_keeps_known_pixels_and_fills_a_smooth_image_smoothly(height, width):
  rows = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
  cols = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
  image = np.stack([0.5 * rows + 0.3 * cols, 0.2 * rows - 0.4 * cols, 0.1 + 0 * rows * cols], -1)
  images = np.repeat(image[None], 2, axis=0).astype(np.float32)
  side = min(height, width) // 2
  mask = _centre_mask(2, height, width, (height - side) // 2, (width - side) // 2, side)
  damaged = np.where(mask > 0.5, np.float32(0.9), images)
  filled = np.asarray(layers.push_pull_fill(damaged, mask))
  hole = mask[..., 0] > 0.5
  np.testing.assert_array_equal(filled[~hole], images[~hole])
  # A linear ramp is filled to within a few percent of its range; the
  # constant fill misses it by ten times more.
  fill_error = np.abs(filled - images)[hole].mean()
  assert fill_error < 0.05
  assert np.abs(damaged - images)[hole].mean() > 5 * fill_error


def test_push_pull_fill_of_an_image_without_known_pixels_is_mid_grey():
  images = np.full((1, 16, 16, 3), 0.7, np.float32)
  filled = np.asarray(layers.push_pull_fill(images, np.ones((1, 16, 16, 1), np.float32)))
  np.testing.assert_allclose(filled, 0.0, atol=1e-6)


def test_prefill_generator_fills_before_the_encoder_and_needs_the_mask_channel(tiny):
  with pytest.raises(ValueError, match="prefill needs generator.mask_channel"):
    config.with_overrides(tiny, {"generator.prefill": True})
  cfg = config.with_overrides(tiny, {"generator.prefill": True, "generator.mask_channel": True})
  generator = build_generator(cfg.generator, 32)
  assert generator.get_layer("prefill").count_params() == 0
  _zero_layer(generator, "decoder_out")
  images = _images().numpy()
  mask = _centre_mask(2, 32, 32, 8, 8, 16)
  out = generator(np.concatenate([images, mask], -1), training=False).numpy()
  # With a zero last layer the generator is the push-pull fill itself.
  np.testing.assert_allclose(out, np.asarray(layers.push_pull_fill(images, mask)), atol=1e-6)


def test_dilated_residual_blocks_cycle_their_rates(tiny):
  cfg = config.with_overrides(tiny, {"generator.num_res_blocks": 3, "generator.dilations": "1,2"})
  generator = build_generator(cfg.generator, 32)
  rates = [generator.get_layer(f"res{j}_conv1").dilation_rate for j in (1, 2, 3)]
  assert rates == [(1, 1), (2, 2), (1, 1)]
  with pytest.raises(ValueError, match="generator.dilations"):
    config.with_overrides(tiny, {"generator.dilations": "0"})


def _grow(target, source):
  """weights_io.assign_grown from a built network (as train.py's warm start calls it)."""
  return weights_io.assign_grown(target, {v.path: v.numpy() for v in source.weights})


def test_decoder_res_blocks_start_as_the_identity_so_a_generator_can_grow(tiny):
  """A generator grown by decoder blocks computes what it computed before, until trained."""
  base = config.with_overrides(tiny, {"generator.mask_channel": True, "generator.prefill": True,
                                      "generator.num_levels": 3})
  keras.utils.set_random_seed(0)
  small = build_generator(base.generator, 32)
  grown = build_generator(config.with_overrides(base, {"generator.decoder_res_blocks": 2}
                                                ).generator, 32)
  # Two blocks after each decoder level but the last, at that level's width.
  assert [grown.get_layer(f"dec{j}_res{k}_conv1").filters for j in (1, 2) for k in (1, 2)] == [
      8, 8, 4, 4]
  assert _grow(grown, small) == sorted(
      f"dec{j}_res{k}_{part}" for j in (1, 2) for k in (1, 2)
      for part in ("bn1", "bn2", "conv1", "conv2"))
  x = np.concatenate([_images().numpy(), _centre_mask(2, 32, 32, 8, 8, 16)], -1)
  for training in (False, True):
    np.testing.assert_array_equal(grown(x, training=training).numpy(),
                                  small(x, training=training).numpy())
  # Growing only: the larger network does not fit into the smaller, nor a shallower one.
  assert _grow(small, grown) is None
  assert _grow(build_generator(config.with_overrides(
      base, {"generator.num_levels": 2}).generator, 32), small) is None
  # One training step moves the new blocks away from the identity.
  optimizer = keras.optimizers.Adam(1e-2)
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(tf.abs(grown(x, training=True) - x[..., :3]))
  optimizer.apply_gradients(zip(tape.gradient(loss, grown.trainable_variables),
                                grown.trainable_variables))
  assert float(np.abs(grown.get_layer("dec1_res1_bn2").gamma.numpy()).max()) > 0
  with pytest.raises(ValueError, match="decoder_res_blocks"):
    config.with_overrides(tiny, {"generator.decoder_res_blocks": -1})


def test_a_generator_grows_to_a_wider_bottleneck_with_its_output_unchanged(tiny):
  """generator.bottleneck_filters: the deepest level and the residual blocks widen; grown
  from a narrower generator's weights it computes what that one did, until trained."""
  base = config.with_overrides(tiny, {"generator.mask_channel": True, "generator.prefill": True,
                                      "generator.num_levels": 3})
  keras.utils.set_random_seed(0)
  small = build_generator(base.generator, 32)
  wide_cfg = config.with_overrides(base, {"generator.bottleneck_filters": 24}).generator
  wide = build_generator(wide_cfg, 32)
  assert small.get_layer("enc3_conv").filters == 16  # tiny: min(4 * 2**2, 16).
  assert [wide.get_layer(n).filters for n in ("enc2_conv", "enc3_conv", "res1_conv1",
                                                "res2_conv2", "dec1_deconv")] == [8, 24, 24, 24, 8]
  assert wide.count_params() > small.count_params()
  widened = _grow(wide, small)
  assert "enc3_conv" in widened and "res1_conv1" in widened and "dec1_deconv" in widened
  assert "enc1_conv" not in widened and "decoder_out" not in widened
  # The new input channels of the first decoder layer (a transposed conv, [h, w, out, in])
  # and of each residual conv start with no weight into the old outputs.
  assert not np.any(wide.get_layer("dec1_deconv").kernel.numpy()[:, :, :, 16:])
  assert not np.any(wide.get_layer("res1_conv1").kernel.numpy()[:, :, 16:, :16])
  assert np.any(wide.get_layer("res1_conv1").kernel.numpy()[:, :, :, 16:])
  x = np.concatenate([_images().numpy(), _centre_mask(2, 32, 32, 8, 8, 16)], -1)
  for training in (False, True):
    np.testing.assert_allclose(wide(x, training=training).numpy(),
                               small(x, training=training).numpy(), rtol=0, atol=1e-6)
  # Only growing: the wide one does not fit into the narrow one.
  assert _grow(small, wide) is None
  # One step moves the cut weights: the new channels start to feed the old ones.
  optimizer = keras.optimizers.Adam(1e-2)
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(tf.abs(wide(x, training=True) - x[..., :3] * 0.5))
  optimizer.apply_gradients(zip(tape.gradient(loss, wide.trainable_variables),
                                wide.trainable_variables))
  assert np.any(wide.get_layer("dec1_deconv").kernel.numpy()[:, :, :, 16:])
  with pytest.raises(ValueError, match="bottleneck_filters"):
    config.with_overrides(tiny, {"generator.bottleneck_filters": -1})


def test_unet_restorer_size_identity_and_parameters(tiny):
  cfg = config.photo()
  restorer = build_restorer(cfg.restorer, 128)
  assert restorer.count_params() == 1_002_563  # docs/architecture.md.
  assert cfg.size_multiple() == 8
  small = build_restorer(config.with_overrides(tiny, {"restorer.arch": "unet"}).restorer)
  _zero_layer(small, "residual_out")
  images = _images(size=24)
  np.testing.assert_array_equal(small(images, training=False).numpy(), images.numpy())
  with pytest.raises(ValueError, match="multiple of 4"):
    build_restorer(cfg.restorer, 30)
  with pytest.raises(ValueError, match="restorer.arch"):
    config.with_overrides(tiny, {"restorer.arch": "resnet"})


def test_photo_preset_counts():
  cfg = config.photo()  # A 256-channel bottleneck (docs/architecture.md, MODEL_CARD.md).
  assert build_generator(cfg.generator, 128).count_params() == 7_685_379
  narrow = config.with_overrides(cfg, {"generator.bottleneck_filters": 0})
  assert build_generator(narrow.generator, 128).count_params() == 2_108_163


def test_unet_restorer_learns_to_denoise_with_l1_and_adam(tiny):
  """A few dozen L1 + Adam steps take the U-Net beyond the identity (a ReLU before
  `residual_out` once died within 200 steps and left it the identity)."""
  keras.utils.set_random_seed(0)
  cfg = config.with_overrides(tiny, {"restorer.arch": "unet", "restorer.unet_filters": "8,16"})
  restorer = build_restorer(cfg.restorer, 32)
  optimizer = keras.optimizers.Adam(5e-3)
  rows = np.linspace(-0.8, 0.8, 32, dtype=np.float32)
  clean = tf.constant(np.broadcast_to((rows[:, None] * rows[None, :])[None, ..., None],
                                      (8, 32, 32, 3)).copy())
  noisy = clean + 0.2 * tf.random.stateless_normal(clean.shape, [0, 1])

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(losses.l1_loss(clean, restorer(noisy, training=True)))
    grads = tape.gradient(loss, restorer.trainable_variables)
    optimizer.apply_gradients(zip(grads, restorer.trainable_variables))
    return loss

  for _ in range(60):
    step()
  identity = float(tf.reduce_mean(tf.abs(noisy - clean)))
  restored = float(tf.reduce_mean(tf.abs(restorer(noisy, training=False) - clean)))
  assert restored < 0.7 * identity


def _batch_norm_pair(policy):
  """Keras' batch norm and the project's, built with equal variables under `policy`."""
  with runtime.precision_scope(policy):
    plain = keras.layers.BatchNormalization(synchronized=True)
    fused = layers.FusedBatchNorm(synchronized=True)
  shape = (4, 8, 8, 6)
  plain.build(shape)
  fused.build(shape)
  rng = np.random.default_rng(0)
  for a, b in zip(plain.weights, fused.weights):  # gamma, beta, moving mean, moving variance
    value = rng.uniform(0.5, 1.5, a.shape).astype("float32")
    a.assign(value)
    b.assign(value)
  return plain, fused


def _train_call(layer, x, upstream):
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = layer(x, training=True)
    loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
  grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
  return [tf.cast(t, tf.float32).numpy() for t in [y, *grads]] + [
      layer.moving_mean.numpy(), layer.moving_variance.numpy()]


@pytest.mark.parametrize("policy,tol", [("float32", 1e-4), ("mixed_bfloat16", 2e-2)])
def test_fused_batch_norm_trains_as_keras_batch_norm(policy, tol):
  """Outputs, the three gradients and the moving statistics, within the precision's rounding."""
  plain, fused = _batch_norm_pair(policy)
  x = tf.random.stateless_normal((4, 8, 8, 6), [1, 2]) * 3.0 + 1.0
  upstream = tf.random.stateless_normal((4, 8, 8, 6), [3, 4])
  for name, a, b in zip(["y", "dx", "dgamma", "dbeta", "moving_mean", "moving_variance"],
                        _train_call(plain, x, upstream), _train_call(fused, x, upstream)):
    np.testing.assert_allclose(b, a, rtol=tol, atol=tol * max(1.0, np.abs(a).max()), err_msg=name)
  # Inference is Keras' own code: the same moving statistics give the same output.
  np.testing.assert_allclose(tf.cast(fused(x, training=False), tf.float32).numpy(),
                             tf.cast(plain(x, training=False), tf.float32).numpy(), atol=tol)


def test_fused_batch_norm_uses_the_fused_kernel_only_where_it_computes_the_same(monkeypatch):
  """One replica, training: FusedBatchNormV3; inference, or several replicas: Keras' operations.

  (That the fused one-replica update equals Keras' synchronized two-replica
  one is tests/test_training.py's mirrored test.)
  """
  _, fused = _batch_norm_pair("float32")
  spec = tf.TensorSpec((4, 8, 8, 6), tf.float32)

  def op_types(training):
    graph = tf.function(lambda x: fused(x, training=training)).get_concrete_function(spec).graph
    return {op.type for op in graph.get_operations()}

  assert "FusedBatchNormV3" in op_types(True)
  assert "FusedBatchNormV3" not in op_types(False)

  class TwoReplicas:
    num_replicas_in_sync = 2

  monkeypatch.setattr(tf.distribute, "get_strategy", TwoReplicas)
  assert "FusedBatchNormV3" not in op_types(True)


def test_every_network_batch_norm_is_the_fused_one(tiny_nets):
  for name, net in tiny_nets.items():
    bns = [l for l in net.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert all(isinstance(l, layers.FusedBatchNorm) for l in bns), name
