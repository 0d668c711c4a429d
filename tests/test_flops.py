"""Tests of cascade_tf.flops: hand counts, TF's own profiler, closed forms, step rules."""

import keras
import pytest
import tensorflow as tf

from cascade_tf import config
from cascade_tf import flops
from cascade_tf.models import build_cascade
from cascade_tf.models import build_critic
from cascade_tf.models import build_generator
from cascade_tf.models import build_restorer
from cascade_tf.models import build_vgg_features


def _single(layer, input_shape):
  inputs = keras.Input(shape=input_shape)
  return keras.Model(inputs, layer(inputs))


@pytest.mark.parametrize("layer, input_shape, expected", [
    # 2 x output pixels x output channels x kernel area x input channels.
    (keras.layers.Conv2D(16, 3, padding="same"), (32, 32, 8), 2 * 32 * 32 * 16 * 9 * 8),
    (keras.layers.Conv2D(16, 3, strides=2, padding="valid"), (33, 33, 8),
     2 * 16 * 16 * 16 * 9 * 8),
    (keras.layers.Conv2D(16, 3, padding="same", dilation_rate=2), (32, 32, 8),
     2 * 32 * 32 * 16 * 9 * 8),
    (keras.layers.Conv2D(16, 3, padding="same", groups=4), (32, 32, 8),
     2 * 32 * 32 * 16 * 9 * 2),
    (keras.layers.Conv2D(16, (1, 5), padding="same", use_bias=True), (8, 8, 4),
     2 * 8 * 8 * 16 * 5 * 4),
    # Transposed: every input value goes through the whole kernel (4x4 x 6 out).
    (keras.layers.Conv2DTranspose(6, 4, strides=2, padding="same"), (8, 8, 4),
     2 * 8 * 8 * 4 * 16 * 6),
    (keras.layers.Dense(7), (10,), 2 * 10 * 7),
    (keras.layers.Dense(7), (5, 10), 2 * 5 * 10 * 7),  # Applied at each of 5 positions.
    (keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), (16, 16, 4),
     2 * 16 * 16 * 8 * 9),
    (keras.layers.SeparableConv2D(12, 3, depth_multiplier=2, padding="same"), (16, 16, 4),
     2 * 16 * 16 * 8 * 9 + 2 * 16 * 16 * 12 * 8),
    (keras.layers.BatchNormalization(), (8, 8, 4), 0),
    (keras.layers.ReLU(), (8, 8, 4), 0),
])
def test_single_layer_matches_hand_count(layer, input_shape, expected):
  assert flops.forward_flops(_single(layer, input_shape)) == expected


def _profiler_flops(model, size):
  """TF's own count of the Conv2D, Conv2DBackpropInput and MatMul ops of one image."""
  @tf.function
  def forward(images):
    return model(images, training=False)

  graph = forward.get_concrete_function(tf.TensorSpec([1, size, size, 3])).graph
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options["output"] = "none"
  options["account_type_regexes"] = ["Conv2D", "Conv2DBackpropInput", "MatMul"]
  return tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops


@pytest.mark.parametrize("network", ["generator", "critic", "restorer", "vgg"])
def test_networks_match_tf_profiler(network):
  cfg = config.tiny()
  size = cfg.data.image_size
  model = {"generator": lambda: build_generator(cfg.generator, size),
           "critic": lambda: build_critic(cfg.critic, size),
           "restorer": lambda: build_restorer(cfg.restorer, size),
           "vgg": lambda: build_vgg_features("none", size)}[network]()
  count = flops.forward_flops(model)
  assert count > 0
  assert count == _profiler_flops(model, size)


def _restorer_closed_form(cfg):
  s, f, k2 = cfg.data.image_size, cfg.restorer.filters, cfg.restorer.kernel_size ** 2
  hidden = cfg.restorer.num_encode + cfg.restorer.num_decode - 2
  return 2 * s * s * k2 * (3 * f + hidden * f * f + f * 3)


def _critic_closed_form(cfg):
  c = cfg.critic
  size, channels, macs = cfg.data.image_size, 3, 0
  for g, num_convs in enumerate(c.convs_per_group):
    width = min(c.base_filters * 2**g, c.max_filters)
    for i in range(num_convs):
      if i == num_convs - 1:
        size //= 2
      macs += size * size * width * 9 * channels
      channels = width
  macs += size * size * channels * c.dense_units + c.dense_units
  return 2 * macs


