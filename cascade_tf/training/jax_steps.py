"""The JAX update: the same stages and objectives, gradients taken by `jax.value_and_grad`.

`training/steps.py` is TensorFlow's way of taking a `stages.Update`'s
gradient; this is JAX's, for `scripts/train_jax.py` (machines with JAX and
no TensorFlow). It imports JAX and Keras only, and needs Keras' JAX backend.

A stage's state is a list of the current values of every variable of its
networks (`StageState`, in `stage_variables` order) plus one list of
optimizer variables per update. `make_update` returns a pure function

    (values, optimizer_values, batch) -> (values, optimizer_values, logged)

that evaluates the update's objective under `keras.StatelessScope` (the
networks run on the given values and the batch-norm statistics they assign
come back in the new values), differentiates it with respect to the
trained variables only, applies Keras' own optimizer statelessly and, for
the critic, clips the new weights with `losses.clip_values`. `logged` holds
the objective's terms, "total" and "grad_norm", as in TensorFlow.

`sample_corruptions` corrupts a clean batch on the device from parameter
banks that the package's TensorFlow sampler drew (`scripts/prepare_jax_run.py`):
a bank index per image picks a blur kernel and a noise level drawn
together, another a hole mask (from the bank's masks, or the centre
square), the noise field and the `blind` tracks' choices are drawn here,
and `data.appliers` applies them.
"""

from __future__ import annotations

import jax
import keras
from keras import ops

from cascade_tf import losses
from cascade_tf.config import BLIND_TRACKS, TRACK_CORRUPTIONS, training_mask_family
from cascade_tf.data import appliers
from cascade_tf.training import stages as stages_lib


def stage_variables(stage: stages_lib.Stage) -> list:
  """Every variable of the stage's networks, each once, in a fixed order."""
  seen, variables = set(), []
  for model in stage.nets.values():
    for variable in model.variables:
      if id(variable) not in seen:
        seen.add(id(variable))
        variables.append(variable)
  return variables


def new_optimizer(cfg, stage: str, update: stages_lib.Update):
  """(`stages.new_optimizer` built over `update.variables`, its variables' initial values)."""
  optimizer = stages_lib.new_optimizer(cfg, stage, update.name)
  optimizer.build(update.variables)
  return optimizer, [v.value for v in optimizer.variables]


def make_update(stage: stages_lib.Stage, update: stages_lib.Update, optimizer):
  """The pure update function of `update` (see the module docstring).

  Args:
    stage: from `stages.build_stage`.
    update: one of `stage.updates`.
    optimizer: built over `update.variables` (`new_optimizer`).

  Returns:
    fn(values, optimizer_values, batch) -> (values, optimizer_values,
    {**terms, "total", "grad_norm"}); jit it.
  """
  variables = stage_variables(stage)
  index = {id(v): i for i, v in enumerate(variables)}
  trained = [index[id(v)] for v in update.variables]

  def objective(trained_values, values, batch):
    mapping = list(zip(variables, values))
    for position, value in zip(trained, trained_values):
      mapping[position] = (variables[position], value)
    with keras.StatelessScope(state_mapping=mapping) as scope:
      total, terms = update.objective(batch)
    new_values = [scope.get_current_value(v) for v in variables]
    return total, (terms, new_values)

  def fn(values, optimizer_values, batch):
    trained_values = [values[i] for i in trained]
    (total, (terms, values)), grads = jax.value_and_grad(objective, has_aux=True)(
        trained_values, values, batch)
    trained_values, optimizer_values = optimizer.stateless_apply(optimizer_values, grads,
                                                                 trained_values)
    health = {}
    if update.clip is not None:
      trained_values = losses.clip_values(trained_values, update.clip)
      health["at_clip"] = losses.share_at_bound(trained_values, update.clip)
    values = list(values)
    for position, value in zip(trained, trained_values):
      values[position] = value
    return values, optimizer_values, {**terms, "total": total,
                                      "grad_norm": losses.global_norm(grads), **health}

  return fn


