"""The training loop: builds a stage, resumes or warm-starts it, runs its steps.

`train(config, stage, workdir)` is the library entry point behind
`train.py`. For each stage it

* builds the networks and RMSProp optimizers under the chosen
  `tf.distribute` strategy and dtype policy;
* resumes from the stage's latest checkpoint if there is one (logging one
  line with the checkpoint and step), otherwise warm-starts the networks
  from the stages it depends on (see `stages.py`), checking that every
  expected weight was restored;
* runs a plain Python loop over the global step: `n_critic` critic updates
  then one generator (or restorer, or joint) update per step; writes
  TensorBoard scalars (`stage/term`) and a `metrics.jsonl` line every
  `log_every` steps, validation PSNR (on each of `validation.sets`) and
  image summaries every `eval_every` steps (and at step 0 of a stage that
  starts from trained weights), and a checkpoint every
  `checkpoint_every` steps and at the end;
* reads the losses back from the device only when something is due
  (logging, validation, a checkpoint: `schedule.is_due`), so the host
  never waits for the device in between;
* stops with `NonFiniteLossError` when a loss it reads is NaN or Inf (at
  the latest at the next logged step, and always before a checkpoint),
  without writing a checkpoint, so the last good one stays the latest;
* answers SIGTERM and SIGINT (preemption, Ctrl-C) by finishing the current
  step, writing a checkpoint of it and raising `Interrupted`; with several
  workers, a signal to any one stops all of them at the same step;
* resumes from the newest checkpoint that reads completely: an unreadable
  one (truncated by a full disk, say) is reported and set aside, and when
  none reads it stops with `UnreadableCheckpointError` rather than start
  the stage over.

Workdir layout:

    WORKDIR/config.json                  resolved config of the latest run
    WORKDIR/<stage>/checkpoints/ckpt-N   models, optimizers, step, data position
    WORKDIR/<stage>/tensorboard/         event files
    WORKDIR/<stage>/metrics.jsonl        the logged scalars, one JSON line each

Checkpoints hold the step and the number of batches drawn from the input
stream. Corruptions and crops are a pure function of (seed, image
counter), so a resumed run continues the stream of corruptions exactly;
the shuffle order of the images is re-seeded from that counter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Any, Callable

from absl import logging
import keras
import tensorflow as tf

from cascade_tf import config as config_lib
from cascade_tf import pretrained
from cascade_tf import runtime
from cascade_tf import weights_io
from cascade_tf.data import pipeline
from cascade_tf.data import sources
from cascade_tf.models import perceptual
from cascade_tf.training import schedule
from cascade_tf.training import stages as stages_lib
from cascade_tf.training import steps as steps_lib
from cascade_tf.training import validation as validation_lib

SCRATCH = "scratch"  # --init_from value: train every network from random weights.


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or Inf; training stopped without checkpointing."""


class MissingStageError(ValueError):
  """A stage's warm start needs a stage that has no checkpoint."""


class UnreadableCheckpointError(ValueError):
  """Every checkpoint of a stage is unreadable; training does not silently start over."""


class Interrupted(Exception):
  """SIGTERM or SIGINT stopped training after a checkpoint of the current step was written."""

  def __init__(self, message: str, signal_number: int, checkpoint: str | None):
    super().__init__(message)
    self.signal_number = signal_number
    self.checkpoint = checkpoint


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def _stop_requests():
  """Turns SIGTERM and SIGINT into a request the loop answers after the current step.

  Yields a list that receives the signal numbers. Outside the main thread
  (where Python cannot install handlers) it yields a list nothing fills.
  """
  requested: list[int] = []
  if threading.current_thread() is not threading.main_thread():
    yield requested
    return

  def handler(signum, frame):
    del frame
    if not requested:
      print(f"Received {signal.Signals(signum).name}: finishing the current step, writing a "
            "checkpoint, then stopping.", file=sys.stderr, flush=True)
    requested.append(signum)

  previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
  try:
    yield requested
  finally:
    for sig, old in previous.items():
      signal.signal(sig, old)


