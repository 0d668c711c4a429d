"""Loss functions of the paper (Sec. 3.2, eqs. 1-7) and WGAN weight clipping.

Every loss is a pure function on tensors that returns one value PER EXAMPLE,
shape [B], float32, so that a distributed training step can reduce it with
`reduce_per_example` (tf.nn.compute_average_loss over the global batch).
Images are on the networks' [-1, 1] scale; VGG features on the scale that
VGG16's 0-255 inputs give them.

    mse_loss                     eq. (1)
    perceptual_loss              eqs. (2-3)
    wasserstein_critic_loss      eq. (5)
    wasserstein_generator_loss   eq. (6)
    total_generator_loss         eq. (7), weights from LossConfig
    clip_weights                 WGAN's weight clipping of the critic

This module imports only TensorFlow and `cascade_tf.config`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import tensorflow as tf

from cascade_tf.config import LossConfig

# Keys of `total_generator_loss`'s terms and the LossConfig weight of each.
TERM_WEIGHTS = {"mse": "lambda_mse", "perceptual": "lambda_per", "adversarial": "lambda_adv"}


def _per_example_mean(values):
  """Mean over every axis but the first: [B, ...] -> [B]."""
  values = tf.convert_to_tensor(values)
  if values.shape.rank is not None and values.shape.rank < 2:
    raise ValueError(f"Expected a batch of at least rank 2, got shape {values.shape}.")
  return tf.reduce_mean(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)


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
  y_true = tf.cast(y_true, tf.float32)
  y_pred = tf.cast(y_pred, tf.float32)
  if y_true.shape.is_fully_defined() and y_pred.shape.is_fully_defined():
    if y_true.shape != y_pred.shape:
      raise ValueError(f"mse_loss: y_true {y_true.shape} and y_pred {y_pred.shape} differ.")
  return _per_example_mean(tf.math.squared_difference(y_true, y_pred))


def perceptual_loss(features_true: Sequence, features_pred: Sequence):
  """Perceptual loss, eqs. (2-3).

  L_ij = 1/(H_ij W_ij C_ij) ||phi_ij(y) - phi_ij(G(x))||_2^2 for each
  feature map, and L_per = the mean of the L_ij; the paper uses the four
  maps phi_12, phi_22, phi_33, phi_43 of VGG16 (`models.perceptual`).

  Args:
    features_true: list of the feature maps of the clean images, each
      [B, H_ij, W_ij, C_ij]; usually wrapped in tf.stop_gradient.
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
  return tf.add_n(per_layer) / float(len(per_layer))


def _scores(scores, name: str):
  """Critic scores [B, 1] or [B] -> float32 [B]."""
  scores = tf.cast(scores, tf.float32)
  rank = scores.shape.rank
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
      weighted.append(weight * tf.cast(terms[key], tf.float32))
  if not weighted:
    return tf.constant(0.0, tf.float32)
  return tf.add_n(weighted)


def clip_weights(model, clip_value) -> None:
  """Clips every trainable variable of `model` into [-clip_value, clip_value].

  WGAN's way of keeping the critic K-Lipschitz (Arjovsky et al. 2017; the
  paper follows their advice, Sec. 3.2). Call after each critic update;
  works eagerly and inside tf.function.

  Args:
    model: the critic, a keras.Model.
    clip_value: the bound c > 0 (paper: 0.01), a Python number or scalar tensor.

  Raises:
    ValueError: for a Python number c <= 0.
  """
  if isinstance(clip_value, (int, float)) and clip_value <= 0:
    raise ValueError(f"clip_weights: clip_value={clip_value} must be > 0.")
  for variable in model.trainable_variables:
    bound = tf.cast(clip_value, variable.dtype)
    variable.assign(tf.clip_by_value(variable, -bound, bound))


def reduce_per_example(per_example, global_batch_size: int):
  """Sums per-example losses [B] and divides by the GLOBAL batch size.

  tf.nn.compute_average_loss: inside a replica of a tf.distribute strategy,
  the replicas' results then sum to the mean over the global batch.

  Args:
    per_example: float tensor [B] (the replica's share of the batch).
    global_batch_size: number of examples over all replicas (> 0).

  Returns:
    float scalar.
  """
  if isinstance(global_batch_size, int) and global_batch_size < 1:
    raise ValueError(f"reduce_per_example: global_batch_size={global_batch_size} must be >= 1.")
  return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
