"""Speed against PyTorch in one run: the project's rows and the PyTorch peer's, alternating.

    pip install -r requirements-bench.txt       # PyTorch (CPU), for this script only
    python benchmarks/vs_pytorch.py             # paper preset, 128 px, batch 8, 2 rounds
    python benchmarks/vs_pytorch.py --precisions=float32,bfloat16 --rounds=3 --json=vs.json
    python benchmarks/vs_pytorch.py --quick     # smoke check: tiny preset, under a minute

Rows (--modes), each measured for both frameworks:

* `joint`: one joint update of generator and restorer (eq. (7) on R(G(x))
  and on G(x), the critic scored through, VGG16 perceptual terms, the
  optimizer step): the project's is bench.py's `joint` row; the peer's is
  `peer_torch.make_joint_step`.
* `infer`: the cascade's inference, generator then restorer: bench.py's
  `infer_keras` row against `peer_torch.make_inference` (eval mode).

The project runs at each of --precisions (bench.py's --precision: `auto`,
the default, is what train.py and evaluate.py choose on this machine for
each row; or Keras policies) with its own XLA default (--jit_compile); the peer runs each of
--peer_options: `f32` (PyTorch's float32 eager default), `bf16` (bfloat16
autocast), `channels_last`, `compile` (torch.compile), each alone, and
`bf16_channels_last` (bfloat16 autocast on channels-last tensors). Both
take the same preset, image size and batch, a fixed random batch in
[0, 1], and random VGG16 weights; the peer's networks are built from the
same Config and their FLOPs are checked against `cascade_tf.flops` (within
1%) before anything is timed.

A run makes --rounds rounds. Each round measures the peak rows (bench.py's
`peak_matmul` and `peak_conv3x3`, and the same two in PyTorch, at every
precision the run uses), then, row by row, the project's variants and the
peer's, the order of the two frameworks swapped every other round. Every
measurement is bench.py's: --warmup untimed calls (compilation included),
then --steps timed calls (`bench.time_calls`), their median, min and max.
Over the rounds a variant's figure is the median of its round medians,
with the min and max of all its timed calls.

Printed: a header (the machine from `runtime.cpu_info()`, TensorFlow,
Keras, PyTorch and Python versions, oneDNN, threads), a summary table with
one line per row and project precision (the project's images/s, each peer
option's, the ratio project / best peer option, and their shares of the
peak), and the detail table of every variant. `% of peak` is a variant's
GFLOP/s (its images/s times `flops.step_flops` of its row) over the best
peak row of its precision measured in this run by either framework, so
the two frameworks are held to the same peak. --json writes the
aggregated rows (bench.py's row keys, plus `framework`, `option`, `row`
and `round_img_per_s`, the round medians). Both frameworks run in this
one process, so `peak_rss_mb` is the process's high-water mark so far.

Run it alone on the machine: other load changes the numbers.
"""

from __future__ import annotations

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:  # `python benchmarks/vs_pytorch.py` from anywhere.
  sys.path.insert(0, _ROOT)

# pylint: disable=wrong-import-position
import gc
import platform
import statistics
from typing import Sequence

from absl import app
from absl import flags
from absl import logging

from benchmarks import bench  # Imports cascade_tf before TensorFlow, as bench.py does.
from benchmarks import peer_torch
from cascade_tf import cli
from cascade_tf import flops as flops_lib
import torch
# pylint: enable=wrong-import-position

PROJECT, PEER = "cascade_tf", "pytorch"
# Our row -> the bench.py row that measures the project on it.
PROJECT_ROWS = {"joint": "joint", "infer": "infer_keras"}
ROWS = tuple(PROJECT_ROWS)
# bench.py's median, min and max images/s of timed calls, for the peer's rows too.
_rates = bench._rates  # pylint: disable=protected-access
# What --quick sets, unless the flag is given explicitly.
QUICK = {"preset": "tiny", "batch_size": 2, "rounds": 1, "steps": 2, "warmup": 1,
         "peak_matmul_size": 64, "peak_conv_shape": ["1", "16", "8"],
         "peer_options": ["f32", "channels_last"]}


