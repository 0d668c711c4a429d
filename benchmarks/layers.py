"""GFLOP/s of the cascade's kinds of convolution, forward and forward + backward, with and without XLA.

    python benchmarks/layers.py --batch_size=8 --repeats=15
    python benchmarks/layers.py --xla=off --precisions=float32,bfloat16

One row per layer kind the `paper` preset uses, at the shapes it uses them
(batch `--batch_size`): the generator's 4x4 stride-2 convolution and 4x4
stride-2 transposed convolution, a 3x3 convolution at the bottleneck's 4x4
feature maps, 3x3 convolutions at 16x16 (VGG16-, critic-like) and at
128x128 with 96 channels (the restorer), and the restorer's last 3x3
convolution, 96 -> 3 channels at 128x128. `fwd` times the layer alone;
`fwd+bwd` the layer and both its gradients (to the input and to the
kernel), counted as 3x the forward FLOPs. Each cell is the median of
`--repeats` calls after 3 warm-up calls, with the package's defaults
(oneDNN on); `--xla=both|on|off` picks whether the calls are compiled with
XLA (jit_compile=True), as the training updates are by default on a CPU
without native bfloat16; `--precisions` runs the rows under each Keras
policy (`bfloat16` is mixed_bfloat16: bfloat16 compute, float32 kernels,
as `--mixed_precision` trains). It shows which kinds of layer keep the
training steps below the machine's peak (docs/benchmarks.md).

Two more views of a whole training or inference row of bench.py (the
project's step exactly as bench.py times it, `--preset`, `--precision`
and `--jit_compile` resolved as there):

    python benchmarks/layers.py --op_profile=joint --precision=bfloat16 --jit_compile=off
    python benchmarks/layers.py --batch_norm_ab=joint,dd,pretrain --precision=bfloat16

`--op_profile=ROW` traces `--steps` calls with TensorFlow's profiler and
sums the time of every executed operation by type, over the executor's
threads (so the shares say where the operations' time goes, not the wall
time; XLA-compiled steps show as one cluster): convolutions against the
rest. `--batch_norm_ab=ROWS` times each row with batch norm trained by
Keras' own operations and by the fused kernel (`models.layers.FusedBatchNorm`),
alternated over `--rounds` rounds in one process.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import os
import statistics
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

# pylint: disable=wrong-import-position
import cascade_tf  # noqa: F401  Before TensorFlow: the package's oneDNN default.
from benchmarks import bench
from cascade_tf import config as config_lib
from cascade_tf import runtime
from cascade_tf.models import layers as layers_lib
import keras
import tensorflow as tf
# pylint: enable=wrong-import-position


def layer_cases():
  """name -> (a fresh layer, input shape without batch, multiply-adds per image)."""
  return {
      "conv 4x4 stride 2, 128->256, 32->16 px (generator encoder)":
          (keras.layers.Conv2D(256, 4, strides=2, padding="same", use_bias=False),
           (32, 32, 128), 16 * 16 * 256 * 128 * 16),
      "transposed conv 4x4 stride 2, 256->128, 16->32 px (generator decoder)":
          (keras.layers.Conv2DTranspose(128, 4, strides=2, padding="same", use_bias=False),
           (16, 16, 256), 16 * 16 * 256 * 128 * 16),
      "conv 3x3, 512->512, 4 px (generator bottleneck)":
          (keras.layers.Conv2D(512, 3, padding="same", use_bias=False),
           (4, 4, 512), 4 * 4 * 512 * 512 * 9),
      "conv 3x3, 256->256, 16 px (VGG16 / critic-like)":
          (keras.layers.Conv2D(256, 3, padding="same", use_bias=False),
           (16, 16, 256), 16 * 16 * 256 * 256 * 9),
      "conv 3x3, 96->96, 128 px (restorer)":
          (keras.layers.Conv2D(96, 3, padding="same", use_bias=False),
           (128, 128, 96), 128 * 128 * 96 * 96 * 9),
      "conv 3x3, 96->3, 128 px (restorer output)":
          (keras.layers.Conv2D(3, 3, padding="same", use_bias=False),
           (128, 128, 96), 128 * 128 * 96 * 3 * 9),
  }

POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def median_seconds(fn, x, repeats: int, warmup: int = 3) -> float:
  """Median wall time of `fn(x).numpy()` over `repeats` calls after `warmup` calls."""
  for _ in range(warmup):
    fn(x).numpy()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn(x).numpy()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def measure(batch_size: int, repeats: int, jit_compile: bool,
            precision: str = "float32") -> list[tuple[str, float, float]]:
  """[(layer, forward GFLOP/s, forward + backward GFLOP/s)] for every layer kind."""
  rows = []
  with runtime.precision_scope(POLICIES[precision]):
    cases = layer_cases()  # Built under the policy.
  for name, (layer, shape, macs) in cases.items():
    x = tf.random.stateless_normal((batch_size, *shape), [0, 1])
    layer.build(x.shape)

    @tf.function(jit_compile=jit_compile)
    def forward(inputs, layer=layer):
      return tf.reduce_sum(layer(inputs))

    @tf.function(jit_compile=jit_compile)
    def forward_backward(inputs, layer=layer):
      with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = layer(inputs)
        loss = tf.reduce_sum(outputs * outputs)
      grad_input, grad_kernel = tape.gradient(loss, [inputs, layer.kernel])
      return tf.reduce_sum(grad_input) + tf.reduce_sum(grad_kernel)

    flops = 2 * macs * batch_size
    rows.append((name, flops / median_seconds(forward, x, repeats) / 1e9,
                 3 * flops / median_seconds(forward_backward, x, repeats) / 1e9))
  return rows


def op_seconds(fn, steps: int) -> dict[str, float]:
  """Seconds per call of every operation type `fn` executes, summed over the executor's threads.

  `fn` is called `steps` times under TensorFlow's profiler (after a warm-up
  call); the trace's host events named "op_name:OpType" are summed by type.
  """
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  bench._block(fn())  # pylint: disable=protected-access
  with tempfile.TemporaryDirectory(prefix="cascade_ops_") as logdir:
    tf.profiler.experimental.start(logdir)
    try:
      for _ in range(steps):
        bench._block(fn())  # pylint: disable=protected-access
    finally:
      tf.profiler.experimental.stop()
    paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    if not paths:
      raise RuntimeError(f"The profiler wrote no trace under {logdir}.")
    space = xplane_pb2.XSpace()
    with open(paths[0], "rb") as f:
      space.ParseFromString(f.read())
  totals = collections.Counter()
  for plane in space.planes:
    for line in plane.lines:
      for event in line.events:
        name = plane.event_metadata[event.metadata_id].name
        if "::" in name or ":" not in name:
          continue  # The executor's own events, not operations.
        op_type = name.rsplit(":", 1)[1].strip()
        if op_type.startswith("__") or op_type.endswith("PartitionedCall"):
          continue  # A function call, whose operations are counted themselves.
        totals[op_type] += event.duration_ps * 1e-12 / steps
  return dict(totals)


def is_convolution(op_type: str) -> bool:
  return "Conv2D" in op_type or "Conv3D" in op_type


def format_op_profile(seconds: dict[str, float], top: int = 15) -> str:
  """The table of op_seconds: the `top` types, then convolutions and the rest in all."""
  total = sum(seconds.values()) or 1.0
  lines = ["| operation type | ms per step | share |", "|---|---:|---:|"]
  for op_type, value in sorted(seconds.items(), key=lambda kv: -kv[1])[:top]:
    lines.append(f"| {op_type} | {value * 1e3:.1f} | {100 * value / total:.1f}% |")
  conv = sum(v for k, v in seconds.items() if is_convolution(k))
  lines.append(f"| **all convolutions** | {conv * 1e3:.1f} | {100 * conv / total:.1f}% |")
  lines.append(f"| **all other operations** | {(total - conv) * 1e3:.1f} | "
               f"{100 * (total - conv) / total:.1f}% |")
  return "\n".join(lines)


@contextlib.contextmanager
def batch_norm_kind(fused: bool):
  """Steps traced inside train batch norm with the fused kernel or with Keras' operations."""
  previous = layers_lib.FusedBatchNorm.enabled
  layers_lib.FusedBatchNorm.enabled = fused
  try:
    yield
  finally:
    layers_lib.FusedBatchNorm.enabled = previous


