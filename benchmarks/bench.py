"""Throughput, FLOPs and memory of every training step, of inference and of the input.

    python benchmarks/bench.py --preset=cpu --mode=all --batch_size=8 --json=cpu_f32.json
    python benchmarks/bench.py --preset=paper --mode=train --batch_size=8 --precision=bfloat16
    TF_ENABLE_ONEDNN_OPTS=1 python benchmarks/bench.py ...   # or --onednn=on

Prints one Markdown table (and with --json writes a list of rows) with, per
row: images/s as the median of --steps timed steps after --warmup untimed
ones, with the min and max; the analytic forward-and-backward GFLOP per
image (`cascade_tf.flops`); the achieved GFLOP/s; its fraction of this
machine's peak measured in the same run; and the peak resident memory.

Rows (`stage`), by --mode:

* train: `pretrain`, `dd` (MSE updates of generator and restorer),
  `critic` (one critic update), `gan_generator` (one generator update of
  stage gan), `gan_full_step` (n_critic critic updates + one generator
  update, as train.py runs a step; img/s counts generator images), `joint`,
  `joint_full_step` (likewise). The steps are those of
  `cascade_tf/training/steps.py`, built as `training/loop.py` builds them
  (RMSProp, default strategy), fed one fixed random batch in [0, 1]; VGG16
  has random weights (same cost) at the preset's `loss.perceptual_size`.
* infer: `infer_keras`, the Keras cascade (training=False, batch norm
  folded into the convolutions as `inference.load_workdir_cascade` does)
  in a tf.function with a fixed input signature, reading its variables as
  `inference.Repairer` does by default; `--freeze` times it frozen to
  constants (`inference.freeze`, as `Repairer(freeze=True)`; not under
  XLA). Its networks are untrained, but their
  biases are set to small random values: an all-zero bias, as a freshly
  built layer holds, is folded away in a frozen graph and takes the
  convolution-bias-activation fusion with it, which a trained network
  keeps.
* export: `infer_savedmodel`, a freshly built (untrained) cascade exported
  with `cascade_tf.serving.export_savedmodel` and timed through its
  `serving_default` signature (input checks, padding and clipping included).
* all: the above, plus `data_inpaint`, `data_restore`, `data_joint` (the
  training input pipeline of each corruption track, --dataset, default the
  `samples` photos, cache warm; a timed step is --data_batches batches) and
  `peak_matmul` / `peak_conv3x3`: a float32 NxN matmul and a 3x3 same
  convolution [B, S, S, C] -> C (and at bfloat16/float16 too when that is
  the --precision). For peak_matmul one "image" is one product.

`% of peak` is a row's GFLOP/s over the best peak row of the same precision
in the same run (with --isolate the peak rows are still measured in this
run, each in its own process). Data rows have no FLOPs.

Precision: `auto` (the default: each row at the precision the project's
commands choose on this machine, `runtime.resolve_precision`: the training
rows as train.py, the inference and peak rows as evaluate.py and
restore.py, the export row float32; the row's `precision` is the resolved
one, `precision_setting` says `auto`), `float32`, `bfloat16` (Keras policy
mixed_bfloat16, for CPUs with native bf16 and TPUs) or `float16`
(mixed_float16 with loss scaling, for GPUs).

Peak RSS is `getrusage(RUSAGE_SELF).ru_maxrss`, the process's high-water
mark. With --isolate (the default) every row runs in a fresh process (this
script, re-run with --stages=<row>), so it is that row's own peak,
TensorFlow and Python included; with --noisolate all rows share one process
and the value is cumulative over the rows measured so far. On a GPU the
row also gets `peak_device_mb` (TF's peak allocator use on GPU:0).

Settings to compare (each a separate run; the JSON rows record them):
--onednn=on|off (sets TF_ENABLE_ONEDNN_OPTS before TensorFlow is imported;
unset, importing cascade_tf sets it to 1, the project's measured CPU default,
where TensorFlow alone would turn oneDNN on only on CPUs with AVX-512
VNNI/BF16 or AMX class features; the header prints the state),
--jit_compile=auto|on|off (XLA for the training rows, passed to the step
factories as train.py passes `train.jit_compile`, whose preset value is the
default: auto resolves as in training, i.e. on for a single-replica CPU run
and off on a GPU; `on` also compiles the infer_keras function; the
SavedModel row is not affected), --threads_intra/--threads_inter,
--precision, --fuse_critic (the n_critic critic updates of the full-step
rows run in one tf.function as a tf.while_loop over n_critic stacked
batches). Run it alone on the machine: other load changes the numbers.

Library use (tests): `measure_rows(cfg_or_preset, mode, batch_size, ...)`
returns the rows; `format_table(rows)` the Markdown.
"""

from __future__ import annotations

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:  # `python benchmarks/bench.py` from anywhere.
  sys.path.insert(0, _ROOT)

_ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
_ONEDNN_VALUES = {"on": "1", "off": "0"}