# --------------------------------------------------------------------------
# Measuring.


def _peer_row(cfg, row: str, option: str, batch_size: int, steps: int, warmup: int,
              forward: dict[str, int]) -> dict:
  """Times the peer's `row` under `option` as bench.py times a row; returns a bench-style row."""
  options = peer_torch.OPTIONS[option]
  gc.collect()
  fn = peer_torch.make_row(row, cfg, batch_size, options)
  times = bench.time_calls(fn, steps, max(warmup, 1))  # The first call compiles, if asked.
  flops_per_image = flops_lib.step_flops(cfg, row, forward)  # Its keys include our rows'.
  return _torch_row(cfg, option, row, bench.ROW_MODE[PROJECT_ROWS[row]], options.precision,
                    batch_size, cfg.data.image_size, _rates(times, batch_size), flops_per_image,
                    steps)


def _torch_row(cfg, option, row, mode, precision, batch_size, image_size, rates, flops_per_item,
               steps) -> dict:
  """A PyTorch measurement with bench.py's row keys and PyTorch's thread settings."""
  gflop = flops_per_item / 1e9
  return {"framework": PEER, "option": option, "row": row, "preset": cfg.preset, "mode": mode,
          "stage": row, "precision": precision, "batch_size": batch_size,
          "image_size": image_size, **rates, "gflop_per_img": gflop,
          "gflops": gflop * rates["img_per_s"], "peak_fraction": None,
          "peak_rss_mb": bench.peak_rss_mb(), "threads_intra": torch.get_num_threads(),
          "threads_inter": torch.get_num_interop_threads(), "timed_steps": steps,
          "device": bench.device_name()}


def _project_option(row: dict) -> str:
  auto = " (auto)" if row.get("precision_setting") == bench.AUTO else ""
  frozen = ", frozen" if row.get("freeze") else ""
  return f"{row['precision']}{auto}, XLA {'on' if row['jit_compile'] else 'off'}{frozen}"


def _resolved_precisions(precisions: Sequence[str]) -> list[str]:
  """The project's precisions with `auto` replaced by what it resolves to for each row."""
  resolved = []
  for precision in precisions:
    resolved += ([bench.resolve_precision(precision, PROJECT_ROWS[r]) for r in ROWS]
                 if precision == bench.AUTO else [precision])
  return list(dict.fromkeys(resolved))


def _project_rows(cfg, row: str, precision: str, batch_size: int, steps: int, warmup: int,
                  jit_compile, forward) -> list[dict]:
  """bench.py's row for `row` at `precision`, labelled for this comparison."""
  rows = bench.measure_row(PROJECT_ROWS[row], cfg, batch_size, precision, steps=steps,
                           warmup=warmup, jit_compile=jit_compile, forward_flops=forward)
  return [{**r, "framework": PROJECT, "option": _project_option(r), "row": row} for r in rows]


def _peak_rows(cfg, precisions: Sequence[str], steps: int, warmup: int, matmul_size: int,
               conv_shape: Sequence[int]) -> list[dict]:
  """The peak rows of both frameworks at float32 and each of `precisions`.

  PyTorch's at those of them the peer has (`peer_torch.PEAK_PRECISIONS`).
  """
  others = [p for p in precisions if p != "float32"]
  rows = []
  for name in peer_torch.PEAK_NAMES:
    for i, precision in enumerate(others or ["float32"]):
      measured = bench.measure_row(name, cfg, 1, precision, steps=steps, warmup=warmup,
                                   peak_matmul_size=matmul_size, peak_conv_shape=conv_shape)
      # Each call measures float32 too: keep it once.
      rows.extend({**r, "framework": PROJECT, "option": "tf", "row": name}
                  for r in measured if i == 0 or r["precision"] != "float32")
    for precision in ["float32"] + others:
      if precision not in peer_torch.PEAK_PRECISIONS:
        continue
      fn, items, flops, batch, size = peer_torch.peak_fn(name, precision, matmul_size,
                                                         conv_shape)
      rates = _rates(bench.time_calls(fn, steps, warmup), items)
      rows.append(_torch_row(cfg, "torch", name, "peak", precision, batch, size, rates, flops,
                             steps))
  return rows