def batch_norm_ab(cfg, rows: list[str], batch_size: int, precision: str, jit_compile: str,
                  rounds: int, steps: int) -> list[tuple[str, float, float, list, list]]:
  """[(row, Keras img/s, fused img/s, Keras round medians, fused round medians)]."""
  results = []
  for row in rows:
    fns = {}
    with contextlib.ExitStack() as stack:
      for fused in (False, True):
        with batch_norm_kind(fused):  # Read when the step is traced: its first calls.
          fn, items = stack.enter_context(
              bench.row_function(row, cfg, batch_size, precision, jit_compile))
          for _ in range(2):
            bench._block(fn())  # pylint: disable=protected-access
        fns[fused] = fn
      medians = {False: [], True: []}
      for _ in range(rounds):
        for fused in (False, True):
          times = bench.time_calls(fns[fused], steps, 0)
          medians[fused].append(items / statistics.median(times))
    results.append((row, statistics.median(medians[False]), statistics.median(medians[True]),
                    medians[False], medians[True]))
  return results


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--xla", choices=["both", "on", "off"], default="both")
  parser.add_argument("--precisions", default="float32",
                      help=f"Comma-separated, some of {sorted(POLICIES)}.")
  parser.add_argument("--op_profile", default="",
                      help="A training or inference row of bench.py to profile by operation type.")
  parser.add_argument("--batch_norm_ab", default="",
                      help="Comma-separated rows of bench.py: Keras' batch norm against the fused one.")
  parser.add_argument("--keras_batch_norm", action="store_true",
                      help="--op_profile with batch norm trained by Keras' own operations.")
  parser.add_argument("--preset", default="paper", help="For --op_profile and --batch_norm_ab.")
  parser.add_argument("--precision", default="auto", help="As bench.py's --precision.")
  parser.add_argument("--jit_compile", default="auto", choices=["auto", "on", "off"])
  parser.add_argument("--steps", type=int, default=5, help="Calls profiled or timed per round.")
  parser.add_argument("--rounds", type=int, default=3, help="--batch_norm_ab's rounds.")
  args = parser.parse_args(argv)
  if args.op_profile or args.batch_norm_ab:
    return whole_rows(args)
  if args.batch_size < 1 or args.repeats < 1:
    raise SystemExit(f"--batch_size={args.batch_size} and --repeats={args.repeats} must be >= 1.")
  precisions = [p for p in args.precisions.split(",") if p]
  if not precisions or not set(precisions) <= set(POLICIES):
    raise SystemExit(f"--precisions={args.precisions}: expected some of {sorted(POLICIES)}.")
  settings = {"both": [False, True], "on": [True], "off": [False]}[args.xla]
  print(bench.machine_line())
  print(f"batch {args.batch_size}, median of {args.repeats} calls, TensorFlow {tf.__version__}\n")
  print("| layer | precision | XLA | fwd GFLOP/s | fwd+bwd GFLOP/s |")
  print("|---|---|---|---|---|")
  for precision in precisions:
    for jit in settings:
      for name, fwd, fwd_bwd in measure(args.batch_size, args.repeats, jit, precision):
        print(f"| {name} | {precision} | {'on' if jit else 'off'} | {fwd:.0f} | {fwd_bwd:.0f} |",
              flush=True)
  return 0


