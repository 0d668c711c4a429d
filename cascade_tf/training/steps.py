"""Compiled training steps, one factory per optimizer update.

Each factory takes the models, optimizers and settings it needs and returns
a `tf.function` that consumes one *distributed* batch (the output of
`strategy.experimental_distribute_dataset`) and returns a dict of scalar
float32 tensors: every loss term, the weighted total and the global
gradient norm. Nothing here reads globals or flags.

Losses are computed per example and reduced with
`tf.nn.compute_average_loss(..., global_batch_size)` inside each replica,
then summed across replicas, so the update is the same whatever the number
of replicas the global batch is split over.

With `jit_compile=True` each replica's whole update (forward, backward,
optimizer, clipping) is compiled by XLA; the loop asks for it through
`runtime.resolve_jit_compile` (on by default for single-replica CPU runs,
where it measured fastest, docs/benchmarks.md). The VGG16 features of the
targets are computed before the gradient tape opens.

Batches come from `data.pipeline` in [0, 1]; they are converted to the
networks' [-1, 1] with `ranges.to_model` here and nowhere else in training.
"""

from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

from cascade_tf import losses
from cascade_tf import ranges
from cascade_tf.config import LossConfig

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


def _inputs(batch):
  return ranges.to_model(batch["corrupted"]), ranges.to_model(batch["clean"])


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
  norm = tf.linalg.global_norm([tf.cast(g, tf.float32) for g in gradients if g is not None])
  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    norm = norm / tf.cast(optimizer.dynamic_scale, tf.float32)
  return norm


def _mean(per_example, global_batch_size):
  return losses.reduce_per_example(tf.cast(per_example, tf.float32), global_batch_size)


def _replica_share(value):
  """A per-replica scalar whose SUM over replicas is the replicas' mean."""
  replicas = tf.distribute.get_replica_context().num_replicas_in_sync
  return tf.cast(value, tf.float32) / tf.cast(replicas, tf.float32)


def make_mse_step(strategy, model, optimizer, global_batch_size: int, *,
                  jit_compile: bool = False) -> Step:
  """One update of `model` on MSE (eq. 1) alone: stages `pretrain` and `dd`.

  Returns {"mse", "total", "grad_norm"}.
  """

  def replica_fn(batch):
    inputs, targets = _inputs(batch)
    with tf.GradientTape() as tape:
      outputs = model(inputs, training=True)
      mse = _mean(losses.mse_loss(targets, outputs), global_batch_size)
    grad_norm = _apply(tape, optimizer, model.trainable_variables, mse)
    return {"mse": mse, "total": mse, "grad_norm": _replica_share(grad_norm)}

  return _replicated(strategy, replica_fn, jit_compile)


def make_critic_step(strategy, generator, critic, optimizer, global_batch_size: int,
                     clip: float, *, jit_compile: bool = False) -> Step:
  """One critic update (eq. 5) followed by weight clipping to [-clip, clip].

  The critic sees clean images as real and the generator's output on the
  corrupted ones as fake. Returns {"critic_loss", "wasserstein",
  "grad_norm"}, where `wasserstein` = E[D(real)] - E[D(fake)] is the
  critic's estimate of the Wasserstein distance.
  """

  def replica_fn(batch):
    inputs, targets = _inputs(batch)
    fake = generator(inputs, training=True)
    with tf.GradientTape() as tape:
      real_scores = critic(targets, training=True)
      fake_scores = critic(tf.stop_gradient(fake), training=True)
      critic_loss = _mean(losses.wasserstein_critic_loss(real_scores, fake_scores),
                          global_batch_size)
    grad_norm = _apply(tape, optimizer, critic.trainable_variables, critic_loss)
    losses.clip_weights(critic, clip)
    return {"critic_loss": critic_loss, "wasserstein": -critic_loss,
            "grad_norm": _replica_share(grad_norm)}

  return _replicated(strategy, replica_fn, jit_compile)


def _downscale(images, size):
  """Box-filter (integer factor) or anti-aliased bilinear resize to [size, size]."""
  height = images.shape[1]
  if height == size:
    return images
  if height is not None and height % size == 0 and images.shape[2] == height:
    factor = height // size
    return tf.nn.avg_pool2d(images, factor, factor, "VALID")
  return tf.image.resize(images, [size, size], method="bilinear", antialias=True)