def measure_round(cfg, round_index: int, *, rows: Sequence[str], precisions: Sequence[str],
                  peer_options: Sequence[str], batch_size: int, steps: int, warmup: int,
                  jit_compile, peak_matmul_size: int, peak_conv_shape: Sequence[int],
                  forward: dict[str, int], peer_forward: dict[str, int]
                  ) -> tuple[list[dict], list[str]]:
  """One round: the peak rows, then each row's project and peer variants, alternating.

  Returns the round's rows (each with "round") and the variants that failed.
  """
  # Both frameworks' peaks at every precision of the run, so that each variant is held
  # to the best kernel of its precision, whichever framework has it.
  every_precision = list(dict.fromkeys(
      _resolved_precisions(precisions) + [peer_torch.OPTIONS[o].precision for o in peer_options]))
  measured = _peak_rows(cfg, every_precision, steps, warmup, peak_matmul_size, peak_conv_shape)
  failed = []
  for row in rows:
    ours, theirs = [(PROJECT, p) for p in precisions], [(PEER, o) for o in peer_options]
    # Every other round the peer goes first, so that a drift of the machine's
    # speed over a round does not favour one framework.
    for framework, variant in ours + theirs if round_index % 2 == 0 else theirs + ours:
      print(f"[vs_pytorch] round {round_index + 1}: {row} {framework} {variant} ...",
            file=sys.stderr, flush=True)
      try:
        if framework == PROJECT:
          new = _project_rows(cfg, row, variant, batch_size, steps, warmup, jit_compile,
                              forward)
        else:
          new = [_peer_row(cfg, row, variant, batch_size, steps, warmup, peer_forward)]
        measured.extend(new)
        # Each figure as it is measured: a long run shows its progress.
        for r in new:
          print(f"[vs_pytorch]   {r['img_per_s']:.3g} img/s ({r['option']}, "
                f"{r['precision']})", file=sys.stderr, flush=True)
      except Exception:  # pylint: disable=broad-except
        # One variant that cannot run here (no C++ compiler for torch.compile,
        # a bf16 kernel missing) must not lose the others.
        logging.exception("%s %s %s failed.", row, framework, variant)
        failed.append(f"{row} {framework} {variant}")
  return [{**r, "round": round_index + 1} for r in measured], failed


def aggregate(rows: Sequence[dict]) -> list[dict]:
  """One row per variant over the rounds: the median of the round medians, overall min and max.

  Then fills `peak_fraction` (bench.add_peak_fractions: the best peak row of
  the same precision, either framework). Keeps first-seen order.
  """
  groups: dict[tuple, list[dict]] = {}
  for row in rows:
    key = (row["row"], row["framework"], row["option"], row["precision"])
    groups.setdefault(key, []).append(row)
  merged = []
  for group in groups.values():
    medians = [r["img_per_s"] for r in group]
    first = {k: v for k, v in group[0].items() if k != "round"}
    rate = statistics.median(medians)
    merged.append({**first, "img_per_s": rate,
                   "img_per_s_min": min(r["img_per_s_min"] for r in group),
                   "img_per_s_max": max(r["img_per_s_max"] for r in group),
                   "gflops": first["gflop_per_img"] * rate,
                   "peak_rss_mb": max(r["peak_rss_mb"] for r in group),
                   "round_img_per_s": medians})
  return bench.add_peak_fractions(merged)


# --------------------------------------------------------------------------
# Tables.


def _pct(fraction) -> str:
  return "-" if fraction is None else f"{100 * fraction:.0f}%"