def _generator_closed_form(cfg):
  g = cfg.generator
  widths = [min(g.base_filters * 2**i, g.max_filters) for i in range(g.num_levels)]
  k2, r2 = g.down_kernel_size ** 2, g.res_kernel_size ** 2
  size, channels, macs = cfg.data.image_size, 4 if g.mask_channel else 3, 0
  for width in widths:  # Encoder: stride-2 convs.
    size //= 2
    macs += size * size * width * k2 * channels
    channels = width
  macs += g.num_res_blocks * 2 * size * size * channels * r2 * channels
  for width in list(reversed(widths[:-1])) + [3]:  # Decoder: input pixels x kernel x out.
    macs += size * size * channels * k2 * width
    size, channels = size * 2, width
  return 2 * macs


@pytest.mark.parametrize("preset", ["tiny", "cpu", "paper", "blind"])
def test_preset_networks_match_closed_forms(preset):
  cfg = config.get_preset(preset)
  counts = flops.network_forward_flops(cfg)
  assert counts["restorer"] == _restorer_closed_form(cfg)
  assert counts["critic"] == _critic_closed_form(cfg)
  assert counts["generator"] == _generator_closed_form(cfg)


def test_vgg_features_count_only_blocks_one_to_four():
  # VGG16 up to block4_conv3 at 128 px: ~4.56 GMAC (config.cpu()'s comment says ~4.5).
  macs = 0
  size, channels = 128, 3
  for block, (width, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3)]):
    if block:
      size //= 2
    for _ in range(convs):
      macs += size * size * width * 9 * channels
      channels = width
  model = build_vgg_features("none", 128)
  # Its layers were also called in Keras' own VGG16 model; only this graph counts.
  assert flops.forward_flops(model) == 2 * macs
  assert 4.5e9 < macs < 4.6e9


def test_nested_and_shared_layers_count_per_call():
  cfg = config.tiny()
  generator = build_generator(cfg.generator, 32)
  restorer = build_restorer(cfg.restorer, 32)
  cascade = build_cascade(generator, restorer)
  assert flops.forward_flops(cascade) == (flops.forward_flops(generator) +
                                          flops.forward_flops(restorer))
  shared = keras.layers.Dense(4)
  inputs = keras.Input(shape=(4,))
  twice = keras.Model(inputs, shared(shared(inputs)))
  assert flops.forward_flops(twice) == 2 * (2 * 4 * 4)
  sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)])
  assert flops.forward_flops(sequential) == 2 * 3 * 5


def test_unknown_size_and_unknown_layers_raise():
  cfg = config.tiny()
  with pytest.raises(ValueError, match="unknown size"):
    flops.forward_flops(build_restorer(cfg.restorer, None))
  einsum = _single(keras.layers.EinsumDense("ab,bc->ac", output_shape=4), (3,))
  with pytest.raises(ValueError, match="does not know how to count"):
    flops.forward_flops(einsum)
  with pytest.raises(ValueError, match="functional"):
    flops.forward_flops(keras.layers.Dense(3))


def test_step_flops_apply_the_backprop_rule():
  cfg = config.with_overrides(config.tiny(), {"train.n_critic": 5})
  forward = {"generator": 1, "critic": 10, "restorer": 100, "vgg": 1000}
  expected = {
      "pretrain": 3,  # G trained.
      "dd": 300,  # R trained.
      "critic": 1 + 2 * 30,  # G forward; C trained on real and fake.
      "gan_generator": 3 + 20 + 1000 + 2000,  # G trained, C and VGG(output) backprop, VGG(target).
      "joint": 3 + 300 + 20 + 3000 + 2000,  # + VGG(G(x)) backprop (lambda_intermediate = 1).
      "infer": 101,
  }
  expected["gan_full_step"] = 5 * expected["critic"] + expected["gan_generator"]
  expected["joint_full_step"] = 5 * expected["critic"] + expected["joint"]
  assert set(expected) == set(flops.STEP_STAGES)
  for stage, value in expected.items():
    assert flops.step_flops(cfg, stage, forward) == value, stage
  with pytest.raises(ValueError, match="expected one of"):
    flops.step_flops(cfg, "gan", forward)


def test_perceptual_off_costs_no_vgg():
  cfg = config.with_overrides(config.tiny(), {"loss.lambda_per": 0.0})
  counts = flops.network_forward_flops(cfg)
  assert counts["vgg"] == 0
  assert flops.step_flops(cfg, "joint", counts) == (
      3 * counts["generator"] + 3 * counts["restorer"] + 2 * counts["critic"])


def test_paper_joint_step_size():
  # The figure the benchmark's run-time estimates rest on (docs: ~100 GFLOP per image).
  cfg = config.paper()
  assert 113e9 < flops.step_flops(cfg, "joint") < 120e9
  # Without eq. (7) on G(x) (lambda_intermediate = 0) the step is one VGG16 pass cheaper.
  old = config.with_overrides(cfg, {"loss.lambda_intermediate": 0.0})
  assert 95e9 < flops.step_flops(old, "joint") < 100e9
