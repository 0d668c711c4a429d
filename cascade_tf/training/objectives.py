"""What each training update minimises, written once for both backends.

An objective takes the stage's networks (Keras models) and a batch
({"corrupted", "clean"} float32 [B, S, S, 3] in [0, 1] and the hole `mask`
[B, S, S, 1], as `data.pipeline` yields it) and returns `(total, terms)`: the scalar to differentiate and a
dict of named float32 scalars to log. It is written in `keras.ops` and
calls the networks as Keras layers, so that

* `training/steps.py` (TensorFlow) evaluates it under a gradient tape,
  with loss scaling, `strategy.run` and XLA, and
* `training/jax_steps.py` (JAX) evaluates it under `keras.StatelessScope`
  inside `jax.value_and_grad`, carrying batch-norm statistics back,

and the two trainers differ only in how gradients are taken and applied.

    reconstruction_objective   eq. (1) (or L1, or -PSNR) alone: stages `pretrain` (G), `dd` (R)
    critic_objective           eq. (5): the critic against G's outputs
    generator_objective        eq. (7): stage `gan` (G) and, with a
                               restorer, stage `joint` (R(G(x)))

Per-example losses are reduced over the GLOBAL batch
(`losses.reduce_per_example`), so under tf.distribute the replicas' values
sum to the batch mean. Conversions between [0, 1] and [-1, 1] go through
`ranges`; the cascade's data flow through `models.cascade.forward`.
"""

from __future__ import annotations

import keras
from keras import ops

from cascade_tf import losses
from cascade_tf import ranges
from cascade_tf.config import LossConfig
from cascade_tf.models.cascade import final_output
from cascade_tf.models.cascade import forward


def model_inputs(batch):
  """(corrupted, clean) of a pipeline batch, on the networks' [-1, 1] scale."""
  return ranges.to_model(batch["corrupted"]), ranges.to_model(batch["clean"])


def _forward(nets, batch, inputs, *, composite, generator=True, restorer=True):
  """`forward` of the stage's networks on a batch, with its hole mask when it has one."""
  return forward(inputs, nets.get("generator") if generator else None,
                 nets.get("restorer") if restorer else None, mask=batch.get("mask"),
                 composite=composite, training=True)


def _mean(per_example, global_batch_size):
  return losses.reduce_per_example(per_example, global_batch_size)


# `loss.reconstruction` other than eq. (1): the logged name and per-example loss of each.
_OTHER_PIXEL_LOSSES = {"l1": ("l1", losses.l1_loss), "psnr": ("neg_psnr", losses.neg_psnr_loss)}


def reconstruction_objective(nets, batch, *, global_batch_size: int, composite: bool = False,
                             loss: str = "mse"):
  """Eq. (1) (or the mean absolute error, or minus the PSNR) on the final output.

  The final output is the stage's generator's and/or restorer's. Returns
  (mse, {"mse"}) for "mse"; (l1, {"l1", "mse"}) for "l1" and (neg_psnr,
  {"neg_psnr", "mse"}) for "psnr" (`losses.neg_psnr_loss`), where the MSE is
  logged, not optimised.
  """
  if loss != "mse" and loss not in _OTHER_PIXEL_LOSSES:
    raise ValueError(f"reconstruction_objective: loss={loss!r}: expected one of "
                     f"{('mse',) + tuple(_OTHER_PIXEL_LOSSES)}.")
  inputs, targets = model_inputs(batch)
  outputs = _forward(nets, batch, inputs, composite=composite)
  final = final_output(outputs)
  mse = _mean(losses.mse_loss(targets, final), global_batch_size)
  if loss == "mse":
    return mse, {"mse": mse}
  name, per_example = _OTHER_PIXEL_LOSSES[loss]
  value = _mean(per_example(targets, final), global_batch_size)
  return value, {name: value, "mse": ops.stop_gradient(mse)}


def _input_gradients(critic, images):
  """d sum(D(images)) / d images: the one backend-specific piece of the objectives."""
  backend = keras.backend.backend()
  if backend == "tensorflow":
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.GradientTape() as tape:
      tape.watch(images)
      score = ops.sum(critic(images, training=True))
    return tape.gradient(score, images)
  if backend == "jax":
    import jax  # pylint: disable=g-import-not-at-top
    return jax.grad(lambda x: ops.sum(critic(x, training=True)))(images)
  raise NotImplementedError(f"loss.critic_constraint=gp on the {backend!r} backend.")


