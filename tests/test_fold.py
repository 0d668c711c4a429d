"""Tests of cascade_tf.models.fold: folding inference batch norm into convolutions."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cascade_tf import config
from cascade_tf.models import build_cascade
from cascade_tf.models.cascade import cascade_inputs
from cascade_tf.models import build_generator
from cascade_tf.models import build_restorer
from cascade_tf.models import fold


def _randomise_batch_norm(model, seed):
  """Gives every batch norm non-trivial statistics, scale and offset."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      channels = layer.gamma.shape[0]
      layer.gamma.assign(rng.uniform(0.5, 1.5, channels).astype("float32"))
      layer.beta.assign(rng.normal(0, 0.2, channels).astype("float32"))
      layer.moving_mean.assign(rng.normal(0, 0.3, channels).astype("float32"))
      layer.moving_variance.assign(rng.uniform(0.2, 2.0, channels).astype("float32"))


def _count_bn(model):
  return sum(isinstance(l, keras.layers.BatchNormalization) for l in model.layers)


@pytest.mark.parametrize("network", ["generator", "generator_decoder_blocks", "restorer"])
def test_folded_network_matches_inference_mode_and_drops_every_batch_norm(network):
  cfg = config.with_overrides(config.tiny(), {
      "generator.decoder_res_blocks": int(network == "generator_decoder_blocks")})
  keras.utils.set_random_seed(1)
  model = (build_generator(cfg.generator, None) if network.startswith("generator")
           else build_restorer(cfg.restorer, None))
  _randomise_batch_norm(model, seed=2)
  assert _count_bn(model) > 0
  pairs = fold.foldable_pairs(model)
  assert len(pairs) == _count_bn(model)  # Every BN of ours follows a conv.
  if network.startswith("generator"):  # Transposed convolutions (kernel [h, w, out, in]) are folded too.
    assert any(isinstance(model.get_layer(n), keras.layers.Conv2DTranspose) for n in pairs)

  folded = fold.fold_batch_norm(model)
  assert _count_bn(folded) == 0
  assert [l.name for l in folded.layers] == [l.name for l in model.layers]
  x = tf.random.stateless_uniform([2, 64, 96, 3], [3, 4], -1.0, 1.0)
  expected = model(x, training=False).numpy()
  got = folded(x, training=False).numpy()
  np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-4)
  # In training mode the original would normalise with batch statistics: not
  # what the folded copy computes, which is why training never uses it.
  assert not np.allclose(model(x, training=True).numpy(), got, atol=1e-3)


def test_fold_copies_weights_and_keeps_the_original_untouched():
  cfg = config.tiny()
  keras.utils.set_random_seed(5)
  restorer = build_restorer(cfg.restorer, None)
  _randomise_batch_norm(restorer, seed=6)
  before = [w.copy() for w in restorer.get_weights()]
  folded = fold.fold_batch_norm(restorer)
  for a, b in zip(before, restorer.get_weights()):
    np.testing.assert_array_equal(a, b)
  x = tf.random.stateless_uniform([1, 32, 32, 3], [7, 8], -1.0, 1.0)
  out = folded(x).numpy()
  for w in restorer.weights:  # Later changes to the original do not reach the copy.
    w.assign(w * 0.0)
  np.testing.assert_array_equal(folded(x).numpy(), out)


def test_folded_cascade_matches_the_cascade():
  cfg = config.tiny()
  keras.utils.set_random_seed(9)
  generator, restorer = build_generator(cfg.generator, None), build_restorer(cfg.restorer, None)
  _randomise_batch_norm(generator, 10)
  _randomise_batch_norm(restorer, 11)
  x = tf.random.stateless_uniform([2, 32, 32, 3], [12, 13], -1.0, 1.0)
  expected = build_cascade(generator, restorer)(cascade_inputs(x), training=False)
  got = build_cascade(fold.fold_batch_norm(generator),
                      fold.fold_batch_norm(restorer))(cascade_inputs(x))
  for key in ("inpainted", "restored"):
    np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), atol=2e-5, rtol=1e-4)


def test_batch_norm_not_after_a_convolution_is_kept():
  inputs = keras.Input((8, 8, 4))
  x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", use_bias=False)(inputs)
  x = keras.layers.BatchNormalization(name="after_relu_conv")(x)  # Conv has an activation.
  y = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="shared_out")(x)
  a = keras.layers.BatchNormalization(name="bn_a")(y)
  b = keras.layers.Add()([a, y])  # y is read twice: not foldable.
  model = keras.Model(inputs, b)
  _randomise_batch_norm(model, 14)
  assert fold.foldable_pairs(model) == {}
  folded = fold.fold_batch_norm(model)
  assert _count_bn(folded) == 2
  x = tf.random.stateless_uniform([1, 8, 8, 4], [1, 2])
  np.testing.assert_allclose(folded(x).numpy(), model(x, training=False).numpy(), atol=1e-6)


