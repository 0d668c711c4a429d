"""Where a run executes: tf.distribute strategy, precision, seeds, the CPU.

`make_strategy` maps `TrainConfig.strategy` to a `tf.distribute.Strategy`;
`set_precision` installs the Keras dtype policy before models are built.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import platform

from absl import logging
import keras
import tensorflow as tf

from cascade_tf import config as config_lib


_MULTIWORKER: list = []  # The process's MultiWorkerMirroredStrategy, once made.


def make_strategy(name: str) -> tf.distribute.Strategy:
  """Returns the strategy called `name`.

  * `auto`: MirroredStrategy over all local GPUs when there are two or
    more, otherwise the default strategy (one device).
  * `default`: the default strategy (one device, no replication).
  * `mirrored`: MirroredStrategy over all local GPUs (or all logical CPUs
    when there is no GPU, which is what the tests use).
  * `multiworker`: MultiWorkerMirroredStrategy, configured by TF_CONFIG.
  * `tpu`: TPUStrategy on the TPU found by TPUClusterResolver.
  """
  if name == "auto":
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) >= 2:
      return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices=devices)
  if name == "multiworker":
    # One per process: TensorFlow configures its collectives once, at startup.
    if _MULTIWORKER:
      return _MULTIWORKER[0]
    _MULTIWORKER.append(tf.distribute.MultiWorkerMirroredStrategy())
    return _MULTIWORKER[0]
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"--strategy={name!r}: expected auto, default, mirrored, multiworker or tpu.")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes the run's files (checkpoints, logs, config).

  True everywhere except on the non-chief workers of a multi-worker
  strategy: there the chief is the `chief` task, or worker 0 when the
  cluster has no `chief` (TensorFlow's convention).
  """
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  resolver = strategy.cluster_resolver
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type in (None, "chief"):
    return True
  return (task_type == "worker" and task_id == 0
          and "chief" not in resolver.cluster_spec().as_dict())


# CPU features with bfloat16 arithmetic in hardware (AVX-512 BF16, AMX).
NATIVE_BFLOAT16_FEATURES = ("avx512_bf16", "amx_bf16")
PURPOSES = ("train", "infer")
# What `auto` picks on a CPU with native bfloat16, per purpose, and why. A purpose
# moves to mixed_bfloat16 only once both of issue 17's gates are measured to hold:
# faster than float32 on such a CPU, and as good (training: validation PSNR within
# 0.1 dB in a short paired run; inference: within 0.05 dB of float32 on every
# BSD300 track). docs/benchmarks.md, "Precision defaults", has the measurements.
NATIVE_BFLOAT16_CHOICE = {
    "train": ("mixed_bfloat16", "bfloat16 training updates 1.0-1.6x faster than float32 (both "
              "without XLA), validation PSNR of paired runs within 0.02 dB"),
    "infer": ("mixed_bfloat16", "bfloat16 inference 1.9x faster than float32, within 0.03 dB "
              "on every BSD300 track"),
}


def native_bfloat16_features(features=None) -> list[str]:
  """Which of `NATIVE_BFLOAT16_FEATURES` the CPU has (`features`, default `cpu_info()`'s)."""
  if features is None:
    features = cpu_info()[1]
  return [f for f in NATIVE_BFLOAT16_FEATURES if f in features]


def accelerator_kind() -> str | None:
  """"GPU" or "TPU" when TensorFlow sees one, else None (a CPU run)."""
  for kind in ("GPU", "TPU"):
    if tf.config.list_logical_devices(kind):
      return kind
  return None


def resolve_precision(setting: str, purpose: str, *, features=None,
                      accelerator: str | None = "detect") -> tuple[str, str]:
  """The Keras dtype policy that `setting` means for `purpose`, and why.

  `setting` is `train.mixed_precision`: a policy (config.POLICIES), kept
  as it is, or `auto`, chosen from the device and the CPU's features
  (docs/benchmarks.md, "Precision defaults", has the measurements):

  * CPU with native bfloat16 (`avx512_bf16` or `amx_bf16`): the choice of
    `NATIVE_BFLOAT16_CHOICE` for the purpose, mixed_bfloat16 for both
    since both gates were measured to hold on such a CPU (training
    updates 1.0-1.6x faster than float32 without XLA, which
    `--jit_compile=auto` then leaves off, and paired short runs within
    0.02 dB; inference 1.9x faster, within 0.03 dB of float32).
  * CPU without (AVX2 and older): float32 for both; TensorFlow emulates
    bfloat16 there, several times slower.
  * GPU or TPU: float32 (mixed precision not measured on them yet).

  Args:
    setting: "auto" or a policy.
    purpose: "train" or "infer".
    features: the CPU's features (default: `cpu_info()`'s).
    accelerator: "GPU", "TPU" or None; "detect" asks TensorFlow.

  Returns:
    (policy, reason): reason is a short sentence for logs and reports.
  """
  if purpose not in PURPOSES:
    raise ValueError(f"purpose={purpose!r}: expected one of {PURPOSES}.")
  if setting != config_lib.AUTO:
    if setting not in config_lib.POLICIES:
      raise ValueError(f"--mixed_precision={setting!r}: expected one of "
                       f"{config_lib.PRECISIONS}.")
    return setting, "set explicitly"
  if accelerator == "detect":
    accelerator = accelerator_kind()
  if accelerator is not None:
    return "float32", f"auto on {accelerator}: mixed precision not measured there yet"
  native = native_bfloat16_features(features)
  if not native:
    return "float32", "auto on a CPU without native bfloat16 (emulated: slower)"
  policy, why = NATIVE_BFLOAT16_CHOICE[purpose]
  return policy, f"auto on a CPU with native bfloat16 ({', '.join(native)}): {why}"


