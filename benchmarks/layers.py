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
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

# pylint: disable=wrong-import-position
import cascade_tf  # noqa: F401  Before TensorFlow: the package's oneDNN default.
from benchmarks import bench
from cascade_tf import runtime
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


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--xla", choices=["both", "on", "off"], default="both")
  parser.add_argument("--precisions", default="float32",
                      help=f"Comma-separated, some of {sorted(POLICIES)}.")
  args = parser.parse_args(argv)
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


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
