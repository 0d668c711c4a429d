"""The TensorFlow update: one compiled step per optimizer update of a stage.

`make_step(strategy, update, optimizer)` turns a `stages.Update` (its
objective from `training/objectives.py` and the networks it trains) into a
`tf.function` that consumes one *distributed* batch (the output of
`strategy.experimental_distribute_dataset`) and returns a dict of scalar
float32 tensors: the objective's terms, "total" and the global gradient
norm "grad_norm". What is minimised is written once, for this and the JAX
trainer (`training/jax_steps.py`); this module owns only how TensorFlow
takes and applies the gradient: the tape, loss scaling under
mixed_float16, `strategy.run`, XLA, and WGAN clipping by assignment.

The objectives reduce per-example losses over the GLOBAL batch inside each
replica; the replicas' results are summed, so the update is the same
whatever the number of replicas the global batch is split over.

With `jit_compile=True` each replica's whole update (forward, backward,
optimizer, clipping) is compiled by XLA; the loop asks for it through
`runtime.resolve_jit_compile` (on by default for single-replica runs on a
CPU without native bfloat16, where it measured fastest; off on one with,
docs/benchmarks.md). The tape watches only the
trained variables, so nothing else (the critic's fakes, the targets' VGG16
features) is recorded for the backward pass.
"""

from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

from cascade_tf import losses
from cascade_tf.training import stages as stages_lib

Step = Callable[[object], dict]


def _per_replica(strategy: tf.distribute.Strategy, replica_fn, jit_compile: bool):
  """`replica_fn`, compiled with XLA when asked and possible.

  XLA compiles the whole update (forward, backward, optimizer, clipping)
  of one replica into fused kernels. It is applied only with a single
  replica: with several, synchronized batch norm all-reduces inside the
  update, which XLA cannot compile under MirroredStrategy.
  """
  if jit_compile and strategy.num_replicas_in_sync == 1:
    return tf.function(replica_fn, jit_compile=True)
  return replica_fn


def _replicated(strategy: tf.distribute.Strategy, replica_fn, jit_compile: bool = False) -> Step:
  """Wraps a per-replica function into a compiled, cross-replica step."""
  replica_fn = _per_replica(strategy, replica_fn, jit_compile)

  @tf.function(reduce_retracing=True)
  def step(batch):
    per_replica = strategy.run(replica_fn, args=(batch,))
    return {name: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for name, value in per_replica.items()}

  return step


def _apply(tape, optimizer, variables, loss):
  """Backpropagates `loss` into `variables` with `optimizer`.

  With a `keras.optimizers.LossScaleOptimizer` (mixed_float16) the loss is
  scaled before the gradient and unscaled by the optimizer. Returns the
  global norm of the unscaled gradients.
  """
  with tape:  # The scaling must be recorded on the tape too.
    scaled = optimizer.scale_loss(loss)
  gradients = tape.gradient(scaled, variables)
  optimizer.apply_gradients(zip(gradients, variables))
  norm = losses.global_norm(gradients)
  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    norm = norm / tf.cast(optimizer.dynamic_scale, tf.float32)
  return norm


def _replica_share(value):
  """A per-replica scalar whose SUM over replicas is the replicas' mean."""
  replicas = tf.distribute.get_replica_context().num_replicas_in_sync
  return tf.cast(value, tf.float32) / tf.cast(replicas, tf.float32)


def make_step(strategy: tf.distribute.Strategy, update: stages_lib.Update,
              optimizer: keras.optimizers.Optimizer, *, jit_compile: bool = False) -> Step:
  """A compiled, cross-replica step of `update` with `optimizer`.

  Args:
    strategy: the tf.distribute strategy the networks were built under.
    update: from `stages.build_stage`: objective, trained networks, clipping.
    optimizer: built over `update.variables` (possibly a LossScaleOptimizer).
    jit_compile: compile each replica's update with XLA (single replica only).

  Returns:
    step(distributed batch) -> {**terms, "total", "grad_norm"} and, for a
    clipped update, "at_clip" (the share of its weights at the bound after
    clipping); float32 scalars summed over the replicas.
  """

  def replica_fn(batch):
    variables = update.variables
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch([v.value for v in variables])  # The tf.Variable inside each Keras variable.
      total, terms = update.objective(batch)
    grad_norm = _apply(tape, optimizer, variables, total)
    health = {}
    if update.clip is not None:
      for model in update.trained:
        losses.clip_weights(model, update.clip)
      health["at_clip"] = _replica_share(losses.share_at_bound(
          [v.value for v in variables], update.clip))
    return {**terms, "total": total, "grad_norm": _replica_share(grad_norm), **health}

  return _replicated(strategy, replica_fn, jit_compile)