def _target_features(vgg, targets, size):
  """VGG16 features of the clean targets (eqs. 2-3), or None without a perceptual term.

  Called before the gradient tape opens: nothing is differentiated through
  the targets, so the tape need not record this forward pass or keep its
  activations.
  """
  if vgg is None:
    return None
  if size is not None:
    targets = _downscale(targets, size)
  return [tf.stop_gradient(f) for f in vgg(targets, training=False)]


def _perceptual(vgg, target_features, outputs, global_batch_size, size):
  """Eqs. (2-3) on VGG16 features, optionally of images resized to `size` px."""
  if vgg is None:
    return tf.constant(0.0, tf.float32)
  if size is not None:
    outputs = _downscale(outputs, size)
  output_features = vgg(outputs, training=False)
  return _mean(losses.perceptual_loss(target_features, output_features), global_batch_size)


def _generator_terms(critic, vgg, target_features, targets, outputs, critic_input,
                     global_batch_size, loss_cfg):
  """The unweighted terms of eq. (7): MSE and perceptual on `outputs`, eq. (6) on `critic_input`."""
  return {
      "mse": _mean(losses.mse_loss(targets, outputs), global_batch_size),
      "perceptual": _perceptual(vgg, target_features, outputs, global_batch_size,
                                loss_cfg.perceptual_size),
      "adversarial": _mean(losses.wasserstein_generator_loss(critic(critic_input, training=False)),
                           global_batch_size),
  }


def make_generator_step(strategy, generator, critic, vgg, optimizer, global_batch_size: int,
                        loss_cfg: LossConfig, *, jit_compile: bool = False) -> Step:
  """One generator update on eq. (7): MSE + perceptual + adversarial (eq. 6).

  `vgg` may be None when `loss_cfg.lambda_per == 0`. Returns {"mse",
  "perceptual", "adversarial", "total", "grad_norm"}.
  """

  def replica_fn(batch):
    inputs, targets = _inputs(batch)
    target_features = _target_features(vgg, targets, loss_cfg.perceptual_size)
    with tf.GradientTape() as tape:
      outputs = generator(inputs, training=True)
      terms = _generator_terms(critic, vgg, target_features, targets, outputs, outputs,
                               global_batch_size, loss_cfg)
      total = losses.total_generator_loss(terms, loss_cfg)
    grad_norm = _apply(tape, optimizer, generator.trainable_variables, total)
    return {**terms, "total": total, "grad_norm": _replica_share(grad_norm)}

  return _replicated(strategy, replica_fn, jit_compile)


def make_joint_step(strategy, generator, restorer, critic, vgg, optimizer, global_batch_size: int,
                    loss_cfg: LossConfig, *, jit_compile: bool = False) -> Step:
  """One end-to-end update of generator and restorer (paper Sec. 3.4, last step).

  The final output R(G(x)) carries the MSE and perceptual terms, the
  generator's output G(x) the adversarial term against the critic; the
  gradient of the total flows through the restorer into the generator.
  Returns {"mse", "perceptual", "adversarial", "total", "mse_intermediate",
  "grad_norm"}; `mse_intermediate` (G(x) against the clean image) is
  monitored, not optimised. One optimizer updates both networks.
  """

  def replica_fn(batch):
    inputs, targets = _inputs(batch)
    target_features = _target_features(vgg, targets, loss_cfg.perceptual_size)
    with tf.GradientTape() as tape:
      inpainted = generator(inputs, training=True)
      restored = restorer(inpainted, training=True)
      terms = _generator_terms(critic, vgg, target_features, targets, restored, inpainted,
                               global_batch_size, loss_cfg)
      total = losses.total_generator_loss(terms, loss_cfg)
    grad_norm = _apply(tape, optimizer,
                       generator.trainable_variables + restorer.trainable_variables, total)
    mse_intermediate = _mean(losses.mse_loss(targets, inpainted), global_batch_size)
    return {**terms, "total": total, "mse_intermediate": mse_intermediate,
            "grad_norm": _replica_share(grad_norm)}

  return _replicated(strategy, replica_fn, jit_compile)
