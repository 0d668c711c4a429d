"""Loss functions of the paper (Sec. 3.2, eqs. 1-7) and WGAN weight clipping.

Every loss is a pure function on tensors that returns one value PER EXAMPLE,
shape [B], float32, so that a distributed training step can reduce it with
`reduce_per_example` (tf.nn.compute_average_loss over the global batch).
Images are on the networks' [-1, 1] scale; VGG features on the scale that
VGG16's 0-255 inputs give them.

    mse_loss                     eq. (1)
    l1_loss                      beyond the paper: mean absolute error
    neg_psnr_loss                beyond the paper: -PSNR per image, the metric itself
    perceptual_loss              eqs. (2-3)
    wasserstein_critic_loss      eq. (5)
    wasserstein_generator_loss   eq. (6)
    total_generator_loss         eq. (7), weights from LossConfig
    clip_values, clip_weights    WGAN's weight clipping of the critic
    share_at_bound               the critic's weights at the clip bound (its health)
    gradient_penalty             WGAN-GP's penalty on the critic's input gradient
    reduce_per_example           [B] -> the mean over the global batch
    global_norm                  the gradient norm every update logs
    psnr                         per-image PSNR of [0, 1] images: the trainers'
                                 validation (evaluation uses `metrics.psnr`,
                                 TensorFlow, the same formula and cap)

Everything is written in `keras.ops`, so the TensorFlow trainer
(`training/steps.py`) and the JAX trainer (`training/jax_steps.py`) run the
same code; this module imports only Keras and `cascade_tf.config`.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from keras import ops

from cascade_tf.config import LossConfig

# Keys of `total_generator_loss`'s terms and the LossConfig weight of each.
TERM_WEIGHTS = {"mse": "lambda_mse", "perceptual": "lambda_per", "adversarial": "lambda_adv"}


def _per_example_mean(values):
  """Mean over every axis but the first: [B, ...] -> [B]."""
  values = ops.convert_to_tensor(values)
  if len(values.shape) < 2:
    raise ValueError(f"Expected a batch of at least rank 2, got shape {values.shape}.")
  return ops.mean(ops.reshape(values, (ops.shape(values)[0], -1)), axis=1)


def mse_loss(y_true, y_pred):
  """Pixel-wise mean squared error, eq. (1).

  L_MSE = 1/(WH) sum_{i,j} (y_ij - G(x)_ij)^2, averaged over the colour
  channels too (the paper leaves them implicit).

  Args:
    y_true: the clean images, [B, H, W, C], [-1, 1].
    y_pred: the network's output, [B, H, W, C], same scale.

  Returns:
    float32 [B], >= 0 (at most 4 for images inside [-1, 1]): the mean over
    H, W and C of the squared difference, per example.
  """
  y_true = ops.cast(y_true, "float32")
  y_pred = ops.cast(y_pred, "float32")
  known = [(a, b) for a, b in zip(y_true.shape, y_pred.shape) if a is not None and b is not None]
  if len(y_true.shape) != len(y_pred.shape) or any(a != b for a, b in known):
    raise ValueError(f"mse_loss: y_true {y_true.shape} and y_pred {y_pred.shape} differ.")
  return _per_example_mean(ops.square(y_true - y_pred))


def l1_loss(y_true, y_pred):
  """Pixel-wise mean absolute error (beyond the paper: `loss.reconstruction=l1`).

  Args and shapes as `mse_loss`. Returns float32 [B], >= 0.
  """
  y_true = ops.cast(y_true, "float32")
  y_pred = ops.cast(y_pred, "float32")
  if tuple(y_true.shape[1:]) != tuple(y_pred.shape[1:]):
    raise ValueError(f"l1_loss: y_true {y_true.shape} and y_pred {y_pred.shape} differ.")
  return _per_example_mean(ops.abs(y_true - y_pred))


# The squared error ([0, 1] scale) added inside neg_psnr_loss's logarithm: 50 dB. It keeps
# the gradient finite on an image that is already (nearly) exact; above it an image's
# PSNR gains little weight.
NEG_PSNR_FLOOR = 1e-5


def neg_psnr_loss(y_true, y_pred):
  """Minus each image's PSNR (beyond the paper: `loss.reconstruction=psnr`).

  10 log10(MSE_01 + NEG_PSNR_FLOOR), with MSE_01 the image's mean squared
  error on the [0, 1] scale (`mse_loss` / 4: these images span [-1, 1]). Its
  batch mean is, up to the floor, minus the mean PSNR that `evaluate.py`
  reports, so training optimises the metric: where the squared error weighs every image by its
  error, this weighs each image's gradient by 1 / (MSE_01 + floor), so an
  image already close counts as much, in dB, as one far off. With a composite
  (`generator.composite`), only the hole differs, and the whole image's PSNR
  and the hole's differ by a constant per mask: both are the objective.

  Args and shapes as `mse_loss`, on the [-1, 1] scale. Returns float32 [B], dB
  (at most -10 log10(NEG_PSNR_FLOOR) = 50 below zero).
  """
  mse_01 = mse_loss(y_true, y_pred) / 4.0
  return 10.0 * ops.log(mse_01 + NEG_PSNR_FLOOR) / math.log(10.0)


def perceptual_loss(features_true: Sequence, features_pred: Sequence):
  """Perceptual loss, eqs. (2-3).

  L_ij = 1/(H_ij W_ij C_ij) ||phi_ij(y) - phi_ij(G(x))||_2^2 for each
  feature map, and L_per = the mean of the L_ij; the paper uses the four
  maps phi_12, phi_22, phi_33, phi_43 of VGG16 (`models.perceptual`).

  Args:
    features_true: list of the feature maps of the clean images, each
      [B, H_ij, W_ij, C_ij]; usually wrapped in ops.stop_gradient.
    features_pred: the same maps of the network's output, same shapes.

  Returns:
    float32 [B], >= 0, on the squared scale of the features (VGG16 on
    0-255 inputs; docs/architecture.md discusses the magnitudes): the mean
    over the layers of each layer's mean squared difference, per example.

  Raises:
    ValueError: if the lists are empty or of different lengths.
  """
  if len(features_true) != len(features_pred) or not features_true:
    raise ValueError(f"perceptual_loss: expected two equally long, non-empty lists of feature "
                     f"maps, got {len(features_true)} and {len(features_pred)}.")
  per_layer = [mse_loss(phi_y, phi_g) for phi_y, phi_g in zip(features_true, features_pred)]
  return sum(per_layer[1:], per_layer[0]) / float(len(per_layer))


def _scores(scores, name: str):
  """Critic scores [B, 1] or [B] -> float32 [B]."""
  scores = ops.cast(scores, "float32")
  rank = len(scores.shape)
  if rank == 2 and scores.shape[-1] == 1:
    return scores[:, 0]
  if rank == 1:
    return scores
  raise ValueError(f"{name}: expected critic scores of shape [B, 1] or [B], got {scores.shape}.")


def wasserstein_critic_loss(real_scores, fake_scores):
  """The critic's WGAN loss, eq. (5): L_D = E[D(G(x))] - E[D(y)].

  Minimising it maximises the critic's estimate of the Wasserstein-1
  distance between real and generated images (with the weights clipped,
  `clip_weights`).

  Args:
    real_scores: D(y) on clean images, [B, 1] or [B], unbounded.
    fake_scores: D(G(x)) on generated images, same shape.

  Returns:
    float32 [B], unbounded: fake - real per example; its batch mean is eq. (5).
  """
  return _scores(fake_scores, "wasserstein_critic_loss") - _scores(
      real_scores, "wasserstein_critic_loss")


def wasserstein_generator_loss(fake_scores):
  """The generator's adversarial WGAN loss, eq. (6): L_G = -E[D(G(x))].

  Args:
    fake_scores: D(G(x)) on generated images, [B, 1] or [B], unbounded.

  Returns:
    float32 [B], unbounded: -D(G(x)) per example; its batch mean is eq. (6).
  """
  return -_scores(fake_scores, "wasserstein_generator_loss")


def total_generator_loss(terms: Mapping[str, object], loss_cfg: LossConfig):
  """The weighted total, eq. (7): lambda_mse L_MSE + lambda_per L_per + lambda_adv L_G.

  Eq. (7) writes the adversarial weight as lambda_D on L_D; for the
  generator the adversarial term is eq. (6)'s L_G, weighted by
  `loss_cfg.lambda_adv`.

  Args:
    terms: {"mse": ..., "perceptual": ..., "adversarial": ...}, tensors of
      one common shape (per-example [B] or already reduced scalars). Missing
      keys count as zero.
    loss_cfg: gives lambda_mse, lambda_per and lambda_adv.

  Returns:
    float32 tensor of the terms' shape. Terms whose weight is 0 are left
    out rather than multiplied by 0, so a disabled term cannot turn the
    total into NaN.

  Raises:
    ValueError: for a key other than the three above.
  """
  unknown = sorted(set(terms) - set(TERM_WEIGHTS))
  if unknown:
    raise ValueError(f"total_generator_loss: unknown terms {unknown}; expected keys among "
                     f"{sorted(TERM_WEIGHTS)}.")
  weighted = []
  for key, weight_name in TERM_WEIGHTS.items():
    weight = float(getattr(loss_cfg, weight_name))
    if key in terms and weight != 0.0:
      weighted.append(weight * ops.cast(terms[key], "float32"))
  if not weighted:
    return ops.convert_to_tensor(0.0, "float32")
  return sum(weighted[1:], weighted[0])


def clip_values(values, clip_value) -> list:
  """Each of `values` (tensors or variables) clipped into [-clip_value, clip_value].

  WGAN's way of keeping the critic K-Lipschitz (Arjovsky et al. 2017; the
  paper follows their advice, Sec. 3.2), applied after each critic update:
  by assignment in TensorFlow (`clip_weights`), to the new values in the
  JAX trainer.

  Args:
    values: a list of float tensors (or variables).
    clip_value: the bound c > 0 (paper: 0.01), a Python number or scalar tensor.

  Returns:
    A list of tensors, one per value, of its shape and dtype.

  Raises:
    ValueError: for a Python number c <= 0.
  """
  if isinstance(clip_value, (int, float)) and clip_value <= 0:
    raise ValueError(f"clip_values: clip_value={clip_value} must be > 0.")
  clipped = []
  for value in values:
    bound = ops.cast(clip_value, value.dtype)
    clipped.append(ops.clip(value, -bound, bound))
  return clipped


def clip_weights(model, clip_value) -> None:
  """Assigns `clip_values` of every trainable variable of `model` back to it.

  Works eagerly and inside tf.function.

  Raises:
    ValueError: for a Python number c <= 0.
  """
  variables = model.trainable_variables
  for variable, value in zip(variables, clip_values(variables, clip_value)):
    variable.assign(value)


def share_at_bound(values, clip_value):
  """The share of the elements of `values` whose magnitude is at the clip bound (float32).

  A critic health measure: after clipping, a weight at +-clip_value is one
  the update pushed beyond it. Counted at 99.9% of the bound (float rounding).
  """
  total, at_bound = 0, []
  for value in values:
    value = ops.cast(value, "float32")
    at_bound.append(ops.sum(ops.cast(ops.abs(value) >= 0.999 * clip_value, "float32")))
    total += math.prod(value.shape)
  if not at_bound:
    return ops.convert_to_tensor(0.0, "float32")
  return sum(at_bound[1:], at_bound[0]) / float(total)


def gradient_penalty(input_gradients):
  """WGAN-GP's penalty per example, (||grad_x D(x)||_2 - 1)^2: [B, ...] -> float32 [B]."""
  gradients = ops.cast(input_gradients, "float32")
  flat = ops.reshape(gradients, (ops.shape(gradients)[0], -1))
  norms = ops.sqrt(ops.sum(ops.square(flat), axis=1) + 1e-12)
  return ops.square(norms - 1.0)