def _stop_agreement(strategy: tf.distribute.Strategy) -> Callable[[list[int]], int | None]:
  """Returns `agree(requested) -> signal number or None`: whether the run stops now.

  One process: it stops when it has received a signal. Several workers
  (`MultiWorkerMirroredStrategy`): a signal usually reaches one of them, and
  a worker that stopped alone would leave the others waiting in their next
  collective; so every worker adds its flag in an all-reduce after each
  step, and all of them stop at the same step when any one was signalled.
  The others report SIGTERM (their own signal, if they had one).
  """
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return lambda requested: requested[0] if requested else None

  @tf.function
  def signalled_workers(flag):
    per_replica = strategy.run(lambda: tf.identity(flag))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

  def agree(requested: list[int]) -> int | None:
    if float(signalled_workers(tf.constant(1.0 if requested else 0.0))) > 0:
      return requested[0] if requested else int(signal.SIGTERM)
    return None

  return agree


@dataclasses.dataclass
class StageResult:
  """What a finished (or already complete) stage reports."""

  stage: str
  step: int
  resumed_from: str | None
  last_losses: dict[str, float]
  validation: dict[str, float]


def stage_dir(workdir: str, stage: str) -> str:
  return os.path.join(workdir, stage)


def checkpoint_dir(workdir: str, stage: str) -> str:
  return os.path.join(stage_dir(workdir, stage), "checkpoints")


def latest_checkpoint(workdir: str, stage: str) -> str | None:
  return tf.train.latest_checkpoint(checkpoint_dir(workdir, stage))


def build_optimizers(cfg: config_lib.Config, stage: str,
                     nets: dict[str, keras.Model]) -> dict[str, keras.optimizers.Optimizer]:
  """The optimizers of `stage` (`stages.new_optimizer`), built over the variables they update.

  {"optimizer": ...} updates the generator (`pretrain`, `gan`), the restorer
  (`dd`) or both (`joint`); adversarial stages add {"critic_optimizer": ...}.
  These are the objects a stage's checkpoints hold under those names.
  """

  def new_optimizer(update, variables):
    optimizer = runtime.wrap_optimizer(stages_lib.new_optimizer(cfg, stage, update),
                                       cfg.train.mixed_precision)
    optimizer.build(variables)
    return optimizer

  spec = stages_lib.SPECS[stage]
  optimizers = {"optimizer": new_optimizer(
      "main", [v for name in spec.trained for v in nets[name].trainable_variables])}
  if spec.adversarial:
    optimizers["critic_optimizer"] = new_optimizer("critic", nets["critic"].trainable_variables)
  return optimizers


# --------------------------------------------------------------------------
# Config bookkeeping.

_MODEL_SECTIONS = ("generator", "critic", "restorer")


def save_config(cfg: config_lib.Config, workdir: str) -> None:
  """Writes the resolved config to WORKDIR/config.json.

  Refuses (ValueError) when the workdir already holds a config whose
  network shapes or image size differ: its checkpoints could not be
  restored into the new networks.
  """
  tf.io.gfile.makedirs(workdir)
  path = os.path.join(workdir, "config.json")
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      old = json.load(f)
    new = json.loads(config_lib.to_json(cfg))  # Tuples become lists, as in the file.
    changed = [f"{section}.{key}" for section in _MODEL_SECTIONS
               for key in new[section] if old.get(section, {}).get(key) != new[section][key]]
    if old.get("data", {}).get("image_size") != cfg.data.image_size:
      changed.append("data.image_size")
    if changed:
      raise ValueError(
          f"--workdir={workdir} holds checkpoints of a different network ({', '.join(changed)} "
          f"differ from {path}). Use a new --workdir, or the same --preset and overrides.")
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(config_lib.to_json(cfg))


# --------------------------------------------------------------------------
# Progress, summaries.


class _Progress:
  """A one-line progress bar with steps/s and ETA on stderr."""

  def __init__(self, stage: str, start: int, target: int, every: int):
    self._stage, self._start, self._target, self._every = stage, start, target, every
    self._t0 = time.perf_counter()
    self._tty = sys.stderr.isatty()

  def update(self, step: int, values: dict[str, float], force: bool = False) -> None:
    if not (force or self._tty or step % self._every == 0):
      return
    elapsed = time.perf_counter() - self._t0
    rate = (step - self._start) / elapsed if elapsed > 0 else 0.0
    eta = (self._target - step) / rate if rate > 0 else float("nan")
    width = 24
    done = int(width * step / max(self._target, 1))
    terms = " ".join(f"{k}={v:.4g}" for k, v in values.items() if k != "grad_norm")
    line = (f"[{self._stage}] [{'=' * done}{'.' * (width - done)}] {step}/{self._target} "
            f"{rate:.2f} steps/s ETA {_format_seconds(eta)} {terms}")
    sys.stderr.write(("\r" + line + "\033[K") if self._tty else line + "\n")
    if self._tty and (force or step >= self._target):
      sys.stderr.write("\n")
    sys.stderr.flush()


