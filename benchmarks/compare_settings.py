"""One Markdown table of the rows of several bench.py --json files, side by side.

    python benchmarks/compare_settings.py docs/bench_settings/*.json --stages=joint,infer_keras

Each file is one run of benchmarks/bench.py under some setting (oneDNN,
XLA, threads, precision, ...); its name (without .json) labels its rows,
so name the files after what was varied. Rows are grouped by stage and
sorted by images/s, fastest first, with the settings each row recorded.
Reads only the JSON files: it measures nothing and needs no TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def load_rows(paths: list[str], stages: list[str] | None) -> list[dict]:
  """The rows of every file, each with `run` set to its file's name."""
  rows = []
  for path in paths:
    try:
      with open(path) as f:
        file_rows = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise SystemExit(f"{path}: not a bench.py --json file ({e}).") from None
    if not isinstance(file_rows, list):
      raise SystemExit(f"{path}: expected a JSON list of rows, as bench.py --json writes.")
    run = os.path.splitext(os.path.basename(path))[0]
    for row in file_rows:
      if stages is None or row.get("stage") in stages:
        rows.append({**row, "run": run})
  return rows


def _threads(row: dict) -> str:
  intra, inter = row.get("threads_intra"), row.get("threads_inter")
  return f"{intra or 'default'}/{inter or 'default'}"


def format_table(rows: list[dict]) -> str:
  lines = ["| stage | run | preset | oneDNN | XLA | threads intra/inter | precision | batch | "
           "img/s median [min–max] | peak RSS MB |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  order = list(dict.fromkeys(row["stage"] for row in rows))
  for stage in order:
    for row in sorted((r for r in rows if r["stage"] == stage), key=lambda r: -r["img_per_s"]):
      lines.append(
          f"| {stage} | {row['run']} | {row.get('preset')} | {row.get('onednn')} | "
          f"{row.get('jit_compile')} | "
          f"{_threads(row)} | {row['precision']} | {row['batch_size']} | "
          f"{row['img_per_s']:.3g} [{row['img_per_s_min']:.3g}–{row['img_per_s_max']:.3g}] | "
          f"{row['peak_rss_mb']:.0f} |")
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("files", nargs="+", help="bench.py --json files")
  parser.add_argument("--stages", default=None,
                      help="comma-separated rows to keep (default: all)")
  args = parser.parse_args(argv)
  stages = args.stages.split(",") if args.stages else None
  rows = load_rows(args.files, stages)
  if not rows:
    raise SystemExit(f"No rows{' for --stages=' + args.stages if stages else ''} in "
                     f"{', '.join(args.files)}.")
  print(format_table(rows))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