def critic_objective(nets, batch, *, global_batch_size: int, composite: bool = False,
                     lambda_gp: float = 0.0):
  """Eq. (5): clean images are real, the generator's outputs fake.

  The generator runs in training mode (its batch-norm statistics move, as
  in every update that runs it) and its output is a constant here: only
  the critic is differentiated. Returns (total, {"critic_loss",
  "wasserstein"}), where `wasserstein` = E[D(real)] - E[D(fake)] is the
  critic's estimate of the Wasserstein distance. With `lambda_gp` > 0
  (WGAN-GP, `loss.critic_constraint=gp`) the total adds lambda_gp times the
  mean of (||grad D(x_mix)||_2 - 1)^2 at x_mix = mix * real + (1 - mix) *
  fake, `mix` per image from the batch, logged as "gradient_penalty".
  """
  inputs, targets = model_inputs(batch)
  fake = ops.stop_gradient(
      _forward(nets, batch, inputs, composite=composite, restorer=False)["inpainted"])
  critic = nets["critic"]
  critic_loss = _mean(losses.wasserstein_critic_loss(critic(targets, training=True),
                                                     critic(fake, training=True)),
                      global_batch_size)
  terms = {"critic_loss": critic_loss, "wasserstein": -critic_loss}
  if lambda_gp <= 0:
    return critic_loss, terms
  mix = ops.reshape(ops.cast(batch["mix"], "float32"), (-1, 1, 1, 1))
  mixed = mix * ops.cast(targets, "float32") + (1.0 - mix) * ops.cast(fake, "float32")
  penalty = _mean(losses.gradient_penalty(_input_gradients(critic, mixed)), global_batch_size)
  terms["gradient_penalty"] = penalty
  return critic_loss + lambda_gp * penalty, terms


def _downscale(images, size):
  """Box-filter (integer factor) or anti-aliased bilinear resize to [size, size]."""
  height = images.shape[1]
  if height == size:
    return images
  if height is not None and height % size == 0 and images.shape[2] == height:
    factor = height // size
    return ops.average_pool(images, factor, factor, padding="valid")
  return ops.image.resize(images, (size, size), interpolation="bilinear", antialias=True)


def _perceptual(vgg, targets, outputs, global_batch_size, size):
  """Eqs. (2-3) on VGG16 features, optionally of images resized to `size` px."""
  if size is not None:
    targets, outputs = _downscale(targets, size), _downscale(outputs, size)
  # Nothing is differentiated through the targets' features.
  target_features = [ops.stop_gradient(f) for f in vgg(targets, training=False)]
  return _mean(losses.perceptual_loss(target_features, vgg(outputs, training=False)),
               global_batch_size)


def generator_objective(nets, batch, *, loss_cfg: LossConfig, global_batch_size: int,
                        vgg=None, composite: bool = False, adversarial: bool = True):
  """Eq. (7): lambda_mse MSE + lambda_per perceptual + lambda_adv eq. (6).

  Without a restorer in `nets` (stage `gan`) every term is on G(x). With
  one (stage `joint`, paper Sec. 3.4's last step: R and the inpainting GAN
  optimised jointly) the final output R(G(x)) carries the MSE and
  perceptual terms, G(x) the adversarial one and, weighted by
  `loss_cfg.lambda_intermediate`, eq. (7)'s MSE and perceptual terms again
  (`mse_intermediate`, `perceptual_intermediate`; with weight 0 the MSE is
  logged, not optimised); the gradient of the final terms flows through R
  into G. The critic is not
  trained here (inference mode, not differentiated by the updates, which
  differentiate only their own networks).

  Args:
    nets: {"generator", "critic"} and optionally "restorer".
    batch: {"corrupted", "clean"} in [0, 1].
    loss_cfg: the weights and the perceptual resolution.
    global_batch_size: examples over all replicas.
    vgg: the VGG16 feature extractor (`models.perceptual`), required when
      loss_cfg.lambda_per > 0.
    composite: the config's `generator.composite` (`models.cascade.forward`).
    adversarial: False when no critic is trained (`train.n_critic=0`, which
      needs lambda_adv = 0): the critic is not run and "adversarial" is 0.

  Returns:
    (total, {"mse", "perceptual", "adversarial"} and, with a restorer,
    "mse_intermediate"); "perceptual" is 0 when its weight is 0.
  """
  if loss_cfg.lambda_per > 0 and vgg is None:
    raise ValueError("generator_objective: lambda_per > 0 needs the VGG16 features (vgg=...).")
  inputs, targets = model_inputs(batch)
  outputs = _forward(nets, batch, inputs, composite=composite)
  final = final_output(outputs)
  terms = {
      "mse": _mean(losses.mse_loss(targets, final), global_batch_size),
      "perceptual": ops.convert_to_tensor(0.0, "float32"),
      "adversarial": (_mean(losses.wasserstein_generator_loss(
          nets["critic"](outputs["inpainted"], training=False)), global_batch_size)
                      if adversarial else ops.convert_to_tensor(0.0, "float32")),
  }
  if loss_cfg.lambda_per > 0:
    terms["perceptual"] = _perceptual(vgg, targets, final, global_batch_size,
                                      loss_cfg.perceptual_size)
  total = losses.total_generator_loss(terms, loss_cfg)
  if "restored" in outputs:
    # Eq. (7)'s reconstruction terms on G(x) too, weighted by lambda_intermediate
    # (0: logged only, G trained through R and the adversarial term alone).
    weight = float(loss_cfg.lambda_intermediate)
    inpainted = outputs["inpainted"] if weight > 0 else ops.stop_gradient(outputs["inpainted"])
    intermediate = {"mse": _mean(losses.mse_loss(targets, inpainted), global_batch_size)}
    if weight > 0 and loss_cfg.lambda_per > 0:
      intermediate["perceptual"] = _perceptual(vgg, targets, inpainted, global_batch_size,
                                               loss_cfg.perceptual_size)
      terms["perceptual_intermediate"] = intermediate["perceptual"]
    terms["mse_intermediate"] = intermediate["mse"]
    if weight > 0:
      total = total + weight * losses.total_generator_loss(intermediate, loss_cfg)
  return total, terms
