"""Would Winograd F(2x2, 3x3) speed up the restorer's 3x3 convolutions on this CPU?

    python benchmarks/winograd.py --batch_size=8 --rounds=3 --repeats=7

Inference is about 85% the restorer's 3x3, 96-channel convolutions at
128x128 (docs/benchmarks.md). oneDNN already runs those at the best 3x3
convolution rate TensorFlow reached here. Winograd's F(2x2, 3x3) needs
2.25 times fewer multiplications: a batched (16 x N x C) by (16 x C x C')
matrix product between an input and an output transform. This script
builds that convolution from TensorFlow ops and times it against
`tf.nn.conv2d` on the restorer's layer shape, with and without XLA. It
prints each variant's largest relative error against conv2d, and the
median time with the "direct-equivalent" GFLOP/s (the direct
convolution's FLOPs divided by the time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

# pylint: disable=wrong-import-position
import cascade_tf  # noqa: F401  Before TensorFlow: the package's oneDNN default.
from benchmarks import layers
import numpy as np
import tensorflow as tf
# pylint: enable=wrong-import-position

# F(2x2, 3x3) (Lavin & Gray 2016): Y = A^T [(G g G^T) * (B^T d B)] A per 4x4 input tile.
_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float64)


def transform_kernel(kernel: np.ndarray) -> np.ndarray:
  """[3, 3, C, C'] -> [16, C, C']: G g G^T for every channel pair."""
  u = np.einsum("ai,ijco,bj->abco", _G, kernel.astype(np.float64), _G)
  return u.reshape(16, kernel.shape[2], kernel.shape[3]).astype(np.float32)


def winograd_conv3x3(x, u):
  """conv2d(x, kernel, stride 1, "SAME") for even H and W, with u = transform_kernel(kernel)."""
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f"winograd_conv3x3: H and W must be even, got {h}x{w}.")
  cout = u.shape[-1]
  xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
  d = [[xp[:, i:i + h:2, j:j + w:2, :] for j in range(4)] for i in range(4)]
  t = [[None] * 4 for _ in range(4)]  # B^T d: transforms the tile's rows.
  for j in range(4):
    t[0][j], t[1][j] = d[0][j] - d[2][j], d[1][j] + d[2][j]
    t[2][j], t[3][j] = d[2][j] - d[1][j], d[1][j] - d[3][j]
  v = []  # (B^T d) B: then its columns; v[4 * row + column].
  for i in range(4):
    v += [t[i][0] - t[i][2], t[i][1] + t[i][2], t[i][2] - t[i][1], t[i][1] - t[i][3]]
  m = tf.matmul(tf.reshape(tf.stack(v), [16, -1, c]), u)
  m = tf.reshape(m, [4, 4, b, h // 2, w // 2, cout])  # [row, column, ...]
  s0, s1 = m[0] + m[1] + m[2], m[1] - m[2] - m[3]  # A^T: output rows 0 and 1.
  y00, y01 = s0[0] + s0[1] + s0[2], s0[1] - s0[2] - s0[3]  # ... A: output columns.
  y10, y11 = s1[0] + s1[1] + s1[2], s1[1] - s1[2] - s1[3]
  return tf.nn.depth_to_space(tf.concat([y00, y01, y10, y11], -1), 2)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--size", type=int, default=128, help="H = W, px (even).")
  parser.add_argument("--channels", type=int, default=96, help="C = C' (restorer: 96).")
  parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds; median of each.")
  parser.add_argument("--repeats", type=int, default=7, help="Timed calls per round.")
  args = parser.parse_args(argv)
  if min(args.batch_size, args.rounds, args.repeats, args.channels) < 1 or args.size % 2:
    parser.error("--batch_size, --rounds, --repeats and --channels must be >= 1, --size even.")
  rng = np.random.default_rng(0)
  shape = (args.batch_size, args.size, args.size, args.channels)
  x = tf.constant(rng.standard_normal(shape).astype(np.float32))
  kernel = (rng.standard_normal((3, 3, args.channels, args.channels)) * 0.05).astype(np.float32)
  u = tf.constant(transform_kernel(kernel))
  k = tf.constant(kernel)
  variants = {
      "conv2d (oneDNN)": tf.function(lambda x: tf.nn.conv2d(x, k, 1, "SAME")),
      "winograd, graph": tf.function(lambda x: winograd_conv3x3(x, u)),
      "winograd, XLA": tf.function(lambda x: winograd_conv3x3(x, u), jit_compile=True),
  }
  reference = variants["conv2d (oneDNN)"](x).numpy()
  errors = {name: float(np.abs(fn(x).numpy() - reference).max() / np.abs(reference).max())
            for name, fn in variants.items()}
  rounds = {name: [] for name in variants}
  for _ in range(args.rounds):
    for name, fn in variants.items():
      rounds[name].append(layers.median_seconds(fn, x, args.repeats, warmup=2) * 1e3)
  flop = 2 * args.batch_size * args.size ** 2 * 9 * args.channels ** 2
  print(f"3x3 conv, batch {args.batch_size}, {args.size}x{args.size}, {args.channels} -> "
        f"{args.channels} channels; {args.rounds} rounds x {args.repeats} calls")
  print("| variant | median ms | rounds (ms) | direct-equivalent GFLOP/s | max rel. error |")
  print("|---|---:|---|---:|---:|")
  for name, times in rounds.items():
    median = statistics.median(times)
    print(f"| {name} | {median:.1f} | {', '.join(f'{t:.1f}' for t in times)} | "
          f"{flop / median / 1e6:.1f} | {errors[name]:.1e} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