def _apply_onednn_flag(argv) -> None:
  """Sets TF_ENABLE_ONEDNN_OPTS from --onednn=on|off in `argv`.

  TensorFlow reads the variable once, when it is imported, so this runs
  before the imports below (absl parses the flag itself later, and main
  checks that it agrees).
  """
  for arg in argv[1:]:
    if arg.startswith("--onednn="):
      value = arg.split("=", 1)[1]
      if value in _ONEDNN_VALUES:
        os.environ[_ONEDNN_ENV] = _ONEDNN_VALUES[value]


if __name__ == "__main__":
  _apply_onednn_flag(sys.argv)

# pylint: disable=wrong-import-position
import contextlib
import gc
import json
import platform
import resource
import statistics
import subprocess
import tempfile
import time
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging
import cascade_tf  # Before TensorFlow: sets the package's oneDNN default.
import keras
import numpy as np
import tensorflow as tf

from cascade_tf import cli
from cascade_tf import config as config_lib
from cascade_tf import flops as flops_lib
from cascade_tf import inference
from cascade_tf import ranges
from cascade_tf import runtime
from cascade_tf.data import masks
from cascade_tf.data import pipeline
from cascade_tf.data import sources
from cascade_tf.models import cascade as cascade_lib
from cascade_tf.models import fold
from cascade_tf.models import generator as generator_lib
from cascade_tf.models import perceptual
from cascade_tf.models import restorer as restorer_lib
from cascade_tf.training import stages as stages_lib
from cascade_tf.training import steps as steps_lib
# pylint: enable=wrong-import-position

MODES = ("train", "infer", "export", "all")
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
AUTO = config_lib.AUTO  # --precision=auto: each row at what train.py / evaluate.py choose here.
TRAIN_ROWS = ("pretrain", "dd", "critic", "gan_generator", "gan_full_step", "joint",
              "joint_full_step")
INFER_ROWS = ("infer_keras",)
EXPORT_ROWS = ("infer_savedmodel",)
DATA_ROWS = tuple(f"data_{track}" for track in config_lib.TRACKS)
PEAK_ROWS = ("peak_matmul", "peak_conv3x3")
# The row's `mode`: what kind of work it measures.
ROW_MODE = {**{n: "train" for n in TRAIN_ROWS}, **{n: "infer" for n in INFER_ROWS},
            **{n: "export" for n in EXPORT_ROWS}, **{n: "data" for n in DATA_ROWS},
            **{n: "peak" for n in PEAK_ROWS}}
# The keys every row has (the command-line contract), then the run's settings.
ROW_KEYS = ("preset", "mode", "stage", "precision", "batch_size", "image_size", "img_per_s",
            "img_per_s_min", "img_per_s_max", "gflop_per_img", "gflops", "peak_fraction",
            "peak_rss_mb")
SETTING_KEYS = ("precision_setting", "jit_compile", "fuse_critic", "fold_batch_norm", "freeze",
                "onednn", "threads_intra", "threads_inter", "timed_steps", "device",
                "peak_device_mb")


def plan_rows(mode: str, stages: Sequence[str] | None = None) -> list[str]:
  """The row names `mode` measures, in order, optionally restricted to `stages`."""
  if mode not in MODES:
    raise ValueError(f"--mode={mode!r}: expected one of {MODES}.")
  names = {"train": TRAIN_ROWS, "infer": INFER_ROWS, "export": EXPORT_ROWS,
           "all": TRAIN_ROWS + INFER_ROWS + EXPORT_ROWS + DATA_ROWS + PEAK_ROWS}[mode]
  if stages:
    unknown = [s for s in stages if s not in names]
    if unknown:
      raise ValueError(f"--stages={','.join(stages)}: {unknown} not measured by --mode={mode}; "
                       f"expected some of {list(names)}.")
    names = tuple(n for n in names if n in stages)
  return list(names)


# --------------------------------------------------------------------------
# Machine and runtime.


def configure_threads(intra: int, inter: int) -> None:
  """Sets TF's intra/inter-op thread pools (0: TF's default); before any op runs."""
  if intra < 0 or inter < 0:
    raise ValueError(f"--threads_intra={intra}, --threads_inter={inter}: must be >= 0.")
  tf.config.threading.set_intra_op_parallelism_threads(intra)
  tf.config.threading.set_inter_op_parallelism_threads(inter)


def onednn_enabled() -> bool | None:
  """Whether TF's oneDNN ops are on in this process (None if TF cannot say)."""
  try:
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top
    return bool(_pywrap_util_port.IsMklEnabled())
  except (ImportError, AttributeError):
    return None


def device_name() -> str:
  """The accelerator the models run on, or the CPU model."""
  gpus = tf.config.list_physical_devices("GPU")
  if gpus:
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"GPU {details.get('device_name', gpus[0].name)}"
  return f"CPU {runtime.cpu_info()[0]} x{os.cpu_count()}"


