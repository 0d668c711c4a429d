"""The paper's four training stages (Sec. 3.4), what each trains and where it starts.

    pretrain  generator alone, MSE only, `inpaint` track      (step 1)
    gan       generator + critic, eq. (7), `inpaint` track     (step 2)
    dd        restorer alone, MSE, `restore` track (blur+noise) (step 3)
    joint     generator -> restorer end to end, critic still
              training against the generator, `joint` track   (step 4)

`gan` warm-starts its generator from `pretrain`; `joint` takes generator
and critic from `gan` and the restorer from `dd`. `dd` does not depend on
the inpainting stages and can run in parallel with them (another process,
same workdir).

Ablations of the paper's Table 2 come from the same stages: "No
pre-training" is `--stage=joint --init_from=scratch` (all networks start
from random weights); "Only GAN" is the generator after `gan`, scored
without the restorer (evaluate.py's `cascade_intermediate` row, or the
`gan` stage's own validation PSNR).

`build_stage` is the one place a stage is wired together: its networks,
the objective of each update and what each update trains. `train.py`
(`training/loop.py`), the JAX trainer (`scripts/train_jax.py`) and
`benchmarks/bench.py` all start from it and differ only in how they take
gradients (`training/steps.py`, `training/jax_steps.py`). This module does
not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping

import keras
from keras import ops

from cascade_tf import config as config_lib
from cascade_tf import losses
from cascade_tf import ranges
from cascade_tf.models import critic as critic_lib
from cascade_tf.models import generator as generator_lib
from cascade_tf.models import restorer as restorer_lib
from cascade_tf.models.cascade import forward
from cascade_tf.training import objectives

STAGES = config_lib.STAGES
ALL = "all"
NETWORKS = ("generator", "restorer", "critic")


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """What one stage trains, on what, with which objective, and what it outputs."""

  name: str
  track: str  # The paper's training track (config.PAPER_STAGE_TRACKS; Config.stage_track).
  models: tuple[str, ...]  # Networks the stage builds and checkpoints.
  adversarial: bool  # Whether a critic is trained alongside (n_critic steps per step).
  warm_start: tuple[tuple[str, str], ...]  # (network, stage it is taken from).
  trained: tuple[str, ...]  # Networks the main update trains (with one optimizer).
  objective: str  # The main update's objective: "reconstruction" or "generator".
  outputs: tuple[str, ...]  # `forward`'s outputs the stage produces, in order.


SPECS = {
    "pretrain": StageSpec("pretrain", "inpaint", ("generator",), False, (), ("generator",),
                          "reconstruction", ("inpainted",)),
    "gan": StageSpec("gan", "inpaint", ("generator", "critic"), True,
                     (("generator", "pretrain"),), ("generator",), "generator", ("inpainted",)),
    "dd": StageSpec("dd", "restore", ("restorer",), False, (), ("restorer",), "reconstruction",
                    ("restored",)),
    "joint": StageSpec("joint", "joint", ("generator", "restorer", "critic"), True,
                       (("generator", "gan"), ("critic", "gan"), ("restorer", "dd")),
                       ("generator", "restorer"), "generator", ("inpainted", "restored")),
}

# The value names every trainer logs for a critic update's values that a
# main update also has (one set of metric names for both backends).
_CRITIC_RENAMES = {"grad_norm": "critic/grad_norm", "at_clip": "critic/at_clip"}


@dataclasses.dataclass(frozen=True)
class Update:
  """One optimizer update of a stage, independent of the backend that takes its gradient."""

  name: str  # "critic" or "main".
  objective: Callable  # batch -> (total, {term: scalar}), see training/objectives.py.
  trained: tuple[keras.Model, ...]  # Networks whose trainable variables it updates.
  optimizer: str  # Name of its optimizer in a stage's checkpoint.
  clip: float | None = None  # WGAN weight clipping after the update (critic).

  @property
  def variables(self) -> list:
    """The trainable variables the update changes, in a fixed order."""
    return [v for model in self.trained for v in model.trainable_variables]


@dataclasses.dataclass(frozen=True)
class Stage:
  """A stage wired for training: its spec, networks and updates (critic first)."""

  spec: StageSpec
  nets: Mapping[str, keras.Model]
  updates: tuple[Update, ...]

  @property
  def critic(self) -> Update | None:
    return next((u for u in self.updates if u.name == "critic"), None)

  @property
  def main(self) -> Update:
    return next(u for u in self.updates if u.name == "main")

  composite: bool = False  # The config's generator.composite.

  def outputs(self, corrupted_pm1, mask=None, training=False) -> dict:
    """The stage's `forward` outputs ({"inpainted"} and/or {"restored"}), [-1, 1]."""
    return forward(corrupted_pm1, self.nets.get("generator"), self.nets.get("restorer"),
                   mask=mask, composite=self.composite, training=training)


