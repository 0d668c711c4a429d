"""Trains the cascade's networks with Keras' JAX backend, on a machine without TensorFlow.

`train.py` is the project's trainer (TensorFlow, tf.data, tf.distribute,
checkpoints that resume). This script exists for one situation: a GPU
machine that has JAX but no TensorFlow and cannot install it (this
project's lent GPUs: their image holds JAX with CUDA, and a TensorFlow GPU
install is far larger than what may be sent to them). It builds the very
same Keras functional networks (`cascade_tf.models`), trains them with the
same losses and updates as `cascade_tf/training/steps.py`, and writes their
weights with `cascade_tf.weights_io`; `scripts/import_weights.py` then turns
them into a workdir for evaluate.py, export.py and restore.py.

What is the same as train.py: the stages (`pretrain`, `gan`, `dd`,
`joint`), their corruption tracks, eq. (7)'s MSE and adversarial terms,
RMSProp (Keras' own, through `stateless_apply`), the WGAN critic updates
with weight clipping, `n_critic` fresh batches per critic phase, the
critic's fakes drawn from the generator in training mode, batch-norm
statistics, and random square crops of 0.6-1x the short side, resized to S
and flipped. What differs:

* data comes from a bundle made by `scripts/prepare_jax_run.py` (images
  pre-shrunk to the largest crop scale; blur kernels drawn there by the
  package's TensorFlow sampler, a bank of 4,096 by default, sampled with
  replacement here); crops are resized with PIL's anti-aliased bilinear
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
* no validation during training: score the result with evaluate.py.

    KERAS_BACKEND=jax python scripts/train_jax.py --bundle=/tmp/jax_bundle \
        --out_dir=/tmp/jax_run --preset=paper --lambda_per=0 \
        --stages=pretrain,gan --stage_seconds=pretrain=300,gan=200

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
from cascade_tf.models.critic import build_critic
from cascade_tf.models.generator import build_generator
from cascade_tf.models.restorer import build_restorer
from cascade_tf.training import schedule

STAGES = ("pretrain", "gan", "dd", "joint")
TRACK = {"pretrain": "inpaint", "gan": "inpaint", "dd": "restore", "joint": "joint"}
# Networks a stage continues from an earlier stage (stages.SPECS' warm starts).
WARM_START = {"pretrain": (), "gan": ("generator",), "dd": (),
              "joint": ("generator", "critic", "restorer")}
NETWORKS = {"pretrain": ("generator",), "gan": ("generator", "critic"), "dd": ("restorer",),
            "joint": ("generator", "restorer", "critic")}
CONFIG_FLAGS = ("image_size", "hole_size", "steps", "batch_size", "lr", "lambda_mse",
                "lambda_per", "lambda_adv", "n_critic", "clip", "seed")

_BUNDLE = flags.DEFINE_string("bundle", None, "Folder written by scripts/prepare_jax_run.py.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where weights and run.json are written.")
_STAGES = flags.DEFINE_list("stages", ["pretrain", "gan", "dd", "joint"], "Stages, in order.")
_STAGE_SECONDS = flags.DEFINE_list(
    "stage_seconds", [], "Time budget per stage, stage=seconds (e.g. pretrain=300); a stage "
    "without one runs its configured steps.")
_INIT_DIR = flags.DEFINE_string("init_dir", None, "Warm start: an earlier --out_dir whose "
                                "weights are loaded for every network they exist for.")
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
               seed: int, threads: int, depth: int = 6):
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
    self.rng = np.random.default_rng(seed)
    self.pool = concurrent.futures.ThreadPoolExecutor(threads)
    self.queue: queue.Queue = queue.Queue(depth)
    self.stopped = threading.Event()
    self.thread = threading.Thread(target=self._fill, daemon=True)
    self.thread.start()

  def _crop(self, args):
    index, u_side, u_top, u_left, flip = args
    image = self.images[index]
    short = min(image.size)
    low = min(short, max(self.size, math.ceil(self.min_fraction * short)))
    side = low + int(u_side * (short - low + 1))
    top = int(u_top * (image.height - side + 1))
    left = int(u_left * (image.width - side + 1))
    crop = image.resize((self.size, self.size), Image.Resampling.BILINEAR,
                        box=(left, top, left + side, top + side), reducing_gap=None)
    array = np.asarray(crop, np.float32) / 255.0
    return array[:, ::-1] if flip else array

  def _fill(self):
    while not self.stopped.is_set():
      b = self.batch_size
      draws = zip(self.rng.integers(0, len(self.images), b), self.rng.random(b),
                  self.rng.random(b), self.rng.random(b), self.rng.random(b) < 0.5)
      batch = np.stack(list(self.pool.map(self._crop, draws)))
      while not self.stopped.is_set():
        try:
          self.queue.put(batch, timeout=0.5)
          break
        except queue.Full:
          continue

  def next(self) -> np.ndarray:
    return self.queue.get()

  def close(self):
    self.stopped.set()
    self.pool.shutdown(wait=False, cancel_futures=True)


def corrupt(clean, key, kernels, track: str, data_cfg):
  """The protocol's corruptions of `clean` [B, S, S, 3] in [0, 1] on `track`.

  Blur: a kernel of the bank per image, convolved with symmetric padding
  (as corruptions.blur); noise: sigma ~ U[noise_sigma_min, noise_sigma_max]
  per image, then clip; hole: the centre square filled with `hole_fill`.
  """
  batch, size = clean.shape[0], clean.shape[1]
  corrupted = clean
  if track in ("restore", "joint"):
    k_kernel, k_sigma, k_noise = jax.random.split(key, 3)
    kernel = kernels[jax.random.randint(k_kernel, (batch,), 0, kernels.shape[0])]
    half = kernels.shape[1] // 2
    padded = jnp.pad(corrupted, ((0, 0), (half, half), (half, half), (0, 0)), mode="symmetric")
    # One grouped convolution: every (image, channel) pair is its own group.
    lhs = jnp.transpose(padded, (1, 2, 0, 3)).reshape(1, size + 2 * half, size + 2 * half,
                                                       batch * 3)
    rhs = jnp.repeat(kernel[:, ::-1, ::-1], 3, axis=0)  # Flipped: a convolution, not a correlation.
    rhs = jnp.transpose(rhs, (1, 2, 0))[:, :, None, :]  # [k, k, 1, B*3]
    blurred = jax.lax.conv_general_dilated(lhs, rhs, (1, 1), "VALID",
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                           feature_group_count=batch * 3,
                                           precision=jax.lax.Precision.HIGHEST)
    blurred = jnp.transpose(blurred.reshape(size, size, batch, 3), (2, 0, 1, 3))
    sigma = jax.random.uniform(k_sigma, (batch, 1, 1, 1), minval=data_cfg.noise_sigma_min,
                               maxval=data_cfg.noise_sigma_max)
    noise = sigma * jax.random.normal(k_noise, clean.shape)
    corrupted = jnp.clip(blurred + noise, 0.0, 1.0)
  if track in ("inpaint", "joint"):
    top = (size - data_cfg.hole_size) // 2
    inside = jnp.zeros((size,), bool).at[top:top + data_cfg.hole_size].set(True)
    mask = (inside[:, None] & inside[None, :])[None, :, :, None]
    corrupted = jnp.where(mask, data_cfg.hole_fill, corrupted)
  return corrupted


# --------------------------------------------------------------------------
# Updates (cascade_tf/training/steps.py, stateless).


def _mse(a, b):
  return jnp.mean(jnp.square(a - b))


def _global_norm(grads):
  return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in grads))


class Net:
  """A network with its variables as JAX arrays (trainable, non-trainable)."""

  def __init__(self, model: keras.Model):
    self.model = model
    self.trainable = [v.value for v in model.trainable_variables]
    self.non_trainable = [v.value for v in model.non_trainable_variables]

  def call(self, trainable, non_trainable, x, training):
    return self.model.stateless_call(trainable, non_trainable, x, training=training)

  def write_back(self):
    for variable, value in zip(self.model.trainable_variables, self.trainable):
      variable.assign(value)
    for variable, value in zip(self.model.non_trainable_variables, self.non_trainable):
      variable.assign(value)


def new_optimizer(lr, trainable_variables):
  optimizer = keras.optimizers.RMSprop(lr)
  optimizer.build(trainable_variables)
  return optimizer, [v.value for v in optimizer.variables]


def make_updates(stage: str, nets: dict[str, Net], optimizer, critic_optimizer, cfg):
  """(critic_update or None, main_update): pure updates on model-range inputs.

  Each takes (state, x, y), x the corrupted and y the clean images in
  [-1, 1], and returns (new state, {loss name: scalar}). States:
  pretrain/dd ((trainable, non_trainable), optimizer vars); critic
  (generator vars, critic vars, critic optimizer vars); gan/joint main
  (trained vars, critic vars, optimizer vars), where the joint stage's
  trained vars are the generator's followed by the restorer's.
  """
  loss_cfg = cfg.loss

  if stage in ("pretrain", "dd"):
    net = nets["generator" if stage == "pretrain" else "restorer"]

    def loss_fn(trainable, non_trainable, x, y):
      out, non_trainable = net.call(trainable, non_trainable, x, True)
      return _mse(y, out), non_trainable

    def main_update(state, x, y):
      (trainable, non_trainable), opt_vars = state
      (loss, non_trainable), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          trainable, non_trainable, x, y)
      trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
      return ((trainable, non_trainable), opt_vars), {
          "mse": loss, "total": loss, "grad_norm": _global_norm(grads)}

    return None, main_update

  generator, critic = nets["generator"], nets["critic"]
  restorer = nets.get("restorer")

  def critic_loss_fn(c_trainable, c_non_trainable, real, fake):
    real_scores, c_non_trainable = critic.call(c_trainable, c_non_trainable, real, True)
    fake_scores, c_non_trainable = critic.call(c_trainable, c_non_trainable, fake, True)
    return jnp.mean(fake_scores) - jnp.mean(real_scores), c_non_trainable

  def critic_update(state, x, y):
    g_vars, (c_trainable, c_non_trainable), opt_vars = state
    fake, g_non_trainable = generator.call(g_vars[0], g_vars[1], x, True)
    (loss, c_non_trainable), grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
        c_trainable, c_non_trainable, y, jax.lax.stop_gradient(fake))
    c_trainable, opt_vars = critic_optimizer.stateless_apply(opt_vars, grads, c_trainable)
    c_trainable = [jnp.clip(w, -cfg.train.clip, cfg.train.clip) for w in c_trainable]
    return ((g_vars[0], g_non_trainable), (c_trainable, c_non_trainable), opt_vars), {
        "critic_loss": loss, "wasserstein": -loss, "critic_grad_norm": _global_norm(grads)}

  def generator_loss_fn(trainable, non_trainable, c_vars, x, y):
    if restorer is None:
      out, non_trainable = generator.call(trainable, non_trainable, x, True)
      critic_input = intermediate = out
    else:
      n_gen, n_gen_nt = len(generator.trainable), len(generator.non_trainable)
      inpainted, g_nt = generator.call(trainable[:n_gen], non_trainable[:n_gen_nt], x, True)
      out, r_nt = restorer.call(trainable[n_gen:], non_trainable[n_gen_nt:], inpainted, True)
      non_trainable = list(g_nt) + list(r_nt)
      critic_input = intermediate = inpainted
    scores, _ = critic.call(c_vars[0], c_vars[1], critic_input, False)
    terms = {"mse": _mse(y, out), "adversarial": -jnp.mean(scores)}
    total = loss_cfg.lambda_mse * terms["mse"] + loss_cfg.lambda_adv * terms["adversarial"]
    return total, (non_trainable, terms, _mse(y, intermediate))

  def main_update(state, x, y):
    (trainable, non_trainable), c_vars, opt_vars = state
    (total, (non_trainable, terms, mse_intermediate)), grads = jax.value_and_grad(
        generator_loss_fn, has_aux=True)(trainable, non_trainable, c_vars, x, y)
    trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
    values = {**terms, "total": total, "grad_norm": _global_norm(grads)}
    if restorer is not None:
      values["mse_intermediate"] = mse_intermediate
    return ((trainable, non_trainable), c_vars, opt_vars), values

  return critic_update, main_update


def make_steps(stage: str, nets: dict[str, Net], optimizer, critic_optimizer, cfg):
  """Jitted (critic_step or None, main_step): corrupt a clean batch, then update.

  Each step takes (state, clean [B, S, S, 3] in [0, 1], PRNG key, kernel bank).
  """
  track, data_cfg = TRACK[stage], cfg.data

  def with_corruption(update):
    @jax.jit
    def step(state, clean, key, kernels):
      corrupted = corrupt(clean, key, kernels, track, data_cfg)
      return update(state, corrupted * 2.0 - 1.0, clean * 2.0 - 1.0)
    return step

  critic_update, main_update = make_updates(stage, nets, optimizer, critic_optimizer, cfg)
  return (None if critic_update is None else with_corruption(critic_update),
          with_corruption(main_update))


# --------------------------------------------------------------------------
# The loop.


def build(name: str, cfg) -> keras.Model:
  size = cfg.data.image_size
  if name == "generator":
    return build_generator(cfg.generator, size)
  if name == "restorer":
    return build_restorer(cfg.restorer, size)
  return build_critic(cfg.critic, size)


def run_stage(stage: str, models: dict[str, keras.Model], sampler: CropSampler, kernels, cfg,
              seconds: float | None, key, log_every: int) -> dict:
  """Trains `stage` for its steps or `seconds`; writes the weights back into `models`."""
  nets = {name: Net(models[name]) for name in NETWORKS[stage]}
  lr = cfg.stage_lr(stage)
  target = cfg.stage_steps(stage)
  if stage == "joint":
    trained = [nets["generator"], nets["restorer"]]
  else:
    trained = [nets["restorer" if stage == "dd" else "generator"]]
  optimizer, opt_vars = new_optimizer(
      lr, [v for net in trained for v in net.model.trainable_variables])
  critic_optimizer = critic_opt_vars = None
  if "critic" in nets:
    critic_optimizer, critic_opt_vars = new_optimizer(lr, nets["critic"].model.trainable_variables)
  critic_step, main_step = make_steps(stage, nets, optimizer, critic_optimizer, cfg)

  main_vars = ([v for net in trained for v in net.trainable],
               [v for net in trained for v in net.non_trainable])
  curve, step, batches = [], 0, 0
  window_start, window_steps, compile_seconds = None, 0, None
  start = time.perf_counter()
  while step < target:
    values = {}
    if critic_step is not None:
      g = nets["generator"]
      g_vars = (main_vars[0][:len(g.trainable)], main_vars[1][:len(g.non_trainable)])
      c = nets["critic"]
      c_vars = (c.trainable, c.non_trainable)
      for _ in range(cfg.train.n_critic):
        key, sub = jax.random.split(key)
        (g_vars, c_vars, critic_opt_vars), critic_values = critic_step(
            (g_vars, c_vars, critic_opt_vars), sampler.next(), sub, kernels)
        batches += 1
      c.trainable, c.non_trainable = list(c_vars[0]), list(c_vars[1])
      # The critic's generator passes update its batch-norm statistics (as train.py does).
      main_vars = (main_vars[0], list(g_vars[1]) + list(main_vars[1][len(g.non_trainable):]))
      values.update(critic_values)
      key, sub = jax.random.split(key)
      (main_vars, c_vars, opt_vars), main_values = main_step(
          (main_vars, c_vars, opt_vars), sampler.next(), sub, kernels)
    else:
      key, sub = jax.random.split(key)
      (main_vars, opt_vars), main_values = main_step((main_vars, opt_vars), sampler.next(), sub,
                                                     kernels)
    batches += 1
    values.update(main_values)
    step += 1
    if step == 1:
      jax.block_until_ready(main_vars)
      compile_seconds = time.perf_counter() - start
      window_start, window_steps = time.perf_counter(), 0
      first = {k: float(v) for k, v in values.items()}
      _check_finite(stage, step, first)
      curve.append({"step": step, **first})
      continue
    window_steps += 1
    elapsed = time.perf_counter() - start
    if schedule.is_due(step, log_every, target) or (seconds is not None and elapsed >= seconds):
      logged = {k: float(v) for k, v in values.items()}
      _check_finite(stage, step, logged)
      rate = window_steps / (time.perf_counter() - window_start)
      curve.append({"step": step, "seconds": round(elapsed, 1), **logged})
      print(f"{stage} step {step}/{target} {elapsed:.0f}s {rate:.2f} steps/s "
            + " ".join(f"{k}={v:.4g}" for k, v in logged.items()), flush=True)
      if seconds is not None and elapsed >= seconds:
        break
  jax.block_until_ready(main_vars)
  wall = time.perf_counter() - start
  offset = 0
  offset_nt = 0
  for net in trained:
    net.trainable = main_vars[0][offset:offset + len(net.trainable)]
    net.non_trainable = main_vars[1][offset_nt:offset_nt + len(net.non_trainable)]
    offset += len(net.trainable)
    offset_nt += len(net.non_trainable)
  for net in nets.values():
    net.write_back()
  timed_steps = max(step - 1, 1)
  timed_seconds = max(wall - (compile_seconds or 0.0), 1e-9)
  images_per_step = cfg.train.batch_size * (1 + (cfg.train.n_critic if critic_step else 0))
  return {"stage": stage, "track": TRACK[stage], "networks": list(NETWORKS[stage]),
          "steps": step, "target_steps": target,
          "lr": lr, "batches": batches, "seconds": round(wall, 1),
          "first_step_seconds": round(compile_seconds or 0.0, 1),
          "steps_per_s": round(timed_steps / timed_seconds, 3),
          "images_per_s": round(timed_steps * images_per_step / timed_seconds, 1),
          "curve": curve}


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
  kernels_path = os.path.join(_BUNDLE.value, "kernels.npy")
  if not os.path.exists(kernels_path):
    raise app.UsageError(f"--bundle: {kernels_path} is missing (scripts/prepare_jax_run.py).")
  kernels = jnp.asarray(np.load(kernels_path), jnp.float32)
  if kernels.shape[1:] != (cfg.data.blur_kernel_size,) * 2:
    raise app.UsageError(f"{kernels_path}: kernels {kernels.shape[1:]}, the config wants "
                         f"{cfg.data.blur_kernel_size}x{cfg.data.blur_kernel_size}.")

  needed = sorted({n for s in stages for n in NETWORKS[s]})
  init = {name: _INIT_DIR.value for name in needed if _INIT_DIR.value and os.path.exists(
      weights_io.manifest_path(_INIT_DIR.value, name))}
  ready = set(init)
  for stage in stages:
    missing = [name for name in WARM_START[stage] if name not in ready]
    if missing and not _FROM_SCRATCH.value:
      raise app.UsageError(
          f"Stage {stage} continues the {', '.join(missing)} of an earlier stage: run that stage "
          "first in --stages, pass --init_dir with its weights, or --from_scratch.")
    ready.update(NETWORKS[stage])
  keras.utils.set_random_seed(cfg.train.seed)
  models = {name: build(name, cfg) for name in needed}
  for name in init:
    weights_io.load_weights(models[name], _INIT_DIR.value, name)
  sampler = CropSampler(os.path.join(_BUNDLE.value, "images"), cfg.data.image_size,
                        cfg.data.train_crop_min_fraction, cfg.train.batch_size, cfg.train.seed,
                        _LOADER_THREADS.value)
  devices = [str(d) for d in jax.devices()]
  print(f"JAX {jax.__version__}, Keras {keras.__version__}, devices {devices}; "
        f"{len(sampler.images)} images ({len(sampler.skipped)} skipped)", flush=True)
  os.makedirs(_OUT_DIR.value, exist_ok=True)
  run = {"config": config_lib.to_dict(cfg), "jax": jax.__version__, "keras": keras.__version__,
         "devices": devices, "images": len(sampler.images), "skipped_images": len(sampler.skipped),
         "init_from": init, "stages": []}
  key = jax.random.key(cfg.train.seed)
  try:
    for stage in stages:
      key, sub = jax.random.split(key)
      result = run_stage(stage, models, sampler, kernels, cfg, seconds.get(stage), sub,
                         _LOG_EVERY.value)
      run["stages"].append(result)
      for name in NETWORKS[stage]:
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