def resolve_config_precision(cfg: config_lib.Config, purpose: str) -> config_lib.Config:
  """`cfg` with `train.mixed_precision` resolved for `purpose`; logs the choice."""
  policy, reason = resolve_precision(cfg.train.mixed_precision, purpose)
  logging.info("Precision (%s): %s (--mixed_precision=%s; %s).", purpose, policy,
               cfg.train.mixed_precision, reason)
  return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, mixed_precision=policy))


@contextlib.contextmanager
def precision_scope(policy: str):
  """The global Keras dtype policy `policy` (a policy, not `auto`) inside; restored after."""
  previous = keras.mixed_precision.global_policy().name
  keras.mixed_precision.set_global_policy(policy)
  try:
    yield policy
  finally:
    keras.mixed_precision.set_global_policy(previous)


def keeps_global_policy(fn):
  """Decorator: the global Keras dtype policy is put back when `fn` returns or raises.

  For library functions that set the policy for their own models (a
  training stage), so that a caller building models afterwards in the same
  process (a test, a notebook) gets its own policy, not theirs.
  """
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    with precision_scope(keras.mixed_precision.global_policy().name):
      return fn(*args, **kwargs)
  return wrapper


def set_precision(policy: str) -> None:
  """Sets the global Keras dtype policy (before any model is built).

  `mixed_float16` is meant for GPUs (with loss scaling, see
  `wrap_optimizer`); `mixed_bfloat16` for CPUs with bfloat16 support and
  TPUs; `float32` everywhere. `auto` is resolved before, by
  `resolve_config_precision`.
  """
  if policy == "mixed_float16" and not tf.config.list_logical_devices("GPU"):
    logging.warning("mixed_float16 without a GPU is slow on most CPUs; "
                    "consider --mixed_precision=mixed_bfloat16.")
  keras.mixed_precision.set_global_policy(policy)


def wrap_optimizer(optimizer, policy: str):
  """Adds dynamic loss scaling for mixed_float16; other policies need none."""
  if policy == "mixed_float16":
    return keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def resolve_jit_compile(setting: str, strategy: tf.distribute.Strategy, *,
                        features=None) -> bool:
  """Whether the training updates are XLA-compiled, from `TrainConfig.jit_compile`.

  * `auto`: on for a single-replica run on a CPU without native bfloat16
    (on the project's AVX2 CPU, XLA with oneDNN measured the fastest
    training updates, docs/benchmarks.md); off on a CPU with native
    bfloat16 (`avx512_bf16`, `amx_bf16`), where oneDNN's own kernels beat
    XLA's on every training update, float32 and bfloat16 alike (XLA does
    not use the bfloat16 units); off on GPUs and with several replicas,
    where it has not been measured yet.
  * `on`: on, but only with a single replica (synchronized batch norm
    all-reduces inside the update, which XLA cannot compile under
    MirroredStrategy); a warning says when it is dropped.
  * `off`: plain tf.function graphs.

  `features` are the CPU's (default: `cpu_info()`'s).
  """
  if setting not in config_lib.JIT_COMPILE:
    raise ValueError(f"jit_compile={setting!r}: expected one of {config_lib.JIT_COMPILE}.")
  single = strategy.num_replicas_in_sync == 1
  if setting == "off":
    return False
  if setting == "on":
    if not single:
      logging.warning("--jit_compile=on is ignored with %d replicas: XLA is applied to "
                      "single-replica runs only.", strategy.num_replicas_in_sync)
    return single
  return single and accelerator_kind() is None and not native_bfloat16_features(features)


def set_seed(seed: int) -> None:
  """Seeds Python, NumPy, TensorFlow and Keras (weight initialisation)."""
  keras.utils.set_random_seed(seed)


_CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_info() -> tuple[str, list[str]]:
  """(CPU model name, the vector/matrix features that matter for TF) from /proc/cpuinfo."""
  model, features = platform.processor() or platform.machine() or "unknown", []
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          model = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
          present = set(line.split(":", 1)[1].split())
          features = [name for name in _CPU_FEATURES if name in present]
          break
  except OSError:
    pass
  return model, features