def _format_seconds(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def _check_finite(stage: str, step: int, values: dict[str, float], manager,
                  log_every: int) -> None:
  bad = {k: v for k, v in values.items() if not math.isfinite(v)}
  if bad:
    last = manager.latest_checkpoint or "none yet"
    raise NonFiniteLossError(
        f"Stage {stage!r} stopped at step {step}: non-finite loss "
        f"{', '.join(f'{k}={v}' for k, v in bad.items())} (losses are read every "
        f"--log_every={log_every} steps and before every checkpoint). No checkpoint was written "
        f"for this step; the last good checkpoint is {last}. Check the input data for NaN/Inf, "
        f"or lower --lr.")


# --------------------------------------------------------------------------
# Early stopping (the validation itself: `stages.validation_scores`).


EARLY_STOP_FILE = "early_stop.json"


class _EarlyStop:
  """Ends a stage whose validation PSNR stopped improving (`train.patience`).

  Its state (best score, its step, validations since, where it stopped)
  is kept in WORKDIR/<stage>/early_stop.json, so a resumed stage counts on
  and a stage that ended early stays ended (delete the file to train it on).
  """

  def __init__(self, path: str, patience: int, min_improvement: float, write: bool):
    self.path, self.patience, self.min_improvement, self.write = (
        path, patience, min_improvement, write)
    self.state = {"best": None, "best_step": None, "stale": 0, "stopped_at": None}
    if patience > 0 and tf.io.gfile.exists(path):
      with tf.io.gfile.GFile(path) as f:
        self.state.update(json.load(f))

  @property
  def stopped_at(self) -> int | None:
    return self.state["stopped_at"] if self.patience > 0 else None

  def update(self, step: int, score: float) -> bool:
    """Records a validation score; True when the stage should end now."""
    if self.patience <= 0:
      return False
    best = self.state["best"]
    if best is None or score > best + self.min_improvement:
      self.state.update(best=score, best_step=step, stale=0)
    else:
      self.state["stale"] += 1
    if self.state["stale"] >= self.patience:
      self.state["stopped_at"] = step
    if self.write:
      with tf.io.gfile.GFile(self.path, "w") as f:
        json.dump(self.state, f)
    return self.state["stopped_at"] is not None


# --------------------------------------------------------------------------
# One stage.


def _checkpoint_prefixes(directory: str) -> list[str]:
  """The `ckpt-N` prefixes in `directory` that have an index file, newest (largest N) first."""
  numbered = []
  for index_file in glob.glob(os.path.join(glob.escape(directory), "ckpt-*.index")):
    prefix = index_file[:-len(".index")]
    number = prefix.rsplit("-", 1)[1]
    if number.isdigit():
      numbered.append((int(number), prefix))
  return [prefix for _, prefix in sorted(numbered, reverse=True)]


def _restore_newest_readable(checkpoint: tf.train.Checkpoint, directory: str,
                             stage: str, set_aside: bool = True) -> str | None:
  """Restores the newest checkpoint of `directory` that reads completely; returns its path.

  A checkpoint that fails to restore (truncated or corrupt files, e.g. a
  disk that filled during the write) is reported, moved into
  `<directory>/unreadable/` and the next older one is tried. Returns None
  when the directory holds no checkpoint at all.

  Raises:
    UnreadableCheckpointError: there are checkpoints and none of them reads:
      training never starts over from scratch by itself.
  """
  unreadable = []
  for prefix in _checkpoint_prefixes(directory):
    try:
      checkpoint.restore(prefix).assert_existing_objects_matched()
    except Exception as error:  # pylint: disable=broad-except
      # Damaged files fail in many ways (OpError, IndexError from the
      # reader, ValueError, a partial match): each means "not this one".
      reason = (str(error).strip().splitlines() or [""])[0][:300]
      message = (f"Stage {stage}: checkpoint {prefix} is unreadable ({type(error).__name__}: "
                 f"{reason}); trying the next older one.")
      logging.warning("%s", message)
      print(message, file=sys.stderr)
      unreadable.append(prefix)
      continue
    if unreadable and set_aside:  # Only the chief of a multi-worker run moves files.
      _set_aside(unreadable, directory)
      tf.compat.v1.train.update_checkpoint_state(
          directory, prefix, all_model_checkpoint_paths=_checkpoint_prefixes(directory)[::-1])
    return prefix
  if unreadable:
    raise UnreadableCheckpointError(
        f"Stage {stage}: none of the checkpoints in {directory} can be read "
        f"({', '.join(os.path.basename(p) for p in unreadable)}). Training does not start "
        f"this stage over by itself: restore those files, or move {directory} away to train "
        "the stage from its beginning.")
  return None


def _set_aside(prefixes: list[str], directory: str) -> None:
  """Moves the files of each checkpoint prefix into `<directory>/unreadable/`."""
  target = os.path.join(directory, "unreadable")
  os.makedirs(target, exist_ok=True)
  for prefix in prefixes:
    for path in glob.glob(glob.escape(prefix) + ".*"):
      shutil.move(path, os.path.join(target, os.path.basename(path)))
    logging.warning("Moved the files of %s into %s.", prefix, target)


def _warm_start(spec: stages_lib.StageSpec, nets, workdir: str, init_from: str | None,
                command_hint: str) -> list[str]:
  """Restores each network of `spec.warm_start` from its source stage.

  With init_from=`pretrained`, every generator and restorer the stage trains
  starts from the shipped cascade instead (fine-tuning; a critic starts
  from random weights). A stage without upstream networks (pretrain, dd)
  given init_from=WORKDIR starts the networks it trains from WORKDIR's
  checkpoint of the same stage (fine-tuning another run).
  """
  if init_from == pretrained.NAME:
    return _warm_start_pretrained(spec, nets)
  if init_from == SCRATCH:
    logging.info("Stage %s: --init_from=%s, every network starts from random weights.",
                 spec.name, SCRATCH)
    return []
  source_workdir = init_from or workdir
  sources = spec.warm_start
  if init_from is not None and not sources:
    # A first stage (pretrain, dd) has no upstream network: --init_from=WORKDIR
    # then fine-tunes the networks that WORKDIR's run of the same stage trained.
    sources = tuple((network, spec.name) for network in spec.trained)
  restored = []
  for network, source_stage in sources:
    path = latest_checkpoint(source_workdir, source_stage)
    if path is None:
      raise MissingStageError(
          f"Stage {spec.name!r} starts its {network} from stage {source_stage!r}, but "
          f"{checkpoint_dir(source_workdir, source_stage)} has no checkpoint. Run "
          f"`{command_hint.format(stage=source_stage)}` first, point --init_from at a workdir "
          f"that has it, or pass --init_from={SCRATCH} to train from random weights.")
    status = tf.train.Checkpoint(**{network: nets[network]}).restore(path).expect_partial()
    try:
      status.assert_existing_objects_matched()
    except AssertionError as e:
      raise ValueError(f"Checkpoint {path} does not hold a {network} matching this config: "
                       f"{e}") from None
    logging.info("Stage %s: %s warm-started from %s", spec.name, network, path)
    restored.append(f"{network}<-{path}")
  return restored


def _warm_start_pretrained(spec: stages_lib.StageSpec, nets) -> list[str]:
  shipped = pretrained.load()
  restored = []
  for name in spec.models:
    if name not in pretrained.NETWORKS:
      logging.info("Stage %s: the %s starts from random weights (the pretrained cascade has "
                   "none).", spec.name, name)
      continue
    source = getattr(shipped, name)
    new_layers = weights_io.assign_grown(
        nets[name], {v.path: keras.ops.convert_to_numpy(v.value) for v in source.weights})
    if new_layers is None:
      raise ValueError(
          f"--init_from={pretrained.NAME}: the shipped {name} (preset "
          f"{shipped.config.preset!r}, {pretrained.DIRECTORY}) does not fit this config's "
          f"{name}: train with --preset={shipped.config.preset} and its network settings "
          "(layers may only be added or widened, e.g. --set=generator.decoder_res_blocks=1 "
          "or --set=generator.bottleneck_filters=256).")
    if new_layers:
      logging.warning("Stage %s: %s warm-started from the pretrained cascade, grown by %d "
                      "new or widened layers (new weights from their initialisers): %s",
                      spec.name, name, len(new_layers), ", ".join(new_layers))
    else:
      logging.info("Stage %s: %s warm-started from the pretrained cascade", spec.name, name)
    restored.append(f"{name}<-{pretrained.NAME}")
  return restored


@runtime.keeps_global_policy
def train_stage(cfg: config_lib.Config,
                stage: str,
                workdir: str,
                *,
                init_from: str | None = None,
                command_hint: str = "python train.py --stage={stage}",
                source_train: sources.ImageSource | None = None,
                source_test: sources.ImageSource | None = None,
                strategy: tf.distribute.Strategy | None = None) -> StageResult:
  """Runs (or resumes) one stage to `cfg.stage_steps(stage)` steps.

  The stage's networks use its precision (`train.mixed_precision`, `auto`
  resolved here); the global Keras dtype policy is put back afterwards.

  With a multi-worker strategy every worker runs this; only the chief
  (`runtime.is_chief`) writes into `workdir` (checkpoints, metrics,
  TensorBoard); the others save their checkpoints into a temporary folder
  that is deleted when the stage ends (every worker must take part in a
  save), and all of them resume from the chief's checkpoints.
  """
  spec = stages_lib.SPECS[stage]
  if strategy is None:
    strategy = runtime.make_strategy(cfg.train.strategy)
  if cfg.train.mixed_precision == config_lib.AUTO:
    cfg = runtime.resolve_config_precision(cfg, "train")
  t = cfg.train
  target = cfg.stage_steps(stage)
  chief = runtime.is_chief(strategy)
  runtime.set_precision(t.mixed_precision)
  runtime.set_seed(t.seed)
  global_batch = cfg.stage_batch_size(stage)
  if global_batch % strategy.num_replicas_in_sync:
    raise ValueError(f"--batch_size={global_batch} must be a multiple of the "
                     f"{strategy.num_replicas_in_sync} replicas of --strategy={t.strategy}.")
  lr = cfg.stage_lr(stage)

  with strategy.scope():
    nets = stages_lib.build_networks(cfg, spec.models)
    vgg = None
    if spec.adversarial and cfg.loss.lambda_per > 0:
      vgg = perceptual.build_vgg_features(cfg.loss.vgg_weights,
                                         cfg.loss.perceptual_size or cfg.data.image_size)

    optimizers = build_optimizers(cfg, stage, nets)
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    batches_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="batches_drawn")

  checkpoint = tf.train.Checkpoint(step=step_var, batches_drawn=batches_var, **nets,
                                   **optimizers)
  resumed_from = _restore_newest_readable(checkpoint, checkpoint_dir(workdir, stage), stage,
                                          set_aside=chief)
  save_dir = checkpoint_dir(workdir, stage) if chief else tempfile.mkdtemp(prefix="cascade_tf-")
  manager = tf.train.CheckpointManager(checkpoint, save_dir, max_to_keep=3)
  try:
    if resumed_from:
      message = f"Resumed stage {stage} from {resumed_from} at step {int(step_var.numpy())}."
      logging.info("%s", message)
      print(message, file=sys.stderr)
      warm_started = []
    else:
      warm_started = _warm_start(spec, nets, workdir, init_from, command_hint)

    step = int(step_var.numpy())
    summary_writer = (tf.summary.create_file_writer(os.path.join(stage_dir(workdir, stage),
                                                                 "tensorboard"))
                      if chief else tf.summary.create_noop_writer())
    metrics_path = os.path.join(stage_dir(workdir, stage), "metrics.jsonl")
    if step >= target:
      logging.info("Stage %s is already complete (step %d of %d).", stage, step, target)
      return StageResult(stage, step, resumed_from, {}, {})
    early_stop = _EarlyStop(os.path.join(stage_dir(workdir, stage), EARLY_STOP_FILE),
                            t.patience, t.min_improvement, write=chief)
    if early_stop.stopped_at is not None:
      logging.info("Stage %s ended early at step %d (no validation gain over %.2f dB in %d "
                   "validations); delete %s to train it further.", stage, early_stop.stopped_at,
                   t.min_improvement, t.patience, early_stop.path)
      return StageResult(stage, step, resumed_from, {}, {})

    train_source = source_train or sources.load_source(cfg.data, "train")
    test_source = source_test or sources.load_source(cfg.data, "test")
    track = cfg.stage_track(stage)
    val_sets = validation_lib.sets(cfg, stage)
    dataset = pipeline.make_dataset(cfg.data, split="train", track=track,
                                    batch_size=global_batch, training=True, seed=t.seed,
                                    source=train_source,
                                    start_index=int(batches_var.numpy()) * global_batch)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    val_batches = {
        (vtrack, split): pipeline.validation_batch(
            cfg.data, vtrack, validation_lib.num_images(cfg, split), split=split,
            source=test_source if split == "test" else train_source)
        for vtrack, split in val_sets}

    jit = runtime.resolve_jit_compile(t.jit_compile, strategy)
    wired = stages_lib.build_stage(cfg, stage, global_batch_size=global_batch, nets=nets, vgg=vgg)
    main_step = steps_lib.make_step(strategy, wired.main, optimizers[wired.main.optimizer],
                                    jit_compile=jit)
    critic_step = None
    if wired.critic is not None:
      critic_step = steps_lib.make_step(strategy, wired.critic,
                                        optimizers[wired.critic.optimizer], jit_compile=jit)

    logging.info("Stage %s: steps %d -> %d, global batch %d on %d replica(s), lr %g, track %s "
                 "(validation: %s), XLA %s.", stage, step, target, global_batch,
                 strategy.num_replicas_in_sync, lr, track,
                 ", ".join(validation_lib.key(*s) for s in val_sets), "on" if jit else "off")

    def validate(at_step: int) -> dict[str, float]:
      """Scores every validation set at `at_step`, logs it; returns the primary set's scores."""
      primary_scores = {}
      for vset in val_sets:
        scores, outputs = stages_lib.validation_scores(wired, val_batches[vset])
        primary = vset == val_sets[0]
        prefix = f"{stage}/val_" if primary else f"{stage}/val_{validation_lib.key(*vset)}/"
        with summary_writer.as_default(step=at_step):
          for name, value in scores.items():
            tf.summary.scalar(prefix + name, value)
          if primary:
            val_batch = val_batches[vset]
            tf.summary.image(f"{stage}/corrupted", val_batch["corrupted"], max_outputs=4)
            tf.summary.image(f"{stage}/clean", val_batch["clean"], max_outputs=4)
            for name, images in outputs.items():
              tf.summary.image(f"{stage}/{name}", tf.clip_by_value(images, 0.0, 1.0),
                               max_outputs=4)
        if chief:
          with tf.io.gfile.GFile(metrics_path, "a") as f:
            f.write(json.dumps({**validation_lib.row(at_step, *vset, scores),
                                "time": time.time()}) + "\n")
        logging.info("Stage %s step %d: validation %s", stage, at_step,
                     validation_lib.summary(*vset, scores))
        if primary:
          primary_scores = scores
      return primary_scores

    progress = _Progress(stage, step, target, t.log_every)
    values: dict[str, float] = {}
    validation: dict[str, float] = {}
    if warm_started and step == 0 and t.eval_every > 0:
      # The starting point of a warm-started stage (a fine-tune) as step 0 of its
      # curves, so that they show whether the stage improves on where it began.
      validation = validate(step)
      if early_stop.state["best"] is None:
        early_stop.update(step, validation[f"psnr_{spec.outputs[-1]}"])
    window_start, window_steps = time.perf_counter(), 0
    agree_to_stop = _stop_agreement(strategy)
    ended_early = False
    with _stop_requests() as stop_requested:
      while step < target and not ended_early:
        critic_values = {}
        if critic_step is not None:
          for _ in range(t.n_critic):
            critic_values = critic_step(next(iterator))
          batches_var.assign_add(t.n_critic)
        main_values = main_step(next(iterator))
        batches_var.assign_add(1)
        step += 1
        step_var.assign(step)
        window_steps += 1
        log_due = schedule.is_due(step, t.log_every, target)
        eval_due = schedule.is_due(step, t.eval_every, target)
        # SIGTERM / SIGINT (to any worker): checkpoint this step, then stop.
        stop_signal = agree_to_stop(stop_requested)
        stopping = stop_signal is not None
        checkpoint_due = schedule.is_due(step, t.checkpoint_every, target) or stopping
        if not (log_due or eval_due or checkpoint_due):
          # The losses stay on the device: reading them back would make the host
          # wait for every step (a GPU would idle between steps).
          continue
        values = {k: float(v) for k, v in
                  stages_lib.logged_values(main_values, critic_values).items()}
        # Before any checkpoint is written: a non-finite step never becomes one.
        _check_finite(stage, step, values, manager, t.log_every)

        if log_due:
          elapsed = time.perf_counter() - window_start
          rates = {"steps_per_s": window_steps / elapsed,
                   "images_per_s": window_steps * global_batch / elapsed}
          window_start, window_steps = time.perf_counter(), 0
          with summary_writer.as_default(step=step):
            for name, value in {**values, **rates}.items():
              tf.summary.scalar(f"{stage}/{name}", value)
          if chief:
            with tf.io.gfile.GFile(metrics_path, "a") as f:
              f.write(json.dumps({"step": step, "time": time.time(), **values, **rates}) + "\n")
        if eval_due:
          validation = validate(step)
          if early_stop.update(step, validation[f"psnr_{spec.outputs[-1]}"]):
            ended_early = checkpoint_due = True
            logging.info("Stage %s ends early at step %d: its validation PSNR has not gained "
                         "%.2f dB in %d validations (best %.2f dB at step %d).", stage, step,
                         t.min_improvement, t.patience, early_stop.state["best"],
                         early_stop.state["best_step"])
        if checkpoint_due:
          path = manager.save(checkpoint_number=step)
          logging.info("Stage %s step %d: checkpoint %s", stage, step, path)
        progress.update(step, values, force=step == target or stopping or ended_early)
        if stopping:
          summary_writer.flush()
          cause = (signal.Signals(stop_signal).name if stop_requested
                   else "a signal to another worker")
          where = f"checkpoint {path} holds it" if chief else "the chief's checkpoint holds it"
          raise Interrupted(f"Stage {stage} stopped by {cause} at step {step} of {target}; "
                            f"{where}. Run the same command again to resume from there.",
                            stop_signal, path if chief else None)
    summary_writer.flush()
    return StageResult(stage, step, resumed_from, values, validation)
  finally:
    if not chief:  # A non-chief worker's checkpoints are thrown away.
      shutil.rmtree(save_dir, ignore_errors=True)