def machine_line() -> str:
  """`machine: <CPU model>, <n> logical CPUs, features: ...` (`runtime.cpu_info()`)."""
  model, features = runtime.cpu_info()
  return f"machine: {model}, {os.cpu_count()} logical CPUs, features: {' '.join(features) or '-'}"


def machine_header(precision: str, jit_compile: bool | str, threads: tuple[int, int]) -> str:
  """The lines printed above the table: machine, versions, settings."""
  intra, inter = threads
  return "\n".join([
      machine_line(),
      f"device: {device_name()}",
      f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Python {platform.python_version()}",
      f"oneDNN: {onednn_enabled()} ({_ONEDNN_ENV}={os.environ.get(_ONEDNN_ENV, '<unset>')}), "
      f"XLA jit_compile: {jit_compile}, precision: {describe_precision(precision)}, "
      f"threads intra/inter: {intra or 'default'}/{inter or 'default'}",
  ])


def describe_precision(precision: str) -> str:
  """`precision`, and for `auto` what it resolves to here for training and inference."""
  if precision != AUTO:
    return precision
  return (f"auto (here: training {resolve_precision(AUTO, 'joint')}, inference "
          f"{resolve_precision(AUTO, 'infer_keras')})")


def peak_rss_mb() -> float:
  """This process's peak resident memory so far, MiB (Linux reports KiB)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


def _gpu_peak_mb() -> float | None:
  if not tf.config.list_logical_devices("GPU"):
    return None
  return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20


def _reset_gpu_peak() -> None:
  if tf.config.list_logical_devices("GPU"):
    tf.config.experimental.reset_memory_stats("GPU:0")


@contextlib.contextmanager
def _dtype_policy(precision: str):
  """Installs the Keras policy of `precision` while models are built; restores it."""
  previous = keras.mixed_precision.global_policy().name
  runtime.set_precision(PRECISIONS[precision])
  try:
    yield PRECISIONS[precision]
  finally:
    keras.mixed_precision.set_global_policy(previous)


# --------------------------------------------------------------------------
# Timing.


def _block(outputs) -> None:
  """Waits for `outputs` (copies every tensor to the host)."""
  for value in tf.nest.flatten(outputs):
    if isinstance(value, (tf.Tensor, tf.Variable)):
      value.numpy()


def time_calls(fn: Callable[[], object], steps: int, warmup: int) -> list[float]:
  """Seconds of each of `steps` calls of `fn` after `warmup` untimed ones.

  Every call waits for its outputs, so a time covers the whole step.
  """
  if steps < 1 or warmup < 0:
    raise ValueError(f"steps={steps} must be >= 1 and warmup={warmup} >= 0.")
  for _ in range(warmup):
    _block(fn())
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    _block(fn())
    times.append(time.perf_counter() - start)
  return times


def _rates(times: Sequence[float], items_per_call: float) -> dict[str, float]:
  rates = [items_per_call / t for t in times]
  return {"img_per_s": statistics.median(rates), "img_per_s_min": min(rates),
          "img_per_s_max": max(rates)}


def _random_batch(batch_size: int, size: int, seed: int = 0) -> dict[str, tf.Tensor]:
  """{"corrupted", "clean"}: float32 [B, S, S, 3] uniform in [0, 1]."""
  shape = [batch_size, size, size, 3]
  return {"corrupted": tf.random.stateless_uniform(shape, [seed, 1]),
          "clean": tf.random.stateless_uniform(shape, [seed, 2])}


def _tracing_count(fn) -> int:
  counter = getattr(fn, "experimental_get_tracing_count", None)
  return counter() if counter else 0


# --------------------------------------------------------------------------
# What each row runs. Each builder returns (fn, items per call, the
# tf.functions whose tracing count shows a retrace during timing).


def _optimizer(cfg, stage, policy, update):
  """The update's optimizer as train.py builds it (`stages.new_optimizer`)."""
  optimizer = runtime.wrap_optimizer(stages_lib.new_optimizer(cfg, stage, update.name), policy)
  optimizer.build(update.variables)
  return optimizer


def _fused_critic(critic_step, n_critic: int):
  """n_critic critic updates in one tf.function: a tf.while_loop over stacked batches.

  Takes {"corrupted", "clean"} of shape [n_critic, B, S, S, 3] and returns
  the last update's outputs, like n_critic separate calls. With XLA on, each
  update inside the loop is compiled (the step factory's jit_compile), not
  the loop itself: compiling the whole loop was tried and did not finish
  one paper-preset step in 12 minutes (docs/benchmarks.md).
  """

  @tf.function
  def fused(stacked):
    out = critic_step({k: v[0] for k, v in stacked.items()})
    for i in tf.range(1, n_critic):
      out = critic_step({k: v[i] for k, v in stacked.items()})
    return out

  return fused


