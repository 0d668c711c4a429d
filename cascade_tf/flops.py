"""Analytic FLOP counts of the networks and of each training step, per image.

`forward_flops(model)` walks a built Keras functional model and counts the
multiply-adds of its convolutions and dense layers, 2 FLOPs each, for one
image. Only those layers are counted: batch/group norm, activations, adds,
resizes and losses are elementwise and are a few percent at most of these
networks' cost; bias additions are not counted either. This is the same
convention as `tf.compat.v1.profiler`'s float_ops for Conv2D,
Conv2DBackpropInput (transposed convolution) and MatMul, which the tests
check it against.

Per layer, with shapes per image:

* convolution (Conv1D/2D/3D, any stride, padding, dilation, groups):
  output elements x kernel_h x kernel_w x input channels / groups;
* transposed convolution: input elements x kernel_h x kernel_w x output
  channels (every input value is scattered through the whole kernel);
* depthwise convolution: output elements x kernel_h x kernel_w;
* separable convolution: its depthwise part plus a 1x1 convolution;
* dense: output elements x input units (a dense layer on a rank > 2 input
  is applied at every position).

A nested functional model (the cascade holds the generator and the
restorer) is counted through its own layers; a layer or model that appears
several times in the graph is counted once per call.

`step_flops(cfg, stage)` turns the forward counts into the cost of one
training step per image with the usual rule for back-propagation (the
backward pass through a layer costs about twice its forward pass, once for
the gradient with respect to its input and once for its weights):

* a network that is trained in the step costs 3 x forward;
* a network that is only back-propagated through, not trained (the critic
  scoring the generator's output in the generator step, VGG16 on the
  output), costs 2 x forward;
* a network that is only run forward (VGG16 on the target, whose features
  are under stop_gradient; the generator in a critic step) costs 1 x.

This slightly overcounts (the first layer of a trained network needs no
input gradient) and ignores elementwise work; it is the standard estimate
used for achieved-GFLOP/s figures. The steps are those of
`training/steps.py`; see `STEP_STAGES` for what each name counts.
"""

from __future__ import annotations

import math

import keras

from cascade_tf import config as config_lib
from cascade_tf.models import critic as critic_lib
from cascade_tf.models import generator as generator_lib
from cascade_tf.models import perceptual
from cascade_tf.models import restorer as restorer_lib

NETWORKS = ("generator", "critic", "restorer", "vgg")

# Step name -> what one image of the step's batch costs (G, C, R, V: forward
# FLOPs of generator, critic, restorer and VGG16 features).
STEP_STAGES = {
    "pretrain": "generator update on MSE: 3 G",
    "dd": "restorer update on MSE: 3 R",
    "critic": "one critic update: G forward (1 G), critic trained on the real and the fake "
              "image (2 x 3 C)",
    "gan_generator": "generator update of stage gan: 3 G + critic back-propagated through (2 C) "
                     "+ VGG on target (1 V) and on output (2 V)",
    "gan_full_step": "one step of stage gan as train.py runs it: n_critic critic updates + one "
                     "generator update, per generator image",
    "joint": "joint update of generator and restorer: 3 G + 3 R + 2 C + 1 V + 2 V",
    "joint_full_step": "one step of stage joint: n_critic critic updates + one joint update, "
                       "per joint image",
    "infer": "cascade inference: G + R",
}


def _per_image(shape, what: str, layer_name: str) -> int:
  """Number of elements of one image's tensor; ValueError if a size is unknown."""
  dims = tuple(shape)[1:]
  if any(d is None for d in dims):
    raise ValueError(
        f"forward_flops: the {what} of layer {layer_name!r} has shape {tuple(shape)} with an "
        "unknown size; build the model for a fixed image size (e.g. "
        "build_generator(cfg, image_size=128)).")
  return math.prod(dims)


def layer_flops(layer, input_shape, output_shape) -> int:
  """FLOPs (2 per multiply-add) of one call of `layer` on one image.

  Args:
    layer: a Keras layer; convolutions, transposed, depthwise and separable
      convolutions and dense layers are counted, layers without weights
      of that kind (norms, activations, merges, reshapes) count 0.
    input_shape, output_shape: the call's shapes, batch first.

  Raises:
    ValueError: for a layer with a kernel of a kind this module does not
      know how to count (rather than silently counting it as 0), or for
      unknown sizes in the shapes.
  """
  if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
    kernel = tuple(layer.kernel.shape)  # [k..., in, multiplier]
    return 2 * _per_image(output_shape, "output", layer.name) * math.prod(kernel[:-2])
  if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
    depthwise = tuple(layer.depthwise_kernel.shape)  # [k..., in, multiplier]
    pointwise = tuple(layer.pointwise_kernel.shape)  # [1..., in * multiplier, out]
    outputs = _per_image(output_shape, "output", layer.name)
    positions = outputs // pointwise[-1]
    return 2 * (positions * math.prod(depthwise) + outputs * pointwise[-2])
  if isinstance(layer, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
                        keras.layers.Conv3DTranspose)):
    kernel = tuple(layer.kernel.shape)  # [k..., out, in]
    return 2 * _per_image(input_shape, "input", layer.name) * math.prod(kernel[:-1])
  if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
    kernel = tuple(layer.kernel.shape)  # [k..., in / groups, out]
    return 2 * _per_image(output_shape, "output", layer.name) * math.prod(kernel[:-1])
  if isinstance(layer, keras.layers.Dense):
    kernel = tuple(layer.kernel.shape)  # [in, units]
    return 2 * _per_image(output_shape, "output", layer.name) * kernel[0]
  if any(hasattr(layer, w) for w in ("kernel", "depthwise_kernel")):
    raise ValueError(f"forward_flops does not know how to count layer {layer.name!r} of type "
                     f"{type(layer).__name__}; add it to cascade_tf.flops.layer_flops.")
  return 0