def train(cfg: config_lib.Config, stage: str, workdir: str, *, init_from: str | None = None,
          command_hint: str = "python train.py --stage={stage}") -> list[StageResult]:
  """Runs `stage` (or all four with `all`) in `workdir`; saves the config first."""
  names = stages_lib.stages_to_run(stage)
  if init_from is not None and len(names) > 1:
    raise ValueError("--init_from applies to a single --stage, not to --stage=all.")
  # First: a multi-worker strategy must exist before TensorFlow runs anything.
  strategy = runtime.make_strategy(cfg.train.strategy)
  # `auto` precision resolved once, on this device, and recorded in config.json.
  cfg = runtime.resolve_config_precision(cfg, "train")
  if runtime.is_chief(strategy):
    save_config(cfg, workdir)
  results = []
  train_source = sources.load_source(cfg.data, "train")
  test_source = sources.load_source(cfg.data, "test")
  for name in names:
    # With `all`, each stage warm-starts from the ones this run has just trained.
    results.append(train_stage(cfg, name, workdir, init_from=init_from,
                               command_hint=command_hint, source_train=train_source,
                               source_test=test_source, strategy=strategy))
  pipeline.log_skipped(train_source)
  pipeline.log_skipped(test_source)
  return results


def summarize(results: list[StageResult]) -> dict[str, Any]:
  """A JSON-able summary of a run's stage results."""
  return {r.stage: dataclasses.asdict(r) for r in results}