def validation_scores(stage: Stage, batch) -> tuple[dict[str, float], dict]:
  """Mean PSNR of the stage's outputs (and of the corrupted input) on a fixed batch.

  The validation of both trainers (`training/loop.py` and
  scripts/train_jax.py); the networks run in inference mode on their
  current weights.

  Args:
    stage: from `build_stage`.
    batch: {"clean", "corrupted", "mask"}, [B, S, S, C] in [0, 1] (the mask
      [B, S, S, 1]); tensors or NumPy arrays.

  Returns:
    ({"psnr_identity", "psnr_<output>"...: dB}, {output name: [B, S, S, 3]
    on [0, 1], not clipped}).
  """
  outputs = {name: ranges.from_model(images) for name, images in
             stage.outputs(ranges.to_model(batch["corrupted"]), batch["mask"],
                           training=False).items()}
  clean = batch["clean"]
  scores = {"psnr_identity": float(ops.mean(losses.psnr(clean, batch["corrupted"])))}
  for name, images in outputs.items():
    scores[f"psnr_{name}"] = float(ops.mean(losses.psnr(clean, images)))
  return scores, outputs


def build_networks(cfg: config_lib.Config, names) -> dict[str, keras.Model]:
  """Builds the named networks ("generator", "critic", "restorer") for `cfg`."""
  size = cfg.data.image_size
  builders = {
      "generator": lambda: generator_lib.build_generator(cfg.generator, size),
      "critic": lambda: critic_lib.build_critic(cfg.critic, size),
      "restorer": lambda: restorer_lib.build_restorer(cfg.restorer, size),
  }
  unknown = [name for name in names if name not in builders]
  if unknown:
    raise ValueError(f"Unknown networks {unknown}: expected some of {NETWORKS}.")
  return {name: builders[name]() for name in names}


def build_stage(cfg: config_lib.Config, stage: str, *, global_batch_size: int,
                nets: Mapping[str, keras.Model] | None = None, vgg=None) -> Stage:
  """Wires `stage`: its networks (built, or the given ones) and its updates.

  Args:
    cfg: the run's config (loss weights, clipping).
    stage: one of STAGES.
    global_batch_size: examples per update over all replicas (the losses'
      per-example reduction).
    nets: the stage's networks when the caller built (or restored) them,
      e.g. inside a tf.distribute scope; default: built here.
    vgg: VGG16 features for the perceptual term, needed when
      cfg.loss.lambda_per > 0 in an adversarial stage.

  Returns:
    A `Stage`; its updates' objectives are ready to call on a batch.
  """
  if stage not in SPECS:
    raise ValueError(f"Unknown stage {stage!r}: expected one of {STAGES}.")
  spec = SPECS[stage]
  if nets is None:
    nets = build_networks(cfg, spec.models)
  missing = [name for name in spec.models if name not in nets]
  if missing:
    raise ValueError(f"Stage {stage} needs the networks {missing}.")
  nets = {name: nets[name] for name in spec.models}
  common = {"global_batch_size": global_batch_size, "composite": cfg.generator.composite}
  if spec.objective == "reconstruction":
    main_objective = functools.partial(objectives.reconstruction_objective, nets,
                                       loss=cfg.loss.reconstruction, **common)
  else:
    main_objective = functools.partial(objectives.generator_objective, nets, loss_cfg=cfg.loss,
                                       vgg=vgg, adversarial=cfg.train.n_critic > 0, **common)
  updates = []
  # train.n_critic=0 (with loss.lambda_adv=0): `gan` and `joint` without the adversary.
  if spec.adversarial and cfg.train.n_critic > 0:
    gp = cfg.loss.critic_constraint == "gp"
    updates.append(Update("critic", functools.partial(
        objectives.critic_objective, nets, lambda_gp=cfg.loss.lambda_gp if gp else 0.0,
        **common), (nets["critic"],), "critic_optimizer", clip=None if gp else cfg.train.clip))
  updates.append(Update("main", main_objective, tuple(nets[name] for name in spec.trained),
                        "optimizer"))
  return Stage(spec, nets, tuple(updates), composite=cfg.generator.composite)