def _functional_graph(layer):
  """The functional graph of a Functional or built Sequential model, else None."""
  if isinstance(layer, keras.Sequential):
    layer = layer._functional  # pylint: disable=protected-access
  return layer if isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth") else None


def forward_flops(model: keras.Model) -> int:
  """Forward FLOPs of one image through a built functional Keras model.

  Counts 2 FLOPs per multiply-add of every convolution, transposed
  convolution, depthwise convolution and dense layer (see the module
  docstring), once per call of the layer in this model's graph; nested
  functional models are counted through their own layers.

  Args:
    model: a functional keras.Model whose layers' shapes are known apart
      from the batch (build it for a fixed image size).

  Returns:
    The FLOPs per image, an int.

  Raises:
    ValueError: if `model` is not a functional model, a layer's sizes are
      unknown, or a layer with a kernel is of a kind not counted here.
  """
  graph = _functional_graph(model)
  if graph is None:
    raise ValueError(f"forward_flops needs a functional keras.Model (built from keras.Input) "
                     f"or a built Sequential; got {type(model).__name__}.")
  total = 0
  # The model's own graph: its nodes are the calls made inside this model,
  # so a layer shared with another model (VGG16's layers are) counts only
  # the calls made here. Keras keeps the graph in `_nodes_by_depth`.
  for nodes in graph._nodes_by_depth.values():  # pylint: disable=protected-access
    for node in nodes:
      layer = node.operation
      if node.is_input:
        continue
      if isinstance(layer, keras.Model):
        total += forward_flops(layer)
        continue
      inputs, outputs = node.input_tensors, node.output_tensors
      if not inputs or not outputs:
        continue
      total += layer_flops(layer, inputs[0].shape, outputs[0].shape)
  return total


def network_forward_flops(cfg: config_lib.Config) -> dict[str, int]:
  """Forward FLOPs per image of each network of `cfg`, at its training sizes.

  Builds the generator, critic and restorer at `cfg.data.image_size` and,
  when `cfg.loss.lambda_per > 0`, the VGG16 feature extractor (random
  weights: the count does not depend on them) at `cfg.loss.perceptual_size`
  (or the image size). Returns {"generator", "critic", "restorer", "vgg"}
  (vgg 0 when the perceptual term is off). The counts do not depend on the
  dtype policy.
  """
  size = cfg.data.image_size
  counts = {
      "generator": forward_flops(generator_lib.build_generator(cfg.generator, size)),
      "critic": forward_flops(critic_lib.build_critic(cfg.critic, size)),
      "restorer": forward_flops(restorer_lib.build_restorer(cfg.restorer, size)),
      "vgg": 0,
  }
  if cfg.loss.lambda_per > 0:
    vgg = perceptual.build_vgg_features("none", cfg.loss.perceptual_size or size)
    counts["vgg"] = forward_flops(vgg)
  return counts


def step_flops(cfg: config_lib.Config, stage: str,
               forward: dict[str, int] | None = None) -> int:
  """FLOPs per image of one training step (or inference) of `stage`.

  Args:
    cfg: the config; `train.n_critic` sets the critic updates of the
      `*_full_step` stages.
    stage: one of `STEP_STAGES` (their values say what is counted). The
      `*_full_step` counts are per image of the generator (joint) batch:
      n_critic critic updates on n_critic batches of the same size plus one
      generator update, so images/s x this count is the achieved FLOP rate
      of the whole step.
    forward: `network_forward_flops(cfg)`, to avoid rebuilding the
      networks; computed when None.

  Returns:
    FLOPs per image, an int (rule: 3x forward for trained networks, 2x for
    networks only back-propagated through, 1x for forward-only ones).

  Raises:
    ValueError: for an unknown stage.
  """
  if stage not in STEP_STAGES:
    raise ValueError(f"stage={stage!r}: expected one of {sorted(STEP_STAGES)}.")
  f = network_forward_flops(cfg) if forward is None else forward
  g, c, r, v = f["generator"], f["critic"], f["restorer"], f["vgg"]
  perceptual_cost = v + 2 * v  # Target features forward only, output features back-propagated.
  counts = {
      "pretrain": 3 * g,
      "dd": 3 * r,
      "critic": g + 2 * 3 * c,
      "gan_generator": 3 * g + 2 * c + perceptual_cost,
      # With lambda_intermediate > 0 eq. (7)'s perceptual term is also taken on
      # G(x): its features are back-propagated too (the target's are shared).
      "joint": (3 * g + 3 * r + 2 * c + perceptual_cost
                + (2 * v if cfg.loss.lambda_intermediate > 0 else 0)),
      "infer": g + r,
  }
  counts["gan_full_step"] = cfg.train.n_critic * counts["critic"] + counts["gan_generator"]
  counts["joint_full_step"] = cfg.train.n_critic * counts["critic"] + counts["joint"]
  return counts[stage]