def reduce_per_example(per_example, global_batch_size: int):
  """Sums per-example losses [B] and divides by the GLOBAL batch size.

  What tf.nn.compute_average_loss does: inside a replica of a tf.distribute
  strategy, the replicas' results then sum to the mean over the global
  batch; with one replica (and in the JAX trainer) it is the batch mean.

  Args:
    per_example: float tensor [B] (the replica's share of the batch).
    global_batch_size: number of examples over all replicas (> 0).

  Returns:
    float32 scalar.
  """
  if isinstance(global_batch_size, int) and global_batch_size < 1:
    raise ValueError(f"reduce_per_example: global_batch_size={global_batch_size} must be >= 1.")
  per_example = ops.cast(per_example, "float32")
  if len(per_example.shape) != 1:
    raise ValueError(f"reduce_per_example: expected per-example losses [B], got shape "
                     f"{per_example.shape}.")
  return ops.sum(per_example) / ops.cast(global_batch_size, "float32")


def global_norm(tensors):
  """sqrt(sum of squares) over every element of `tensors` (None entries skipped), float32."""
  squares = [ops.sum(ops.square(ops.cast(t, "float32"))) for t in tensors if t is not None]
  if not squares:
    return ops.convert_to_tensor(0.0, "float32")
  return ops.sqrt(sum(squares[1:], squares[0]))


PSNR_CAP_DB = 100.0  # dB for a perfect image; the same cap as metrics.PSNR_CAP_DB.


def psnr(y_true, y_pred):
  """PSNR of each image, data range 1, `y_pred` clipped to [0, 1], capped at PSNR_CAP_DB.

  The validation metric of both trainers (train.py and scripts/train_jax.py,
  through `stages.validation_scores`), in `keras.ops`; `metrics.psnr` is the
  evaluation's TensorFlow version of the same formula (a test keeps them equal).

  Args:
    y_true: [B, H, W, C], the clean images in [0, 1].
    y_pred: [B, H, W, C], the same shape.

  Returns:
    float32 [B], dB.
  """
  y_pred = ops.clip(ops.cast(y_pred, "float32"), 0.0, 1.0)
  mse = ops.maximum(mse_loss(y_true, y_pred), 10.0**(-PSNR_CAP_DB / 10.0))
  return -10.0 * ops.log(mse) / math.log(10.0)
