"""Turns the output of scripts/train_jax.py into a training workdir.

`scripts/train_jax.py` (Keras' JAX backend) writes each network it trained
with `cascade_tf.weights_io` plus a `run.json` that holds the config and
the stages it ran. `import_run` rebuilds those networks here, loads the
weights, and writes what `train.py` would have written for the stage that
last trained each network:

    <workdir>/config.json                 the run's config; every imported
                                          stage's step count set to the steps
                                          it actually made (in place of an
                                          image budget), so it reads as
                                          complete
    <workdir>/<stage>/checkpoints/ckpt-N  the networks of that stage
    <workdir>/<stage>/metrics.jsonl       every stage's logged losses and
                                          validations (train.py's format), when
                                          the run wrote them
    <workdir>/imported.json               run.json: provenance, throughput
                                          and loss curves

so that evaluate.py, export.py and restore.py, `train.py --init_from` for
further stages, and `train.py` itself (to continue a stage, raise its steps)
read the workdir like any other. The checkpoints hold the stage's
optimizers as `train.py` builds them, freshly initialised: the JAX run's
optimizer state is not kept, so a continued stage restarts RMSProp's
averages.
"""

from __future__ import annotations

import json
import os
import shutil

import tensorflow as tf

from cascade_tf import config as config_lib
from cascade_tf import weights_io
from cascade_tf.training import loop
from cascade_tf.training import stages as stages_lib


def read_run(run_dir: str) -> dict:
  path = os.path.join(run_dir, "run.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{run_dir} has no run.json: expected the --out_dir of "
                            "scripts/train_jax.py.")
  with open(path) as f:
    return json.load(f)


def import_run(run_dir: str, workdir: str) -> dict[str, str]:
  """Writes `run_dir`'s networks into `workdir`; returns {network: checkpoint path}.

  Raises:
    FileNotFoundError: `run_dir` is not a train_jax.py output, or lacks a shard.
    ValueError: `workdir` holds other networks (see loop.save_config), or a
      manifest does not match the run's config.
  """
  run = read_run(run_dir)
  stage_steps = {s["stage"]: int(s["steps"]) for s in run["stages"]}
  last_stage = {}  # network -> the last stage that trained it.
  for stage in run["stages"]:
    for name in stage["networks"]:
      last_stage[name] = stage["stage"]
  cfg = config_lib.from_dict(run["config"])
  # The steps it made, in place of an image budget (`train.<stage>_images`) it had.
  cfg = config_lib.with_overrides(
      cfg, {**{f"train.{stage}_images": None for stage in stage_steps},
            **{f"train.{stage}_steps": steps for stage, steps in stage_steps.items()}})
  loop.save_config(cfg, workdir)

  written = {}
  for stage in sorted(set(last_stage.values()), key=stages_lib.STAGES.index):
    names = [name for name, last in last_stage.items() if last == stage]
    nets = stages_lib.build_networks(cfg, stages_lib.SPECS[stage].models)
    for name, net in nets.items():
      weights_io.load_weights(net, run_dir, name)
    checkpoint = tf.train.Checkpoint(
        step=tf.Variable(stage_steps[stage], dtype=tf.int64, trainable=False),
        batches_drawn=tf.Variable(0, dtype=tf.int64, trainable=False), **nets,
        **loop.build_optimizers(cfg, stage, nets))
    manager = tf.train.CheckpointManager(checkpoint, loop.checkpoint_dir(workdir, stage),
                                         max_to_keep=3)
    path = manager.save(checkpoint_number=stage_steps[stage])
    written.update({name: path for name in names})
  for stage in stage_steps:
    metrics_path = os.path.join(run_dir, stage, "metrics.jsonl")
    if os.path.exists(metrics_path):
      os.makedirs(loop.stage_dir(workdir, stage), exist_ok=True)
      shutil.copyfile(metrics_path, os.path.join(loop.stage_dir(workdir, stage), "metrics.jsonl"))
  with open(os.path.join(workdir, "imported.json"), "w") as f:
    json.dump({"run_dir": os.path.abspath(run_dir), "checkpoints": written, **run}, f, indent=1)
  return written