def _train_row(name: str, cfg: config_lib.Config, batch_size: int, policy: str,
               jit_compile: bool, fuse_critic: bool):
  # The factories XLA-compile each replica's update when jit_compile is set,
  # exactly as training/loop.py builds them.
  """Builds the networks, optimizers and steps of training row `name`."""
  size = cfg.data.image_size
  stage = {"pretrain": "pretrain", "dd": "dd", "critic": "gan", "gan_generator": "gan",
           "gan_full_step": "gan", "joint": "joint", "joint_full_step": "joint"}[name]
  strategy = tf.distribute.get_strategy()
  vgg = None
  if stages_lib.SPECS[stage].adversarial and name != "critic" and cfg.loss.lambda_per > 0:
    vgg = perceptual.build_vgg_features("none", cfg.loss.perceptual_size or size)
  # The stage exactly as training/loop.py wires it (stages.build_stage).
  wired = stages_lib.build_stage(cfg, stage, global_batch_size=batch_size, vgg=vgg)

  def make(update):
    return steps_lib.make_step(strategy, update, _optimizer(cfg, stage, policy, update),
                               jit_compile=jit_compile)

  batch = _random_batch(batch_size, size, cfg.train.seed)
  if cfg.generator.mask_channel or cfg.generator.composite:
    # A generator that reads the hole mask (the `photo` preset's) trains on
    # one: the protocol's centre square, in every image.
    hole = masks.centre(size, size, cfg.data.hole_size)[None]  # [1, S, S, 1]
    batch["mask"] = tf.tile(hole, [batch_size, 1, 1, 1])
  if wired.critic is None:
    step = make(wired.main)
    return (lambda: step(batch)), batch_size, [step]

  critic_step = make(wired.critic)
  if name == "critic":
    return (lambda: critic_step(batch)), batch_size, [critic_step]

  update = make(wired.main)
  main_step = update
  if name in ("gan_generator", "joint"):
    return (lambda: main_step(batch)), batch_size, [update]

  n_critic = cfg.train.n_critic
  if fuse_critic:
    stacked = {k: tf.stack([v] * n_critic) for k, v in batch.items()}
    fused = _fused_critic(critic_step, n_critic)

    def full_step():
      fused(stacked)
      return main_step(batch)
  else:
    wrapped_critic = critic_step

    def full_step():
      # As training/loop.py: n_critic critic updates, then the main update.
      for _ in range(n_critic):
        wrapped_critic(batch)
      return main_step(batch)

  return full_step, batch_size, [critic_step, update]


