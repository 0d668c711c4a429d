"""Peak memory (RSS) and seconds per megapixel of restore.py on 1, 12 and 48 megapixel photos.

    python benchmarks/restore_memory.py
    python benchmarks/restore_memory.py --model=pretrained --megapixels=12 --precisions=float32,auto
    python benchmarks/restore_memory.py --preset=cpu --megapixels=1,12 --tile_size=128
    python benchmarks/restore_memory.py --repo=/tmp/older_checkout   # another version's restore.py
    python benchmarks/restore_memory.py --model=pretrained --megapixels=4 --self_ensembles=1,4,8
    python benchmarks/restore_memory.py --model=pretrained --megapixels=1 --freeze=off,on

Writes a seeded random cascade of `--preset` as a workdir (what the
networks learnt does not change memory or time; their widths do), or uses
the shipped cascade (`--model=pretrained`), makes one JPEG photo per size
(4:3, the astronaut photo of scikit-image scaled up, q90), and runs
`restore.py` on each in a fresh process, as a user would, once per
--precisions (restore.py's --mixed_precision; `auto` is shown with what it
resolves to here), per --self_ensembles (restore.py's --self_ensemble:
each network run on N symmetries of each tile) and per --freeze (`on`:
restore.py --freeze, the cascade run as a frozen graph). The peak
resident memory of that process (`ru_maxrss` from wait4) and its wall
time are read for each photo, and for a 64 x 64 image: that baseline is
TensorFlow, the networks and one batch of tiles
(and, for the time, starting Python and TensorFlow and loading the model),
so the difference is what the photo's size costs; `s/MP` is that time
difference per megapixel. Prints a Markdown table with the machine.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

# pylint: disable=wrong-import-position
import cascade_tf  # noqa: F401  Before TensorFlow: the package's oneDNN default.
import keras
import numpy as np
from PIL import Image
from skimage import data as skimage_data

from cascade_tf import config as config_lib
from cascade_tf import inference
from cascade_tf import runtime
from cascade_tf.models import cascade as cascade_lib
from cascade_tf.models import generator as generator_lib
from cascade_tf.models import restorer as restorer_lib


def make_photo(path: str, megapixels: float) -> tuple[int, int]:
  """Writes a 4:3 JPEG of about `megapixels` MP; returns (width, height)."""
  width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
  height = int(round(width * 3 / 4))
  Image.fromarray(skimage_data.astronaut()).resize((width, height), Image.Resampling.BICUBIC).save(
      path, format="JPEG", quality=90)
  return width, height


def run_restore(repo: str, photo: str, workdir: str, output_dir: str,
                extra: list[str]) -> tuple[float, float, str]:
  """Runs `repo`/restore.py on one photo in a new process: (peak RSS in MiB, seconds, stderr).

  `workdir` is a workdir or `pretrained`.
  """
  which = "--model" if workdir == "pretrained" else "--workdir"
  command = [sys.executable, os.path.join(repo, "restore.py"), photo, f"{which}={workdir}",
             f"--output_dir={output_dir}", *extra]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=repo)
  start = time.perf_counter()
  with tempfile.TemporaryFile() as stderr:
    process = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.DEVNULL,
                               stderr=stderr)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    stderr.seek(0)
    text = stderr.read().decode(errors="replace")
  if os.waitstatus_to_exitcode(status) != 0:
    raise RuntimeError(f"{' '.join(command)} failed:\n{text[-3000:]}")
  return usage.ru_maxrss / 1024.0, seconds, text  # ru_maxrss is in KiB on Linux.


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--preset", default="tiny", choices=list(config_lib.PRESETS))
  parser.add_argument("--megapixels", default="1,12,48")
  parser.add_argument("--tile_size", type=int, default=128)
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--model", default=None,
                      help="pretrained: the shipped cascade (default: a random --preset one)")
  parser.add_argument("--precisions", default="float32",
                      help="restore.py --mixed_precision values, comma-separated (e.g. "
                           "float32,auto)")
  parser.add_argument("--self_ensembles", default="1",
                      help="restore.py --self_ensemble values, comma-separated (e.g. 1,4,8)")
  parser.add_argument("--freeze", default="off",
                      help="off, on, or off,on: restore.py without and with --freeze")
  parser.add_argument("--repo", default=_ROOT,
                      help="checkout whose restore.py is run (default: this one)")
  args = parser.parse_args(argv)
  sizes = [float(v) for v in args.megapixels.split(",")]
  precisions = [v for v in args.precisions.split(",") if v]
  unknown = [p for p in precisions if p not in config_lib.PRECISIONS]
  if unknown or not precisions:
    parser.error(f"--precisions={args.precisions}: expected some of {config_lib.PRECISIONS}.")
  values = [v.strip() for v in args.self_ensembles.split(",") if v.strip()]
  if not all(v.isdigit() for v in values):
    parser.error(f"--self_ensembles={args.self_ensembles}: expected integers, e.g. 1,4,8.")
  try:
    ensembles = [cascade_lib.check_self_ensemble(int(v), "--self_ensembles") for v in values]
  except ValueError as error:
    parser.error(str(error))
  if not ensembles:
    parser.error(f"--self_ensembles={args.self_ensembles}: name at least one.")
  freezes = [v.strip() for v in args.freeze.split(",") if v.strip()]
  if not freezes or any(v not in ("off", "on") for v in freezes):
    parser.error(f"--freeze={args.freeze}: expected off, on or off,on.")
  extra = [f"--tile_size={args.tile_size}", f"--batch_size={args.batch_size}"]
  model, features = runtime.cpu_info()
  with tempfile.TemporaryDirectory() as tmp:
    if args.model == "pretrained":
      source, what = "pretrained", "the shipped cascade (pretrained)"
    elif args.model is None:
      cfg = config_lib.PRESETS[args.preset]()
      keras.utils.set_random_seed(0)
      source = inference.write_workdir(
          os.path.join(tmp, "workdir"), cfg, generator_lib.build_generator(cfg.generator, None),
          restorer_lib.build_restorer(cfg.restorer, None))
      what = f"a random cascade of preset {args.preset}"
    else:
      parser.error(f"--model={args.model}: only 'pretrained' (or none: a random --preset "
                   "cascade).")
    small = os.path.join(tmp, "small.png")
    Image.fromarray(np.full([64, 64, 3], 128, np.uint8)).save(small)
    photos = []
    for megapixels in sizes:
      photo = os.path.join(tmp, f"photo_{megapixels:g}mp.jpg")
      photos.append((photo, *make_photo(photo, megapixels)))
    rows = []
    for precision, ensemble, frozen in itertools.product(precisions, ensembles, freezes):
      # Only flags that differ from restore.py's defaults (an older --repo may lack them).
      flags_ = (extra + [f"--mixed_precision={precision}"]
                + ([f"--self_ensemble={ensemble}"] if ensemble != 1 else [])
                + (["--freeze"] if frozen == "on" else []))
      label = precision
      if precision == config_lib.AUTO:
        label = f"auto ({runtime.resolve_precision(precision, 'infer')[0]})"
      if len(ensembles) > 1 or ensemble != 1:
        label += f", self-ensemble {ensemble}"
      if len(freezes) > 1 or frozen == "on":
        label += ", frozen" if frozen == "on" else ", not frozen"
      baseline, base_seconds, _ = run_restore(args.repo, small, source, os.path.join(tmp, "out"),
                                              flags_)
      for photo, width, height in photos:
        peak, seconds, _ = run_restore(args.repo, photo, source, os.path.join(tmp, "out"),
                                       flags_)
        pixels = width * height
        rows.append((label, f"{width}x{height}", pixels, baseline, peak, peak - baseline,
                     (peak - baseline) * 2 ** 20 / pixels, seconds,
                     (seconds - base_seconds) / (pixels / 1e6)))
  print(f"restore.py peak RSS and time, {what}, tiles {args.tile_size} px, batch "
        f"{args.batch_size}, repo {args.repo}")
  print(f"CPU: {model} ({', '.join(features) or 'no listed features'}), {os.cpu_count()} cores")
  print("Baseline: a 64 x 64 image (TensorFlow, the networks, one batch; its time is Python, "
        "TensorFlow and the model starting).\n")
  print("| precision | photo | pixels | baseline RSS (MiB) | peak RSS (MiB) | above baseline "
        "(MiB) | bytes per pixel | seconds | s/MP above baseline |")
  print("|---|---|---|---|---|---|---|---|---|")
  for label, size, pixels, baseline, peak, above, per_pixel, seconds, per_mp in rows:
    print(f"| {label} | {size} | {pixels / 1e6:.1f} M | {baseline:.0f} | {peak:.0f} | "
          f"{above:.0f} | {per_pixel:.1f} | {seconds:.0f} | {per_mp:.2f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