def write_back(stage: stages_lib.Stage, values) -> None:
  """Assigns `values` (in `stage_variables` order) to the networks' variables."""
  for variable, value in zip(stage_variables(stage), values):
    variable.assign(value)


def sample_corruptions(clean, key, bank, track: str, data_cfg):
  """{"clean", "corrupted", "mask"} for `clean` [B, S, S, 3] in [0, 1] on `track`.

  Args:
    clean: float32 [B, S, S, 3] in [0, 1].
    key: a JAX PRNG key.
    bank: {"blur_kernel": [N, k, k], "noise_sigma": [N]}, drawn together by
      `corruptions.sample_corruption` (one row per draw), and optionally
      {"mask": [M, S, S, 1]} drawn by `data/masks.py` (from the family that
      `check_supported` was given); without masks the holes are the centre square.
    track: one of config.TRAIN_TRACKS (`check_supported` says which the bank covers).
    data_cfg: the data config (hole size and fill, the blind probabilities).

  Returns:
    {"clean", "corrupted", "mask", "mix"}; the mask is zeros where no hole
    was made; `mix` [B] is uniform in [0, 1) (the WGAN-GP interpolation).
  """
  batch, height, width = clean.shape[0], clean.shape[1], clean.shape[2]
  key_index, key_noise, key_mask, key_flags, key_mix = jax.random.split(key, 5)
  mix = jax.random.uniform(key_mix, (batch,))
  index = jax.random.randint(key_index, (batch,), 0, bank["blur_kernel"].shape[0])
  sigma = ops.take(bank["noise_sigma"], index, axis=0)
  noise = sigma[:, None, None, None] * jax.random.normal(key_noise, clean.shape)
  kernels = ops.take(bank["blur_kernel"], index, axis=0)
  if "mask" in bank:
    mask_index = jax.random.randint(key_mask, (batch,), 0, bank["mask"].shape[0])
    mask = ops.take(bank["mask"], mask_index, axis=0)
  else:
    mask = ops.broadcast_to(appliers.hole_mask(height, width, data_cfg.hole_size)[None],
                            (batch, height, width, 1))
  applied = TRACK_CORRUPTIONS[track]
  if track in BLIND_TRACKS:
    u = jax.random.uniform(key_flags, (batch, 3))
    has_hole = (u[:, 0] < data_cfg.blind_hole_prob) & ("hole" in applied)
    corrupted, mask = appliers.corrupt_each(
        clean, kernels=kernels, noise=noise, mask=mask, has_blur=u[:, 1] < data_cfg.blind_blur_prob,
        has_noise=u[:, 2] < data_cfg.blind_noise_prob, has_hole=has_hole,
        fill=data_cfg.hole_fill)
    return {"clean": clean, "corrupted": corrupted, "mask": mask, "mix": mix}
  mask = mask * (1.0 if "hole" in applied else 0.0)
  corrupted = appliers.corrupt(clean, track, kernels=kernels, noise=noise, mask=mask,
                               fill=data_cfg.hole_fill)
  return {"clean": clean, "corrupted": corrupted, "mask": mask, "mix": mix}


def check_supported(cfg, stage: str, mask_family: str = "centre") -> None:
  """ValueError unless the corruption bank covers the stage's training data.

  Tracks without a hole are always covered; a track with one needs the
  bank's masks (`mask_family`, `centre` for a bank without masks) to be
  the family the tf.data pipeline would draw for it
  (`config.training_mask_family`): other families than `centre` need a bank
  made by scripts/prepare_jax_run.py with the same `--preset`/`--mask_family`.
  """
  track = cfg.stage_track(stage)
  family = mask_family
  wanted = training_mask_family(cfg.data.mask_family, track)
  if "hole" in TRACK_CORRUPTIONS[track] and wanted != family:
    raise ValueError(f"scripts/train_jax.py: stage {stage} trains on track {track!r} with "
                     f"{wanted!r} holes, but the bundle's corruption bank has {family!r} holes. "
                     f"Make the bundle with scripts/prepare_jax_run.py --mask_family={wanted} "
                     "(or the same --preset), or train it with train.py.")