def format_summary(rows: Sequence[dict], peer_options: Sequence[str]) -> str:
  """One line per row and project precision: both frameworks, the ratio, shares of the peak."""
  header = (["row", "GFLOP/img", "cascade_tf img/s"] + [f"PyTorch {o}" for o in peer_options] +
            ["cascade_tf / PyTorch best", "% of peak: cascade_tf / PyTorch best"])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for name in ROWS:
    peer = {r["option"]: r for r in rows if r["row"] == name and r["framework"] == PEER}
    best = max(peer.values(), key=lambda r: r["img_per_s"], default=None)
    for ours in (r for r in rows if r["row"] == name and r["framework"] == PROJECT):
      cells = [name, f"{ours['gflop_per_img']:.3g}",
               f"{ours['img_per_s']:.3g} ({ours['option']}, {_pct(ours['peak_fraction'])})"]
      for option in peer_options:
        r = peer.get(option)
        cells.append("failed" if r is None else
                     f"{r['img_per_s']:.3g} ({_pct(r['peak_fraction'])})")
      if best is None:
        cells += ["-", f"{_pct(ours['peak_fraction'])} / -"]
      else:
        cells += [f"{ours['img_per_s'] / best['img_per_s']:.2f}x (vs {best['option']})",
                  f"{_pct(ours['peak_fraction'])} / {_pct(best['peak_fraction'])}"]
      lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def format_details(rows: Sequence[dict]) -> str:
  """Every variant and peak row: images/s over the rounds, GFLOP/s, share of the peak."""
  lines = ["| row | framework | option | precision | batch | img/s median [min–max] | "
           "round medians | GFLOP/s | % of peak |", "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    rounds = ", ".join(f"{v:.3g}" for v in r["round_img_per_s"])
    lines.append(f"| {r['row']} | {r['framework']} | {r['option']} | {r['precision']} | "
                 f"{r['batch_size']} | {r['img_per_s']:.3g} [{r['img_per_s_min']:.3g}–"
                 f"{r['img_per_s_max']:.3g}] | {rounds} | {r['gflops']:.1f} | "
                 f"{_pct(r['peak_fraction'])} |")
  return "\n".join(lines)


def header(cfg, precisions, jit_compile, threads, batch_size, rounds, steps, warmup) -> str:
  """bench.py's machine header, plus PyTorch's version and threads and this run's shape."""
  return "\n".join([
      bench.machine_header(",".join(precisions), jit_compile, threads),
      f"PyTorch {torch.__version__} (threads intra/inter: {torch.get_num_threads()}/"
      f"{torch.get_num_interop_threads()}, oneDNN: {torch.backends.mkldnn.is_available()}), "
      f"Python {platform.python_version()}",
      f"preset: {cfg.preset}, image {cfg.data.image_size}px, batch {batch_size}, "
      f"{rounds} round(s) of {warmup} warm-up + {steps} timed steps per variant, one process",
  ])


# --------------------------------------------------------------------------
# Command line.

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Declares the command line (when run as a script)."""
  cli.define_flags(flags, cli.DATA_FLAGS)
  FLAGS.set_default("preset", "paper")
  flags.DEFINE_integer("batch_size", 8, "Images per step of every row but the peak rows.")
  flags.DEFINE_list("modes", list(ROWS), f"Rows to compare, some of {list(ROWS)}.")
  flags.DEFINE_list("precisions", [bench.AUTO], "The project's precisions (bench.py's "
                    f"--precision), some of {[bench.AUTO, *bench.PRECISIONS]}.")
  flags.DEFINE_list("peer_options", list(peer_torch.OPTIONS), "The PyTorch peer's options, "
                    f"some of {list(peer_torch.OPTIONS)}.")
  flags.DEFINE_enum("jit_compile", None, ["auto", "on", "off"], "The project's XLA setting, as "
                    "bench.py's (default: the preset's train.jit_compile).")
  flags.DEFINE_integer("rounds", 2, "Rounds; each measures every variant once (>= 2 for a "
                       "comparison, 1 for a smoke check).")
  flags.DEFINE_integer("steps", 5, "Timed steps per variant and round.")
  flags.DEFINE_integer("warmup", 2, "Untimed steps before them (compilation included).")
  flags.DEFINE_integer("threads_intra", 0, "Intra-op threads of TensorFlow and PyTorch "
                       "(0: each framework's default).")
  flags.DEFINE_integer("threads_inter", 0, "Inter-op threads of both (0: defaults).")
  flags.DEFINE_integer("peak_matmul_size", 4096, "N of the NxN peak matmul.")
  flags.DEFINE_list("peak_conv_shape", ["8", "128", "256"], "batch,size,channels of the peak "
                    "3x3 convolution.")
  flags.DEFINE_string("json", None, "Write the aggregated rows to this JSON file.")
  flags.DEFINE_boolean("quick", False, "Smoke check: " + ", ".join(
      f"--{k}={','.join(v) if isinstance(v, list) else v}" for k, v in QUICK.items()) +
                       " (each unless given).")


def _apply_quick() -> None:
  for name, value in QUICK.items():
    if not FLAGS[name].present:
      FLAGS[name].value = value


def _check_choices(name: str, values: Sequence[str], choices) -> None:
  unknown = [v for v in values if v not in choices]
  if unknown or not values:
    raise app.UsageError(f"--{name}={','.join(values)}: expected some of {list(choices)}.")


def main(argv):
  del argv
  if FLAGS.quick:
    _apply_quick()
  _check_choices("modes", FLAGS.modes, ROWS)
  _check_choices("precisions", FLAGS.precisions, [bench.AUTO, *bench.PRECISIONS])
  _check_choices("peer_options", FLAGS.peer_options, peer_torch.OPTIONS)
  if FLAGS.rounds < 1 or FLAGS.steps < 1 or FLAGS.warmup < 1 or FLAGS.batch_size < 1:
    raise app.UsageError(f"--rounds={FLAGS.rounds}, --steps={FLAGS.steps}, --warmup="
                         f"{FLAGS.warmup} and --batch_size={FLAGS.batch_size} must be >= 1.")
  bench.configure_threads(FLAGS.threads_intra, FLAGS.threads_inter)
  if FLAGS.threads_intra:
    torch.set_num_threads(FLAGS.threads_intra)
  if FLAGS.threads_inter:
    torch.set_num_interop_threads(FLAGS.threads_inter)
  cfg = cli.config_from_flags(FLAGS, cli.DATA_FLAGS)
  peer_torch.check_supported(cfg)
  forward = flops_lib.network_forward_flops(cfg)
  peer_forward = peer_torch.check_flops(cfg, project=forward)
  print(header(cfg, FLAGS.precisions, FLAGS.jit_compile or f"{cfg.train.jit_compile} (preset)",
               (FLAGS.threads_intra, FLAGS.threads_inter), FLAGS.batch_size, FLAGS.rounds,
               FLAGS.steps, FLAGS.warmup))
  print("FLOPs per image, forward (GFLOP), both frameworks (matched within 1%): "
        + ", ".join(f"{k} {v / 1e9:.3g}" for k, v in forward.items()) + "\n", flush=True)

  measured, failed = [], []
  for round_index in range(FLAGS.rounds):
    rows, round_failed = measure_round(
        cfg, round_index, rows=[r for r in ROWS if r in FLAGS.modes],
        precisions=FLAGS.precisions, peer_options=FLAGS.peer_options,
        batch_size=FLAGS.batch_size, steps=FLAGS.steps, warmup=FLAGS.warmup,
        jit_compile=FLAGS.jit_compile, peak_matmul_size=FLAGS.peak_matmul_size,
        peak_conv_shape=tuple(int(v) for v in FLAGS.peak_conv_shape), forward=forward,
        peer_forward=peer_forward)
    measured.extend(rows)
    failed.extend(round_failed)
  rows = aggregate(measured)

  if FLAGS.json:
    bench.write_json(FLAGS.json, rows)
  print(format_summary(rows, FLAGS.peer_options))
  print("\n(n%): the share of the measured peak of the variant's precision.\n")
  print(format_details(rows))
  if failed:
    print(f"\nFailed: {'; '.join(failed)}")
  return 1 if failed else 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
