"""Trains the cascade's networks with Keras' JAX backend, on a machine without TensorFlow.

`train.py` is the project's trainer (TensorFlow, tf.data, tf.distribute,
checkpoints that resume). This script exists for one situation: a GPU
machine that has JAX but no TensorFlow and cannot install it (this
project's lent GPUs: their image holds JAX with CUDA, and a TensorFlow GPU
install is far larger than what may be sent to them). It builds the very
same stages as train.py (`cascade_tf.training.stages.build_stage`: the
networks, the objectives of `training/objectives.py`, what each update
trains), takes their gradients with `cascade_tf.training.jax_steps`, and
writes the weights with `cascade_tf.weights_io`;
`scripts/import_weights.py` then turns them into a workdir for
evaluate.py, export.py and restore.py. What this script owns is the data
feed and the loop.

What is the same as train.py: the stages (`pretrain`, `gan`, `dd`,
`joint`), their corruption tracks (the config's `train.<stage>_track`,
`blind` included), their batch sizes, eq. (7)'s MSE and adversarial terms
(or L1), the optimizers (Keras' own, `stages.new_optimizer`, through
`stateless_apply`), the WGAN critic updates
with weight clipping, `n_critic` fresh batches per critic phase, the
critic's fakes drawn from the generator in training mode, batch-norm
statistics, and random square crops of 0.6-1x the short side, resized to S
and flipped (or put through any symmetry of the square: `data.train_augment`;
and their RGB channels reordered: `data.train_channel_permute`;
`cascade_tf/data/augment.py`). What differs:

* data comes from a bundle made by `scripts/prepare_jax_run.py` (images
  pre-shrunk to the largest crop scale; blur kernels and noise levels
  drawn there by the package's TensorFlow sampler, a bank of 4,096 draws
  by default, and, for holes other than the centre square, 2,048 masks,
  picked with replacement here; the noise field and the `blind` tracks'
  choices are drawn on the device); crops are resized with PIL's anti-aliased bilinear
  filter instead of tf.image.resize;
* no perceptual term (VGG16 is not available there): `--lambda_per` must
  be 0;
* a stage ends at its step count or its time budget (`--stage_seconds`),
  whichever comes first; there is no resuming inside a stage, but
  `--init_dir` warm-starts from an earlier run's weights (as train.py, a
  stage that continues another's networks refuses to start from random
  weights unless `--from_scratch`);
* NaN or Inf losses are checked at every logged step (`--log_every`), not
  at every step, to keep the device busy;
* validation (`--eval_every`, the config's `train.eval_every`) scores the
  bundle's stored batches (`validation.npz`: train.py's own validation
  batch of each set of `training/validation.py`, see prepare_jax_run.py) with the same
  `stages.validation_scores`; no early stopping and no image summaries. A
  bundle made without them trains without validation (a line says so).

Every logged step and every validation is appended to
`<out_dir>/<stage>/metrics.jsonl` in train.py's format, which
`scripts/import_weights.py` copies into the workdir: `training_report.py`
and `report.plot_runs` draw a JAX run's curves like any other.

    KERAS_BACKEND=jax python scripts/train_jax.py --bundle=/tmp/jax_bundle \
        --out_dir=/tmp/jax_run --preset=paper --lambda_per=0 \
        --stages=pretrain,gan --stage_seconds=pretrain=300,gan=200
    # The shipped model's preset (make the bundle with --preset=photo: its masks):
    KERAS_BACKEND=jax python scripts/train_jax.py --bundle=/tmp/photo_bundle \
        --out_dir=/tmp/photo_run --preset=photo --lambda_per=0 --stages=pretrain,dd

It writes `<out_dir>/<network>.json` + shards for every network it trained
or warm-started, and `<out_dir>/run.json` (config, stages, steps, seconds,
throughput and the loss curve), re-written after every stage.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import queue
import sys
import threading
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import jax
import jax.numpy as jnp
import keras
import numpy as np
from PIL import Image

from cascade_tf import cli
from cascade_tf import config as config_lib
from cascade_tf import weights_io
from cascade_tf.data import augment as augment_lib
from cascade_tf.training import jax_steps
from cascade_tf.training import schedule
from cascade_tf.training import stages as stages_lib
from cascade_tf.training import validation as validation_lib

STAGES = stages_lib.STAGES
BANK_FILE = "corruption_bank.npz"
VALIDATION_FILE = "validation.npz"  # Written by scripts/prepare_jax_run.py.
CONFIG_FLAGS = ("image_size", "hole_size", "mask_family", "steps", "batch_size", "lr", "lambda_mse",
                "lambda_per", "lambda_adv", "n_critic", "clip", "seed", "eval_every")

_BUNDLE = flags.DEFINE_string("bundle", None, "Folder written by scripts/prepare_jax_run.py.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where weights and run.json are written.")
_STAGES = flags.DEFINE_list("stages", ["pretrain", "gan", "dd", "joint"], "Stages, in order.")
_STAGE_SECONDS = flags.DEFINE_list(
    "stage_seconds", [], "Time budget per stage, stage=seconds (e.g. pretrain=300); a stage "
    "without one runs its configured steps.")
_INIT_DIR = flags.DEFINE_string("init_dir", None, "Warm start: an earlier --out_dir (or "
                                "cascade_tf/pretrained) whose weights are loaded for every "
                                "network they exist for; a network may have grown since "
                                "(generator.decoder_res_blocks, generator.bottleneck_filters).")
_FROM_SCRATCH = flags.DEFINE_bool(
    "from_scratch", False, "Let a stage start from random weights where train.py would warm-"
    "start it (gan: the generator; joint: all three networks); default: refuse.")
_STORE_DTYPE = flags.DEFINE_list("store_dtype", [], "network=dtype to store a network's "
                                 "weights narrower (e.g. critic=float16); default float32.")
_SHARD_MIB = flags.DEFINE_float("shard_mib", 15.0, "Largest weights shard, MiB (a transfer "
                                 "limit of 16 MiB per file fits 15.9).")
_LOG_EVERY = flags.DEFINE_integer("log_every", 50, "Steps between logged losses.")
_LOADER_THREADS = flags.DEFINE_integer("loader_threads", 8, "Threads cropping images.")
cli.define_flags(flags, CONFIG_FLAGS)


# --------------------------------------------------------------------------
# Data: random crops on the host, corruptions on the device.


class CropSampler:
  """Batches of random square crops [B, S, S, 3] float32 in [0, 1], in a thread."""

  def __init__(self, image_dir: str, size: int, min_fraction: float, batch_size: int,
               seed: int, threads: int, depth: int = 6, augment: str = "flip",
               channel_permute: float = 0.0):
    self.images, self.skipped = [], []
    for name in sorted(os.listdir(image_dir)):
      path = os.path.join(image_dir, name)
      try:
        with Image.open(path) as image:
          image = image.convert("RGB")
          if min(image.size) < size:  # The upscale rule of DataConfig.small_image_rule.
            scale = size / min(image.size)
            image = image.resize((math.ceil(image.width * scale), math.ceil(image.height * scale)),
                                 Image.Resampling.BICUBIC)
          image.load()
          self.images.append(image)
      except (OSError, ValueError) as error:
        self.skipped.append(f"{path}: {error}")
    for line in self.skipped:
      print(f"skipped unreadable image {line}", file=sys.stderr)
    if not self.images:
      raise ValueError(f"--bundle: no readable image in {image_dir}.")
    self.size, self.min_fraction, self.batch_size = size, min_fraction, batch_size
    self.num_transforms = augment_lib.num_transforms(augment)  # data.train_augment
    self.channel_permute = channel_permute  # data.train_channel_permute
    self.rng = np.random.default_rng(seed)
    self.pool = concurrent.futures.ThreadPoolExecutor(threads)
    self.queue: queue.Queue = queue.Queue(depth)
    self.stopped = threading.Event()
    self.thread = threading.Thread(target=self._fill, daemon=True)
    self.thread.start()

  def _crop(self, args):
    index, u_side, u_top, u_left, transform, order = args
    image = self.images[index]
    short = min(image.size)
    low = min(short, max(self.size, math.ceil(self.min_fraction * short)))
    side = low + int(u_side * (short - low + 1))
    top = int(u_top * (image.height - side + 1))
    left = int(u_left * (image.width - side + 1))
    crop = image.resize((self.size, self.size), Image.Resampling.BILINEAR,
                        box=(left, top, left + side, top + side), reducing_gap=None)
    array = np.asarray(crop, np.float32) / 255.0
    return augment_lib.channel_order_np(augment_lib.dihedral_np(array, transform), order)

  def _fill(self):
    while not self.stopped.is_set():
      b = self.batch_size
      draws = [self.rng.integers(0, len(self.images), b), self.rng.random(b),
               self.rng.random(b), self.rng.random(b),
               self.rng.integers(0, self.num_transforms, b)]
      # Drawn only when on, so that a run without it samples exactly as before.
      orders = (augment_lib.draw_channel_order_np(self.rng, self.channel_permute, b)
                if self.channel_permute > 0 else np.zeros(b, np.int64))
      draws = zip(*draws, orders)
      batch = np.stack(list(self.pool.map(self._crop, draws)))
      while not self.stopped.is_set():
        try:
          self.queue.put(batch, timeout=0.5)
          break
        except queue.Full:
          continue

  def set_batch_size(self, batch_size: int) -> None:
    """Later batches have `batch_size` crops (batches already queued are dropped)."""
    self.batch_size = batch_size

  def next(self) -> np.ndarray:
    while True:
      batch = self.queue.get()
      if batch.shape[0] == self.batch_size:
        return batch

  def close(self):
    self.stopped.set()
    self.pool.shutdown(wait=False, cancel_futures=True)


def load_bank(bundle: str, data_cfg) -> tuple[dict, str]:
  """(the bundle's corruption parameters as device arrays, the family of its masks).

  UsageError if the bank is missing or does not fit the config.
  """
  path = os.path.join(bundle, BANK_FILE)
  if not os.path.exists(path):
    raise app.UsageError(f"--bundle: {path} is missing (scripts/prepare_jax_run.py).")
  with np.load(path) as data:
    bank = {name: jnp.asarray(data[name], jnp.float32) for name in ("blur_kernel", "noise_sigma")}
    family = "centre"
    if "mask_bits" in data.files:
      family = str(data["mask_family"])
      size = data_cfg.image_size
      if data["mask_bits"].shape[1:] != (size, size // 8):
        raise app.UsageError(f"{path}: masks of {data['mask_bits'].shape[1]} px, the config "
                             f"trains at {size} px: make the bundle with the same --image_size.")
      masks = np.unpackbits(data["mask_bits"], axis=-1)[..., :size]
      bank["mask"] = jnp.asarray(masks[..., None], jnp.float32)
  if bank["blur_kernel"].shape[1:] != (data_cfg.blur_kernel_size,) * 2:
    raise app.UsageError(f"{path}: kernels {bank['blur_kernel'].shape[1:]}, the config wants "
                         f"{data_cfg.blur_kernel_size}x{data_cfg.blur_kernel_size}.")
  return bank, family


def load_validation(bundle: str) -> dict[str, dict[str, np.ndarray]]:
  """{set: {"clean", "corrupted", "mask"}} from the bundle's validation.npz ({} without one).

  A set is named by `validation.key`: its track, or `<track>@train`.
  """
  path = os.path.join(bundle, VALIDATION_FILE)
  if not os.path.exists(path):
    return {}
  batches = {}
  with np.load(path) as data:
    for key in data.files:
      name_of_set, name = key.rsplit(".", 1)
      batches.setdefault(name_of_set, {})[name] = data[key]
  return batches


class MetricsLog:
  """`<out_dir>/<stage>/metrics.jsonl`, started afresh for the stage (no resuming inside one)."""

  def __init__(self, out_dir: str, stage: str):
    os.makedirs(os.path.join(out_dir, stage), exist_ok=True)
    self.path = os.path.join(out_dir, stage, "metrics.jsonl")
    open(self.path, "w").close()  # pylint: disable=consider-using-with

  def write(self, row: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps({**row, "time": time.time()}) + "\n")


def run_stage(stage: str, models: dict[str, keras.Model], sampler: CropSampler, bank, cfg,
              seconds: float | None, key, log_every: int, validation: dict | None = None,
              out_dir: str | None = None, warm_started: bool = False) -> dict:
  """Trains `stage` for its steps or `seconds`; writes the weights back into `models`.

  `validation` is the bundle's {set: batch} (`load_validation`); the stage
  is validated every `train.eval_every` steps and at its end, on each of
  its `validation.sets` the bundle holds, when it holds the primary one,
  and, when it starts from trained weights (`warm_started`), at step 0 too
  (as train.py). With `out_dir`, its metrics.jsonl is written.
  """
  spec = stages_lib.SPECS[stage]
  wired = stages_lib.build_stage(cfg, stage, global_batch_size=cfg.stage_batch_size(stage),
                                 nets={name: models[name] for name in spec.models})
  lr = cfg.stage_lr(stage)
  target = cfg.stage_steps(stage)
  track = cfg.stage_track(stage)
  wanted = validation_lib.sets(cfg, stage)
  primary = wanted[0]
  val_sets = [vset for vset in wanted if validation_lib.key(*vset) in (validation or {})]
  eval_every = cfg.train.eval_every if primary in val_sets else 0
  if primary not in val_sets and cfg.train.eval_every > 0:
    print(f"{stage}: no validation batch for track {primary[0]!r} in the bundle (remake it with "
          "scripts/prepare_jax_run.py --validation): no validation", flush=True)
  missing = [validation_lib.key(*vset) for vset in wanted if vset not in val_sets]
  if eval_every and missing:
    print(f"{stage}: the bundle has no validation batch for {', '.join(missing)} (remake it "
          "with this config): validated without them", flush=True)
  log = MetricsLog(out_dir, stage) if out_dir else None
  sampler.set_batch_size(cfg.stage_batch_size(stage))
  validations, eval_seconds = [], 0.0

  def validate(step, values):
    """Scores the current weights on the validation sets; returns the seconds it took."""
    began = time.perf_counter()
    jax_steps.write_back(wired, values)
    for vset in val_sets:
      scores, _ = stages_lib.validation_scores(wired, validation[validation_lib.key(*vset)])
      if vset == primary:
        validations.append({"step": step, **scores})
      if log:
        log.write(validation_lib.row(step, *vset, scores))
      print(f"{stage} step {step}: validation {validation_lib.summary(*vset, scores)}",
            flush=True)
    return time.perf_counter() - began

  def compiled(update):
    optimizer, optimizer_values = jax_steps.new_optimizer(cfg, stage, update)
    update_fn = jax_steps.make_update(wired, update, optimizer)

    @jax.jit
    def step(values, optimizer_values, clean, key, bank):
      batch = jax_steps.sample_corruptions(clean, key, bank, track, cfg.data)
      return update_fn(values, optimizer_values, batch)

    return step, optimizer_values

  main_step, main_opt = compiled(wired.main)
  critic_step, critic_opt = compiled(wired.critic) if wired.critic is not None else (None, None)
  values = [v.value for v in jax_steps.stage_variables(wired)]
  curve, step, batches = [], 0, 0
  window_start, window_steps, compile_seconds = None, 0, None
  if eval_every and warm_started:
    validate(0, values)  # Where a fine-tune starts; not in the timed steps.
  start = time.perf_counter()
  while step < target:
    critic_values = None
    if critic_step is not None:
      for _ in range(cfg.train.n_critic):
        key, sub = jax.random.split(key)
        values, critic_opt, critic_values = critic_step(values, critic_opt, sampler.next(), sub,
                                                          bank)
        batches += 1
    key, sub = jax.random.split(key)
    values, main_opt, main_values = main_step(values, main_opt, sampler.next(), sub, bank)
    batches += 1
    step += 1
    if step == 1:
      jax.block_until_ready(values)
      compile_seconds = time.perf_counter() - start
      window_start, window_steps = time.perf_counter(), 0
      first = {k: float(v) for k, v in
               stages_lib.logged_values(main_values, critic_values).items()}
      _check_finite(stage, step, first)
      curve.append({"step": step, **first})
      if eval_every and step == target:  # A one-step stage is validated too.
        eval_seconds += validate(step, values)
      continue
    window_steps += 1
    elapsed = time.perf_counter() - start  # Validations count in the time budget.
    out_of_time = seconds is not None and elapsed >= seconds
    if schedule.is_due(step, log_every, target) or out_of_time:
      logged = {k: float(v) for k, v in
                stages_lib.logged_values(main_values, critic_values).items()}
      _check_finite(stage, step, logged)
      window = time.perf_counter() - window_start
      rate = window_steps / window
      curve.append({"step": step, "seconds": round(elapsed, 1), **logged})
      if log:
        images = window_steps * cfg.stage_batch_size(stage)
        log.write({"step": step, **logged, "steps_per_s": rate, "images_per_s": images / window})
      print(f"{stage} step {step}/{target} {elapsed:.0f}s {rate:.2f} steps/s "
            + " ".join(f"{k}={v:.4g}" for k, v in logged.items()), flush=True)
    if eval_every and (schedule.is_due(step, eval_every, target) or out_of_time):
      spent = validate(step, values)
      eval_seconds += spent
      window_start += spent  # Validation time counts in no throughput.
    if out_of_time:
      break
  jax.block_until_ready(values)
  wall = time.perf_counter() - start
  jax_steps.write_back(wired, values)
  timed_steps = max(step - 1, 1)
  timed_seconds = max(wall - (compile_seconds or 0.0) - eval_seconds, 1e-9)
  images_per_step = cfg.stage_batch_size(stage) * (1 + (cfg.train.n_critic if critic_step else 0))
  return {"stage": stage, "track": track, "batch_size": cfg.stage_batch_size(stage), "networks": list(spec.models),
          "steps": step, "target_steps": target,
          "lr": lr, "batches": batches, "seconds": round(wall, 1),
          "first_step_seconds": round(compile_seconds or 0.0, 1),
          "steps_per_s": round(timed_steps / timed_seconds, 3),
          "images_per_s": round(timed_steps * images_per_step / timed_seconds, 1),
          "validation_seconds": round(eval_seconds, 1), "curve": curve,
          "validation": validations}


def _check_finite(stage, step, values):
  bad = [k for k, v in values.items() if not math.isfinite(v)]
  if bad:
    raise FloatingPointError(f"Stage {stage} step {step}: non-finite {', '.join(bad)} "
                             f"({values}). Weights of the last finished stage are in --out_dir.")


def _parse_pairs(items, flag, convert):
  pairs = {}
  for item in items:
    if "=" not in item:
      raise app.UsageError(f"--{flag}={item!r}: expected name=value.")
    name, value = item.split("=", 1)
    try:
      pairs[name.strip()] = convert(value.strip())
    except ValueError as error:
      raise app.UsageError(f"--{flag}={item!r}: {error}") from None
  return pairs


def main(argv):
  del argv
  if keras.backend.backend() != "jax":
    raise app.UsageError(f"Keras runs on {keras.backend.backend()!r}: set KERAS_BACKEND=jax.")
  if not _BUNDLE.value or not _OUT_DIR.value:
    raise app.UsageError("--bundle and --out_dir are required.")
  cfg = cli.config_from_flags(flags.FLAGS, CONFIG_FLAGS)
  if cfg.loss.lambda_per > 0:
    raise app.UsageError("--lambda_per must be 0: the JAX trainer has no VGG16 perceptual term "
                         "(train.py has; use it where TensorFlow is available).")
  stages = [s.strip() for s in _STAGES.value]
  unknown = [s for s in stages if s not in STAGES]
  if unknown:
    raise app.UsageError(f"--stages: unknown {unknown}; expected some of {STAGES}.")
  seconds = _parse_pairs(_STAGE_SECONDS.value, "stage_seconds", float)
  store_dtype = _parse_pairs(_STORE_DTYPE.value, "store_dtype", str)
  bank, mask_family = load_bank(_BUNDLE.value, cfg.data)
  validation = load_validation(_BUNDLE.value)

  needed = sorted({n for s in stages for n in stages_lib.SPECS[s].models})
  init = {name: _INIT_DIR.value for name in needed if _INIT_DIR.value and os.path.exists(
      weights_io.manifest_path(_INIT_DIR.value, name))}
  unmet = stages_lib.unmet_warm_starts(stages, set(init))
  if unmet and not _FROM_SCRATCH.value:
    stage, missing = next(iter(unmet.items()))
    raise app.UsageError(
        f"Stage {stage} continues the {', '.join(missing)} of an earlier stage: run that stage "
        "first in --stages, pass --init_dir with its weights, or --from_scratch.")
  keras.utils.set_random_seed(cfg.train.seed)
  for stage in stages:
    try:
      jax_steps.check_supported(cfg, stage, mask_family)
    except ValueError as error:
      raise app.UsageError(str(error)) from None
  models = stages_lib.build_networks(cfg, needed)
  for name in init:
    # The networks may have grown since (new decoder blocks, a wider bottleneck): the new
    # weights start so that each network computes what the saved one did.
    grown = weights_io.load_weights(models[name], _INIT_DIR.value, name, grow=True)["grown"]
    if grown:
      print(f"{name}: grown from {_INIT_DIR.value} by {len(grown)} new or widened layers: "
            f"{', '.join(grown)}", flush=True)
  sampler = CropSampler(os.path.join(_BUNDLE.value, "images"), cfg.data.image_size,
                        cfg.data.train_crop_min_fraction, cfg.train.batch_size, cfg.train.seed,
                        _LOADER_THREADS.value, augment=cfg.data.train_augment,
                        channel_permute=cfg.data.train_channel_permute)
  devices = [str(d) for d in jax.devices()]
  print(f"JAX {jax.__version__}, Keras {keras.__version__}, devices {devices}; "
        f"{len(sampler.images)} images ({len(sampler.skipped)} skipped)", flush=True)
  os.makedirs(_OUT_DIR.value, exist_ok=True)
  run = {"config": config_lib.to_dict(cfg), "jax": jax.__version__, "keras": keras.__version__,
         "devices": devices, "images": len(sampler.images), "skipped_images": len(sampler.skipped),
         "init_from": init, "stages": []}
  key = jax.random.key(cfg.train.seed)
  trained = set(init)  # Networks holding trained weights (for the step-0 validation).
  try:
    for stage in stages:
      key, sub = jax.random.split(key)
      spec = stages_lib.SPECS[stage]
      result = run_stage(stage, models, sampler, bank, cfg, seconds.get(stage), sub,
                         _LOG_EVERY.value, validation, _OUT_DIR.value,
                         warm_started=any(name in trained for name in spec.trained))
      trained.update(spec.models)
      run["stages"].append(result)
      for name in spec.models:
        weights_io.save_weights(models[name], _OUT_DIR.value, name,
                                store_dtype=store_dtype.get(name),
                                max_bytes=int(_SHARD_MIB.value * 2**20))
      with open(os.path.join(_OUT_DIR.value, "run.json"), "w") as f:
        json.dump(run, f, indent=1)
      print(f"stage {stage}: {result['steps']} steps in {result['seconds']} s "
            f"({result['images_per_s']} images/s after a {result['first_step_seconds']} s "
            "first step); weights saved", flush=True)
  finally:
    sampler.close()


if __name__ == "__main__":
  app.run(main)
