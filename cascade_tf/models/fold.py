"""Folds inference-mode batch norm into the convolution before it.

At inference a batch-norm layer is a fixed per-channel affine map,
`y = gamma * (x - mean) / sqrt(var + eps) + beta`. When x is the output of a
convolution (or transposed convolution) with no activation and nothing
else reads it, the map can be merged into that convolution's kernel and
bias: `W' = W * s`, `b' = (b - mean) * s + beta` with
`s = gamma / sqrt(var + eps)` per output channel. The folded model computes
the same function in one pass instead of three (convolution, then the
normaliser's multiply and add over the whole activation), and lets
TensorFlow fuse convolution, bias and activation into one kernel.

`fold_batch_norm(model)` returns such a copy of a functional model for
inference (export, evaluation, `restore.py`); training keeps the original
layers, whose batch statistics and moving averages need the separate layer.

The copy also stores each layer's weights in the dtype it computes in: under
a mixed policy (`mixed_bfloat16`, `mixed_float16`) the trained layers keep
float32 variables for the optimizer and cast every kernel to bfloat16 at
every call, which in the `paper` preset's bfloat16 inference was 19% of the
operations' time (`benchmarks/layers.py --op_profile=infer_keras`). An
inference copy has no optimizer, so its layers get the policy's compute
dtype for their variables (`bfloat16`): the weights are rounded once, as
the per-call cast rounded them, and the outputs are the same.
"""

from __future__ import annotations

import keras
import numpy as np

_CONVS = (keras.layers.Conv2D, keras.layers.Conv2DTranspose)


@keras.saving.register_keras_serializable(package="cascade_tf")
class FoldedBatchNorm(keras.layers.Layer):
  """Stands where a batch norm was folded into the convolution before it: passes x on."""

  def call(self, inputs, training=None, mask=None):  # pylint: disable=unused-argument
    return inputs

  def compute_output_shape(self, input_shape):
    return input_shape


def _producer(layer: keras.layers.Layer):
  """The layer whose output is `layer`'s only input, or None."""
  nodes = getattr(layer, "_inbound_nodes", [])
  if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
    return None
  history = getattr(nodes[0].input_tensors[0], "_keras_history", None)
  return None if history is None else history[0]


def foldable_pairs(model: keras.Model) -> dict[str, keras.layers.BatchNormalization]:
  """{conv layer name: the batch norm that alone reads its output} in `model`."""
  pairs = {}
  for layer in model.layers:
    if not isinstance(layer, keras.layers.BatchNormalization):
      continue
    axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0]
                                                           if len(layer.axis) == 1 else None)
    conv = _producer(layer)
    if (axis not in (-1, 3) or not isinstance(conv, _CONVS) or
        conv.get_config().get("activation") not in (None, "linear") or
        len(conv._inbound_nodes) != 1 or len(conv._outbound_nodes) != 1 or
        conv.data_format != "channels_last"):
      continue
    pairs[conv.name] = layer
  return pairs


def _folded_weights(conv, bn) -> list[np.ndarray]:
  kernel = conv.kernel.numpy().astype(np.float64)
  bias = conv.bias.numpy().astype(np.float64) if conv.use_bias else 0.0
  mean = bn.moving_mean.numpy().astype(np.float64)
  variance = bn.moving_variance.numpy().astype(np.float64)
  gamma = bn.gamma.numpy().astype(np.float64) if bn.scale else np.ones_like(mean)
  beta = bn.beta.numpy().astype(np.float64) if bn.center else np.zeros_like(mean)
  scale = gamma / np.sqrt(variance + bn.epsilon)
  if isinstance(conv, keras.layers.Conv2DTranspose):  # Kernel [h, w, out, in].
    kernel = kernel * scale[None, None, :, None]
  else:  # Kernel [h, w, in, out].
    kernel = kernel * scale[None, None, None, :]
  bias = (bias - mean) * scale + beta
  dtype = conv.kernel.dtype
  return [kernel.astype(dtype), np.asarray(bias).astype(dtype)]


def inference_dtype(layer: keras.layers.Layer):
  """`layer`'s policy for an inference copy: a mixed policy's compute dtype
  (`mixed_bfloat16` -> `bfloat16`: weights stored as they are computed
  with), any other policy as it is. A batch norm that was not folded keeps
  its policy: it normalises in float32 with float32 statistics."""
  policy = layer.dtype_policy
  if (policy.variable_dtype != policy.compute_dtype and
      not isinstance(layer, keras.layers.BatchNormalization)):
    return policy.compute_dtype
  return policy


def fold_batch_norm(model: keras.Model, *, weights_in_compute_dtype: bool = True) -> keras.Model:
  """A copy of functional `model` with every foldable conv + batch norm merged.

  The copy has the same inputs, outputs and layer names; each folded
  convolution gains a bias and its batch norm becomes a pass-through
  `FoldedBatchNorm`.
  It is meant for inference only (training=True would no longer normalise
  with batch statistics). Weights are copied, so later changes to `model`
  do not reach the copy. A model with nothing to fold is still copied.

  Args:
    model: a functional Keras model.
    weights_in_compute_dtype: store each layer's weights in the dtype it
      computes in (`inference_dtype`; the module docstring says why); False
      keeps `model`'s policies (float32 weights under a mixed policy).
  """
  pairs = foldable_pairs(model)
  folded_bn = {bn.name for bn in pairs.values()}

  def dtype(layer):
    return inference_dtype(layer) if weights_in_compute_dtype else layer.dtype_policy

  def clone(layer):
    if layer.name in folded_bn:
      return FoldedBatchNorm(name=layer.name, dtype=dtype(layer))
    config = layer.get_config()
    if isinstance(layer, keras.layers.Layer):  # Not the ops (keras.ops) a model calls.
      config["dtype"] = dtype(layer)
    if layer.name in pairs:
      config["use_bias"] = True
    return layer.__class__.from_config(config)

  copy = keras.models.clone_model(model, clone_function=clone)
  for layer in model.layers:
    if layer.name in folded_bn or isinstance(layer, keras.layers.InputLayer):
      continue
    target = copy.get_layer(layer.name)
    if layer.name in pairs:
      target.set_weights(_folded_weights(layer, pairs[layer.name]))
    else:
      target.set_weights(layer.get_weights())
  return copy