def whole_rows(args) -> int:
  """--op_profile and --batch_norm_ab."""
  if args.steps < 1 or args.rounds < 1 or args.batch_size < 1:
    raise SystemExit(f"--steps={args.steps}, --rounds={args.rounds} and "
                     f"--batch_size={args.batch_size} must be >= 1.")
  try:
    cfg = config_lib.get_preset(args.preset)
  except (KeyError, ValueError) as e:
    raise SystemExit(f"--preset={args.preset}: {e}") from e
  print(bench.machine_line())
  print(f"preset {args.preset}, batch {args.batch_size}, precision {args.precision}, "
        f"jit_compile {args.jit_compile}, TensorFlow {tf.__version__}\n")
  try:
    if args.op_profile:
      with batch_norm_kind(not args.keras_batch_norm), bench.row_function(
          args.op_profile, cfg, args.batch_size, args.precision, args.jit_compile) as (fn, _):
        seconds = op_seconds(fn, args.steps)
      print(f"{args.op_profile}: operations' time per step by type, mean of {args.steps} "
            f"profiled steps, batch norm {'Keras' if args.keras_batch_norm else 'fused'}\n")
      print(format_op_profile(seconds))
    if args.batch_norm_ab:
      rows = [r for r in args.batch_norm_ab.split(",") if r]
      print(f"\nimages/s, median of {args.rounds} alternated rounds of {args.steps} steps\n")
      print("| row | Keras batch norm | fused batch norm | fused / Keras | round medians |")
      print("|---|---:|---:|---:|---|")
      for row, keras_rate, fused_rate, keras_rounds, fused_rounds in batch_norm_ab(
          cfg, rows, args.batch_size, args.precision, args.jit_compile, args.rounds, args.steps):
        print(f"| {row} | {keras_rate:.2f} | {fused_rate:.2f} | {fused_rate / keras_rate:.2f}x | "
              f"{', '.join(f'{v:.2f}' for v in keras_rounds)} / "
              f"{', '.join(f'{v:.2f}' for v in fused_rounds)} |", flush=True)
  except ValueError as e:
    raise SystemExit(str(e)) from e
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