def test_a_batch_norm_left_unfolded_keeps_float32_statistics_under_a_mixed_policy():
  from cascade_tf import runtime  # pylint: disable=import-outside-toplevel
  with runtime.precision_scope("mixed_bfloat16"):
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(x))
    _randomise_batch_norm(model, 15)
    folded = fold.fold_batch_norm(model)
  assert {w.dtype for w in folded.get_layer("conv").weights} == {"bfloat16"}
  assert {w.dtype for w in folded.get_layer("bn").weights} == {"float32"}
  assert folded.get_layer("bn").dtype_policy.name == "mixed_bfloat16"
  x = tf.random.stateless_uniform([2, 8, 8, 4], [1, 3])
  np.testing.assert_array_equal(folded(x, training=False).numpy(),
                                model(x, training=False).numpy())


def _cast_ops(model, x) -> int:
  graph = tf.function(lambda t: model(t, training=False)).get_concrete_function(x).graph
  return sum(op.type == "Cast" for op in graph.get_operations())


@pytest.mark.parametrize("preset", ["tiny", "photo"])
def test_folded_copy_stores_a_mixed_policys_weights_in_its_compute_dtype(preset):
  # Inference under mixed_bfloat16 casts every float32 kernel to bfloat16 at
  # every call; the folded copy holds them in bfloat16 already, and computes
  # exactly what the per-call casts computed.
  from cascade_tf import runtime  # pylint: disable=import-outside-toplevel
  cfg = config.get_preset(preset)
  keras.utils.set_random_seed(7)
  with runtime.precision_scope("mixed_bfloat16"):
    for model in (build_generator(cfg.generator, None), build_restorer(cfg.restorer, None)):
      _randomise_batch_norm(model, seed=8)
      kept = fold.fold_batch_norm(model, weights_in_compute_dtype=False)
      folded = fold.fold_batch_norm(model)
      assert {w.dtype for w in kept.weights} == {"float32"}
      for layer in folded.layers:
        if not layer.weights:
          continue
        policy = model.get_layer(layer.name).dtype_policy
        want = "bfloat16" if policy.name == "mixed_bfloat16" else policy.variable_dtype
        assert {w.dtype for w in layer.weights} == {want}, layer.name
        assert layer.compute_dtype == policy.compute_dtype, layer.name
      assert any(w.dtype == "bfloat16" for w in folded.weights)
      inputs = [tf.random.stateless_uniform([2, 64, 64, int(i.shape[-1])], [9, k], -1.0, 1.0)
                for k, i in enumerate(model.inputs)]
      if len(inputs) == 2:  # The photo generator's second input: the hole mask.
        inputs[1] = tf.cast(inputs[1] > 0.5, tf.float32)
      x = inputs if len(inputs) > 1 else inputs[0]
      np.testing.assert_array_equal(folded(x, training=False).numpy(),
                                    kept(x, training=False).numpy())
      assert _cast_ops(folded, x) < _cast_ops(kept, x)


def test_freeze_keeps_the_weights_of_the_moment_and_the_output_structure():
  """inference.freeze: the folded restorer as a frozen graph computes what it computed, for any
  batch and size, and its weights are constants (a later change to the variables is not seen)."""
  from cascade_tf import inference  # pylint: disable=g-import-not-at-top
  cfg = config.get_preset("tiny")
  restorer = fold.fold_batch_norm(build_restorer(cfg.restorer, None))
  frozen = inference.freeze(lambda x: {"out": restorer(x, training=False)},
                            tf.TensorSpec([None, None, None, 3], tf.float32))
  rng = np.random.default_rng(0)
  inputs = [rng.uniform(-1, 1, shape).astype("float32") for shape in ((1, 32, 64, 3),
                                                                        (3, 32, 32, 3))]
  expected = [restorer(x, training=False).numpy() for x in inputs]
  for x, want in zip(inputs, expected):
    got = frozen(tf.constant(x))
    assert set(got) == {"out"}
    np.testing.assert_allclose(got["out"].numpy(), want, atol=1e-5)
  for w in restorer.weights:
    w.assign(tf.zeros_like(w))
  assert np.abs(restorer(inputs[0], training=False).numpy() - expected[0]).max() > 1e-3
  np.testing.assert_allclose(frozen(tf.constant(inputs[0]))["out"].numpy(), expected[0],
                             atol=1e-5)
