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
together, the noise field is drawn here, and `data.appliers` applies them.
"""

from __future__ import annotations

import jax
import keras
from keras import ops

from cascade_tf import losses
from cascade_tf.config import PAPER_TRACKS, TRACK_CORRUPTIONS
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
    if update.clip is not None:
      trained_values = losses.clip_values(trained_values, update.clip)
    values = list(values)
    for position, value in zip(trained, trained_values):
      values[position] = value
    return values, optimizer_values, {**terms, "total": total,
                                      "grad_norm": losses.global_norm(grads)}

  return fn


def write_back(stage: stages_lib.Stage, values) -> None:
  """Assigns `values` (in `stage_variables` order) to the networks' variables."""
  for variable, value in zip(stage_variables(stage), values):
    variable.assign(value)


def sample_corruptions(clean, key, bank, track: str, data_cfg):
  """{"clean", "corrupted"} for `clean` [B, S, S, 3] in [0, 1] on `track`.

  Args:
    clean: float32 [B, S, S, 3] in [0, 1].
    key: a JAX PRNG key.
    bank: {"blur_kernel": [N, k, k], "noise_sigma": [N]}, drawn together by
      `corruptions.sample_corruption` (one row per draw).
    track: "inpaint", "restore" or "joint".
    data_cfg: the data config (hole size and fill).

  Returns:
    {"clean", "corrupted", "mask"}: the mask is the centre hole on tracks
    with a hole, zeros on `restore`.
  """
  batch, height, width = clean.shape[0], clean.shape[1], clean.shape[2]
  key_index, key_noise = jax.random.split(key)
  index = jax.random.randint(key_index, (batch,), 0, bank["blur_kernel"].shape[0])
  sigma = ops.take(bank["noise_sigma"], index, axis=0)
  noise = sigma[:, None, None, None] * jax.random.normal(key_noise, clean.shape)
  hole = "hole" in TRACK_CORRUPTIONS[track]
  mask = appliers.hole_mask(height, width, data_cfg.hole_size)[None] * (1.0 if hole else 0.0)
  corrupted = appliers.corrupt(clean, track, kernels=ops.take(bank["blur_kernel"], index, axis=0),
                               noise=noise, mask=mask, fill=data_cfg.hole_fill)
  return {"clean": clean, "corrupted": corrupted,
          "mask": ops.broadcast_to(mask, (batch, height, width, 1))}


def check_supported(cfg, stage: str) -> None:
  """ValueError unless the corruption bank covers the stage's training data: the JAX
  trainer draws the paper's tracks with the centre hole (not yet `blind` or other masks)."""
  track = cfg.stage_track(stage)
  if track not in PAPER_TRACKS or cfg.data.mask_family != "centre":
    raise ValueError(f"scripts/train_jax.py trains on the paper's tracks with the centre hole; "
                     f"stage {stage} asks for track {track!r} with data.mask_family="
                     f"{cfg.data.mask_family!r}. Train it with train.py.")
  if cfg.stage_batch_size(stage) != cfg.train.batch_size:
    raise ValueError(f"scripts/train_jax.py draws every stage's batches at train.batch_size="
                     f"{cfg.train.batch_size}; stage {stage} asks for train.{stage}_batch_size="
                     f"{cfg.stage_batch_size(stage)}. Train it with train.py.")