def randomise_biases(model: keras.Model, seed: int = 0) -> None:
  """Gives every layer's bias small random values, as a trained network has (not all zeros)."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    bias = getattr(layer, "bias", None)
    if bias is not None:
      bias.assign(rng.normal(0, 0.05, bias.shape).astype(bias.dtype))


def _infer_row(cfg: config_lib.Config, batch_size: int, jit_compile: bool,
               fold_batch_norm: bool = True, freeze: bool = False):
  size = cfg.data.image_size
  generator, restorer = stages_lib.build_networks(cfg, ["generator", "restorer"]).values()
  for seed, network in enumerate((generator, restorer)):
    randomise_biases(network, seed)
  if fold_batch_norm:  # As inference.load_workdir_cascade builds it.
    generator, restorer = fold.fold_batch_norm(generator), fold.fold_batch_norm(restorer)
  model = cascade_lib.build_cascade(generator, restorer, composite=cfg.generator.composite)
  spec = tf.TensorSpec([batch_size, size, size, 3], tf.float32)

  def infer(images_01):
    out = model(cascade_lib.cascade_inputs(ranges.to_model(images_01)), training=False)
    return {k: ranges.from_model(v, clip=True) for k, v in out.items()}

  # As inference.Repairer runs it (frozen if asked); XLA compiles the values in anyway.
  infer = (inference.freeze(infer, spec) if freeze and not jit_compile else
           tf.function(infer, input_signature=[spec], jit_compile=jit_compile))
  images = _random_batch(batch_size, size)["corrupted"]
  return (lambda: infer(images)), batch_size, [infer]  # A frozen function cannot retrace.


def _export_row(cfg: config_lib.Config, batch_size: int, workdir: str):
  """Exports an untrained cascade from a temporary workdir; times serving_default."""
  try:
    from cascade_tf import serving  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise RuntimeError(f"cascade_tf.serving is not available ({e}); skip --mode=export.") from e
  generator = generator_lib.build_generator(cfg.generator, None)
  restorer = restorer_lib.build_restorer(cfg.restorer, None)
  serve = export_and_load(cfg, generator, restorer, workdir, serving)
  images = _random_batch(batch_size, cfg.data.image_size)["corrupted"]
  return (lambda: serve(images=images)), batch_size, []


def export_and_load(cfg: config_lib.Config, generator, restorer, workdir: str, serving,
                    freeze: bool = False):
  """Exports these networks as export.py would and returns the loaded serving_default.

  Writes the layout inference.load_workdir_cascade reads into `workdir`
  (config.json and a `joint` checkpoint holding the generator and the
  restorer) unless it is there already, then `serving.export_savedmodel`
  (frozen with `freeze`, as export.py --freeze) as a new version of
  `workdir`/export.
  """
  if not tf.io.gfile.exists(os.path.join(workdir, "config.json")):
    inference.write_workdir(workdir, cfg, generator, restorer)
  path = serving.export_savedmodel(workdir, os.path.join(workdir, "export"), freeze=freeze)
  return tf.saved_model.load(path).signatures[serving.SIGNATURE_IMAGES]


def _data_row(cfg: config_lib.Config, track: str, batch_size: int, data_batches: int,
              warmup: int):
  source = sources.load_source(cfg.data, "train")
  dataset = pipeline.make_dataset(cfg.data, split="train", track=track, batch_size=batch_size,
                                  training=True, seed=cfg.train.seed, source=source)
  iterator = iter(dataset)
  # One pass over the source fills the decode cache, then a few batches more.
  for _ in range(max(warmup, (source.num_images or 64) // batch_size + 3)):
    next(iterator)

  def batches():
    for _ in range(data_batches):
      batch = next(iterator)
    return batch["corrupted"]

  return batches, data_batches * batch_size, []


def _peak_row(name: str, dtype: tf.DType, matmul_size: int, conv_shape: Sequence[int]):
  """(fn, items per call, FLOPs per item, batch, image size) of a peak row."""
  if name == "peak_matmul":
    n = matmul_size
    a = tf.cast(tf.random.stateless_uniform([n, n], [0, 1]), dtype)
    b = tf.cast(tf.random.stateless_uniform([n, n], [0, 2]), dtype)
    # The sum keeps the product from being pruned and costs n^2, not n^3.
    fn = tf.function(lambda: tf.reduce_sum(tf.cast(tf.linalg.matmul(a, b), tf.float32)))
    return fn, 1, 2 * n**3, 1, n
  batch, size, channels = conv_shape
  x = tf.cast(tf.random.stateless_uniform([batch, size, size, channels], [0, 3]), dtype)
  kernel = tf.cast(tf.random.stateless_normal([3, 3, channels, channels], [0, 4]) * 0.05, dtype)
  fn = tf.function(lambda: tf.reduce_sum(tf.cast(
      tf.nn.conv2d(x, kernel, strides=1, padding="SAME"), tf.float32)))
  return fn, batch, 2 * size * size * channels * channels * 9, batch, size


# --------------------------------------------------------------------------
# Rows.


def _settings(jit_compile: bool, fuse_critic: bool, steps: int) -> dict:
  return {"jit_compile": jit_compile, "fuse_critic": fuse_critic, "onednn": onednn_enabled(),
          "threads_intra": tf.config.threading.get_intra_op_parallelism_threads(),
          "threads_inter": tf.config.threading.get_inter_op_parallelism_threads(),
          "timed_steps": steps, "device": device_name()}


def _make_row(cfg, name, precision, batch_size, image_size, rates, flops_per_item, settings,
              memory):
  gflop = None if flops_per_item is None else flops_per_item / 1e9
  return {
      "preset": cfg.preset, "mode": ROW_MODE[name], "stage": name, "precision": precision,
      "batch_size": batch_size, "image_size": image_size, **rates,
      "gflop_per_img": gflop, "gflops": None if gflop is None else gflop * rates["img_per_s"],
      "peak_fraction": None, "peak_rss_mb": memory[0], **settings, "peak_device_mb": memory[1],
  }


def _memory() -> tuple[float, float | None]:
  return peak_rss_mb(), _gpu_peak_mb()


def measure_row(name: str, cfg: config_lib.Config, batch_size: int, precision: str = "float32",
                *, steps: int = 5, warmup: int = 2, jit_compile: bool | str | None = None,
                fuse_critic: bool = False, data_batches: int = 10,
                fold_batch_norm: bool = True, freeze: bool = False,
                peak_matmul_size: int = 4096,
                peak_conv_shape: Sequence[int] = (8, 128, 256),
                forward_flops: dict[str, int] | None = None) -> list[dict]:
  """Measures row `name` (see the module docstring); the peak rows give one per precision.

  Returns rows with every key of ROW_KEYS (peak_fraction None: see
  `add_peak_fractions`) and of SETTING_KEYS.
  """
  if name not in ROW_MODE:
    raise ValueError(f"Unknown row {name!r}: expected one of {list(ROW_MODE)}.")
  if precision not in PRECISIONS and precision != AUTO:
    raise ValueError(f"--precision={precision!r}: expected {AUTO} or one of "
                     f"{list(PRECISIONS)}.")
  if batch_size < 1:
    raise ValueError(f"--batch_size={batch_size}: must be >= 1.")
  setting, precision = precision, resolve_precision(precision, name)
  jit_compile = resolve_jit(cfg.train.jit_compile if jit_compile is None else jit_compile, name)
  settings = {"precision_setting": setting, **_settings(jit_compile, fuse_critic, steps)}
  # Inference folds batch norm (export always does, inference.load_workdir_cascade).
  settings["fold_batch_norm"] = (fold_batch_norm if name in INFER_ROWS else
                                 True if name in EXPORT_ROWS else None)
  # Inference runs frozen (inference.Repairer), unless compiled with XLA.
  settings["freeze"] = (freeze and not jit_compile) if name in INFER_ROWS else None
  size = cfg.data.image_size
  gc.collect()
  _reset_gpu_peak()

  if name in PEAK_ROWS:
    rows = []
    for peak_precision in dict.fromkeys(("float32", precision)):
      dtype = {"float32": tf.float32, "bfloat16": tf.bfloat16, "float16": tf.float16}[
          peak_precision]
      fn, items, flops, batch, image_size = _peak_row(name, dtype, peak_matmul_size,
                                                      peak_conv_shape)
      rates = _rates(time_calls(fn, steps, warmup), items)
      rows.append(_make_row(cfg, name, peak_precision, batch, image_size, rates, flops,
                            {**settings, "jit_compile": False, "fuse_critic": False},
                            _memory()))
    return rows

  if name in DATA_ROWS:
    fn, items, _ = _data_row(cfg, name[len("data_"):], batch_size, data_batches, warmup)
    rates = _rates(time_calls(fn, steps, 0), items)
    return [_make_row(cfg, name, "float32", batch_size, size, rates, None,
                      {**settings, "jit_compile": False, "fuse_critic": False}, _memory())]

  runtime.set_seed(cfg.train.seed)
  with contextlib.ExitStack() as stack:
    policy = stack.enter_context(_dtype_policy(precision))
    if name in TRAIN_ROWS:
      fn, items, traced = _train_row(name, cfg, batch_size, policy, jit_compile, fuse_critic)
    elif name in INFER_ROWS:
      fn, items, traced = _infer_row(cfg, batch_size, jit_compile, fold_batch_norm, freeze)
    else:
      workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="cascade_bench_"))
      fn, items, traced = _export_row(cfg, batch_size, workdir)
      settings = {**settings, "jit_compile": False}
    for _ in range(max(warmup, 1)):  # The first call traces and compiles.
      _block(fn())
    traces = [_tracing_count(f) for f in traced]
    times = time_calls(fn, steps, 0)
    if [_tracing_count(f) for f in traced] != traces:
      logging.warning("Row %s retraced during the timed steps; its times include tracing.", name)
    memory = _memory()
  # Counted after the memory is read: counting builds every network once more.
  forward = forward_flops or flops_lib.network_forward_flops(cfg)
  flops_stage = "infer" if name in INFER_ROWS + EXPORT_ROWS else name
  flops_per_image = flops_lib.step_flops(cfg, flops_stage, forward)
  rates = _rates(times, items)
  if name not in ("gan_full_step", "joint_full_step"):
    settings = {**settings, "fuse_critic": False}
  return [_make_row(cfg, name, precision, batch_size, size, rates, flops_per_image, settings,
                    memory)]


def resolve_precision(setting: str, name: str) -> str:
  """The precision row `name` runs at under --precision=`setting`.

  `auto` resolves as the project's commands do on this machine
  (`runtime.resolve_precision`): the training rows as train.py, the
  inference and peak rows as evaluate.py and restore.py, the export row at
  float32 (export.py writes float32 SavedModels), the data rows float32.
  """
  if setting != AUTO:
    return setting
  if name in EXPORT_ROWS or name in DATA_ROWS:
    return "float32"
  policy, _ = runtime.resolve_precision(AUTO, "train" if name in TRAIN_ROWS else "infer")
  return {v: k for k, v in PRECISIONS.items()}[policy]


def resolve_jit(setting: bool | str, name: str) -> bool:
  """Whether row `name` runs XLA-compiled under --jit_compile=`setting` (or a bool)."""
  if isinstance(setting, bool):
    return setting
  if name in INFER_ROWS:
    return setting == "on"  # train.py, evaluate.py and restore.py never compile inference.
  if name not in TRAIN_ROWS:
    return False
  return runtime.resolve_jit_compile(setting, tf.distribute.get_strategy())


@contextlib.contextmanager
def row_function(name: str, cfg: config_lib.Config, batch_size: int, precision: str = AUTO,
                 jit_compile: bool | str = "auto"):
  """Yields (fn, images per call) of training or inference row `name`, as measure_row builds it.

  For tools that time or profile a row their own way (benchmarks/layers.py):
  `precision` and `jit_compile` resolve as in measure_row, and the row's
  Keras policy stays installed while the caller runs it.
  """
  if name not in TRAIN_ROWS and name not in INFER_ROWS:
    raise ValueError(f"Row {name!r}: expected a training or inference row, "
                     f"one of {list(TRAIN_ROWS) + list(INFER_ROWS)}.")
  precision = resolve_precision(precision, name)
  jit = resolve_jit(jit_compile, name)
  runtime.set_seed(cfg.train.seed)
  with _dtype_policy(precision) as policy:
    if name in TRAIN_ROWS:
      fn, items, _ = _train_row(name, cfg, batch_size, policy, jit, fuse_critic=False)
    else:
      fn, items, _ = _infer_row(cfg, batch_size, jit)
    yield fn, items


def write_json(path: str, rows) -> None:
  """Writes the rows to `path` as JSON (its folder made if missing)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(rows, f, indent=1)