def new_optimizer(cfg: config_lib.Config, stage: str, update: str) -> keras.optimizers.Optimizer:
  """The (unbuilt) Keras optimizer of one update of `stage`, for both trainers.

  The critic's update ("critic") uses RMSProp at the stage's learning rate,
  as WGAN with weight clipping needs (with `loss.critic_constraint=gp`:
  Adam with beta_1 = 0.5, beta_2 = 0.9, as WGAN-GP). The main update ("main") uses
  `train.optimizer` (rmsprop, the paper's, or adam) and, with
  `train.lr_decay=cosine`, a learning rate that decays from the stage's to
  0 over the stage's steps (counted by the optimizer's own iterations, so a
  resumed run continues the same schedule).
  """
  lr = cfg.stage_lr(stage)
  if update == "critic":
    if cfg.loss.critic_constraint == "gp":  # WGAN-GP's own choice (Gulrajani et al. 2017).
      return keras.optimizers.Adam(learning_rate=lr, beta_1=0.5, beta_2=0.9)
    return keras.optimizers.RMSprop(learning_rate=lr)
  if cfg.train.optimizer == "rmsprop":
    optimizer_class = keras.optimizers.RMSprop
  else:
    optimizer_class = keras.optimizers.Adam
  if update == "main" and cfg.train.lr_decay == "cosine":
    lr = keras.optimizers.schedules.CosineDecay(lr, max(1, cfg.stage_steps(stage)))
  return optimizer_class(learning_rate=lr)


def logged_values(main: Mapping[str, float], critic: Mapping[str, float] | None = None) -> dict:
  """The values a step logs: the main update's, then the critic's under their log names.

  Both updates return their terms, "total" and "grad_norm"; the critic's
  total is its `critic_loss` (not repeated) and its gradient norm is logged
  as "critic/grad_norm".
  """
  values = dict(main)
  for name, value in (critic or {}).items():
    if name != "total":
      values[_CRITIC_RENAMES.get(name, name)] = value
  return values


def unmet_warm_starts(stage_names, available) -> dict[str, list[str]]:
  """The networks each stage of a run continues but nothing provides.

  Args:
    stage_names: the stages of the run, in order.
    available: networks that exist before the run (e.g. loaded weights).

  Returns:
    {stage: [network, ...]} for every stage that continues a network (its
    `warm_start`) that neither `available` nor an earlier stage of the run
    provides, in run order; empty when the run is complete.
  """
  ready, unmet = set(available), {}
  for name in stage_names:
    missing = [network for network, _ in SPECS[name].warm_start if network not in ready]
    if missing:
      unmet[name] = missing
    ready.update(SPECS[name].models)
  return unmet


def stages_to_run(stage: str) -> tuple[str, ...]:
  """`all` -> the four stages in order; a single stage -> itself."""
  if stage == ALL:
    return STAGES
  if stage not in SPECS:
    raise ValueError(f"--stage={stage!r}: expected one of {STAGES + (ALL,)}.")
  return (stage,)