def add_peak_fractions(rows: list[dict]) -> list[dict]:
  """Fills `peak_fraction`: GFLOP/s over the best peak row of the same precision."""
  peaks = {}
  for row in rows:
    if row["mode"] == "peak" and row["gflops"]:
      peaks[row["precision"]] = max(peaks.get(row["precision"], 0.0), row["gflops"])
  for row in rows:
    peak = peaks.get(row["precision"])
    row["peak_fraction"] = (row["gflops"] / peak) if (peak and row["gflops"] is not None) else None
  return rows


def measure_rows(cfg: config_lib.Config | str, mode: str, batch_size: int,
                 precision: str = "float32", *, stages: Sequence[str] | None = None,
                 **kwargs) -> list[dict]:
  """Measures every row of `mode` in this process and fills the peak fractions.

  Args:
    cfg: a Config or a preset name ("tiny", "cpu", "paper").
    mode: train | infer | export | all.
    batch_size: images per step.
    precision: auto | float32 | bfloat16 | float16.
    stages: optional subset of the mode's row names.
    **kwargs: steps, warmup, jit_compile, fuse_critic, data_batches,
      peak_matmul_size, peak_conv_shape (see `measure_row`).

  Returns:
    The rows, in the order of `plan_rows`.
  """
  if isinstance(cfg, str):
    cfg = config_lib.get_preset(cfg)
  names = plan_rows(mode, stages)
  forward = None
  if any(n not in DATA_ROWS + PEAK_ROWS for n in names):
    forward = flops_lib.network_forward_flops(cfg)
  rows = []
  for name in names:
    rows.extend(measure_row(name, cfg, batch_size, precision, forward_flops=forward, **kwargs))
  return add_peak_fractions(rows)


def _fmt(value, spec: str, scale: float = 1.0) -> str:
  return "-" if value is None else format(value * scale, spec)


def format_table(rows: Sequence[dict]) -> str:
  """The rows as a Markdown table."""
  lines = ["| stage | precision | batch | img/s median [min–max] | GFLOP/img | GFLOP/s | "
           "% of peak | peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    rate = (f"{r['img_per_s']:.3g} [{r['img_per_s_min']:.3g}–{r['img_per_s_max']:.3g}]")
    lines.append(f"| {r['stage']} | {r['precision']} | {r['batch_size']} | {rate} | "
                 f"{_fmt(r['gflop_per_img'], '.3g')} | {_fmt(r['gflops'], '.1f')} | "
                 f"{_fmt(r['peak_fraction'], '.1f', 100.0)} | {r['peak_rss_mb']:.0f} |")
  return "\n".join(lines)


# --------------------------------------------------------------------------
# Command line.

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Declares the command line (only when run as a script: the tests import this module
  next to other CLIs that declare --preset too)."""
  cli.define_flags(flags, cli.DATA_FLAGS)
  flags.DEFINE_enum("mode", "all", MODES, "What to measure; see the module docstring.")
  flags.DEFINE_integer("batch_size", 8, "Images per step (every row but the peak rows).")
  flags.DEFINE_enum("precision", AUTO, [AUTO, *PRECISIONS],
                    "auto (what train.py and evaluate.py choose on this machine, per row), "
                    "float32, bfloat16 (mixed_bfloat16) or float16 (mixed_float16, GPU).")
  flags.DEFINE_string("json", None, "Write the rows to this JSON file (a list of objects).")
  flags.DEFINE_integer("steps", 5, "Timed steps per row; the median is reported.")
  flags.DEFINE_integer("warmup", 2, "Untimed steps per row before timing (at least 1 for "
                       "compiled steps).")
  flags.DEFINE_enum("jit_compile", None, ["auto", "on", "off"],
                    "XLA for the training rows: auto (as train.py: on for a single-replica "
                    "CPU run, off on GPU), on (also compiles infer_keras) or off; default: "
                    "the preset's train.jit_compile (auto; off for tiny).")
  flags.DEFINE_boolean("fuse_critic", False, "Full-step rows: run the n_critic critic updates "
                       "in one tf.function (tf.while_loop).")
  flags.DEFINE_integer("threads_intra", 0, "TF intra-op threads (0: TF's default).")
  flags.DEFINE_integer("threads_inter", 0, "TF inter-op threads (0: TF's default).")
  flags.DEFINE_enum("onednn", "default", ["default", "on", "off"],
                    f"oneDNN ops: sets {_ONEDNN_ENV} before TensorFlow is imported; default "
                    "leaves the environment as it is (unset: cascade_tf turns oneDNN on).")
  flags.DEFINE_boolean("fold_batch_norm", True, "infer_keras: fold batch norm into the "
                       "convolutions, as inference does (--nofold_batch_norm: the trained "
                       "layers as they are).")
  flags.DEFINE_boolean("freeze", False, "infer_keras: run the cascade frozen to constants, as "
                       "inference.Repairer(freeze=True) does (not under XLA; default: with "
                       "variables, as inference runs by default).")
  flags.DEFINE_boolean("isolate", True, "Run every row in its own process (own peak RSS, no "
                       "state shared between rows).")
  flags.DEFINE_list("stages", None, "Only these rows of --mode (e.g. joint,critic).")
  flags.DEFINE_integer("data_batches", 10, "Batches per timed step of the data rows.")
  flags.DEFINE_integer("peak_matmul_size", 4096, "N of the NxN peak matmul.")
  flags.DEFINE_list("peak_conv_shape", ["8", "128", "256"], "batch,size,channels of the peak "
                    "3x3 convolution [B, S, S, C] -> C.")
  flags.DEFINE_boolean("table", True, "Print the header and the Markdown table.")


def _measure_kwargs() -> dict:
  return {"steps": FLAGS.steps, "warmup": FLAGS.warmup, "jit_compile": FLAGS.jit_compile,
          "fuse_critic": FLAGS.fuse_critic, "data_batches": FLAGS.data_batches,
          "fold_batch_norm": FLAGS.fold_batch_norm, "freeze": FLAGS.freeze,
          "peak_matmul_size": FLAGS.peak_matmul_size,
          "peak_conv_shape": tuple(int(v) for v in FLAGS.peak_conv_shape)}


def _isolated_rows(argv: list[str], names: list[str]) -> tuple[list[dict], list[str]]:
  """Runs this script once per row (--stages=<row> --noisolate); returns rows and failures."""
  rows, failed = [], []
  with tempfile.TemporaryDirectory(prefix="cascade_bench_rows_") as tmp:
    for name in names:
      path = os.path.join(tmp, f"{name}.json")
      # absl keeps the last value of a repeated flag, so these override argv's.
      command = [sys.executable, os.path.abspath(__file__), *argv[1:], f"--stages={name}",
                 "--noisolate", "--notable", f"--json={path}"]
      print(f"[bench] {name} ...", file=sys.stderr, flush=True)
      start = time.perf_counter()
      result = subprocess.run(command, check=False)
      if result.returncode != 0 or not os.path.exists(path):
        failed.append(name)
        print(f"[bench] {name} FAILED (exit {result.returncode}); see its output above.",
              file=sys.stderr, flush=True)
        continue
      with open(path) as f:
        rows.extend(json.load(f))
      print(f"[bench] {name} done in {time.perf_counter() - start:.0f}s", file=sys.stderr,
            flush=True)
  return rows, failed


def main(argv):
  env = os.environ.get(_ONEDNN_ENV)
  if FLAGS.onednn != "default" and env != _ONEDNN_VALUES[FLAGS.onednn]:
    raise app.UsageError(f"--onednn={FLAGS.onednn} must be set before TensorFlow is imported: "
                         f"run `python benchmarks/bench.py --onednn={FLAGS.onednn}` (it sets "
                         f"{_ONEDNN_ENV}), or set {_ONEDNN_ENV} yourself.")
  if FLAGS.steps < 1 or FLAGS.warmup < 1:
    raise app.UsageError(f"--steps={FLAGS.steps} and --warmup={FLAGS.warmup} must be >= 1.")
  configure_threads(FLAGS.threads_intra, FLAGS.threads_inter)
  cfg = cli.config_from_flags(FLAGS, cli.DATA_FLAGS)
  names = plan_rows(FLAGS.mode, FLAGS.stages)
  if FLAGS.table:
    print(machine_header(FLAGS.precision, FLAGS.jit_compile or f"{cfg.train.jit_compile} (preset)",
                         (FLAGS.threads_intra, FLAGS.threads_inter)))
    print(f"preset: {cfg.preset}, image {cfg.data.image_size}px, batch {FLAGS.batch_size}, "
          f"n_critic {cfg.train.n_critic}, {FLAGS.warmup} warm-up + {FLAGS.steps} timed steps "
          f"per row, {'one process per row' if FLAGS.isolate else 'one process'}\n", flush=True)

  failed = []
  if FLAGS.isolate and len(names) > 1:
    rows, failed = _isolated_rows(sys.argv, names)
    add_peak_fractions(rows)
  else:
    rows = []
    for name in names:
      try:
        rows.extend(measure_row(name, cfg, FLAGS.batch_size, FLAGS.precision,
                                **_measure_kwargs()))
      except Exception:  # pylint: disable=broad-except
        # One row that cannot run here (say a bf16 kernel missing without
        # oneDNN) must not lose the others.
        logging.exception("Row %s failed.", name)
        failed.append(name)
    add_peak_fractions(rows)

  if FLAGS.json:
    write_json(FLAGS.json, rows)
  if FLAGS.table:
    print(format_table(rows))
    if failed:
      print(f"\nFailed rows: {', '.join(failed)}")
  return 1 if failed else 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
