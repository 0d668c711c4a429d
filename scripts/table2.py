"""Trains the paper's Table 2 variants at one image budget, then scores them side by side.

    python scripts/table2.py --root=runs/table2 --images=60000 --seeds=0,1,2 --parallel=2 -- \\
        --preset=cpu --dataset=bsd300 --manual_dir=../shared/data/BSDS300 \\
        --extra_train_dirs=../shared/data/BSDS500-test --lambda_per=0
    python scripts/table2.py --root=runs/table2 ... --evaluate_only   # after a crash, or to re-score

Variants (the paper's Table 2; each one run per seed in ROOT/<variant>_s<seed>):

* `intact`: the four stages in order, pretrain -> gan -> dd -> joint, the
  budget split between them by --split.
* `only_gan`: pretrain -> gan only, the whole budget split between the two
  in the ratio intact gives them; scored on the generator's output alone
  (its `cascade_intermediate` row: it has no restorer).
* `no_pretrain`: `joint` from random weights (`--init_from=scratch`) with
  the whole budget.

Every variant sees the same number of training images in its main updates
(`train.<stage>_images`, so batch sizes may differ per stage); the critic's
batches (n_critic per `gan` and `joint` step) are counted separately and
written to ROOT/budgets.json beside each run's steps. Every stage is a plain
`train.py` call (the flags after `--` are passed to every one, with
`--workdir`, `--seed` and the stage's `--set train.<stage>_images=N`), so a
crashed run resumes where it stopped when this script is run again, and a
finished stage is skipped. Up to --parallel runs train at once, one thread
each (TF_NUM_INTRAOP_THREADS=1), each with its own log ROOT/<run>.log.

ROOT/curves.png then plots every run's validation PSNR against the training
images it has seen (`report.plot_runs`): the curves show whether the budget
was enough for them to flatten.

Then `evaluate.py --compare=<run>=ROOT/<run>,...` on --eval_dataset (the
flags after `--` that name the data are passed on) writes
ROOT/eval/results.json, results.md and the figures, and this script
ROOT/eval/seeds.md and seeds.json: per variant and track, the mean and
standard deviation over its seeds (`seed_summary`). Runs named by
--variants x --seeds that were never trained (a variant run on fewer
seeds) are left out and named.

On a GPU machine without TensorFlow (this project's lent ones), `--trainer=jax`
trains each run with one `scripts/train_jax.py` call instead, from a bundle
of `scripts/prepare_jax_run.py` (made here, with the same flags, so that it
holds the validation batches), into ROOT/<run>/jax: the same stages, image
budgets and seeds, the config handed over as `--set` flags
(`config.overrides_between`); `no_pretrain` gets `--from_scratch`. Back
here, the same command with `--evaluate_only` imports every ROOT/<run>/jax
into the workdir ROOT/<run> (`training/imported.py`, validation curves
included), then plots and scores as above:

    python scripts/prepare_jax_run.py --out_dir=bundle --image_dirs=... <the flags after -->
    KERAS_BACKEND=jax python scripts/table2.py --trainer=jax --bundle=bundle --noevaluate \\
        --root=runs/table2 --images=60000 --seeds=0,1,2 -- <flags>        # there
    python scripts/table2.py --trainer=jax --evaluate_only --root=runs/table2 \\
        --images=60000 --seeds=0,1,2 -- <flags>                           # here
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import statistics
import subprocess
import sys

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from cascade_tf import cli  # pylint: disable=g-import-not-at-top
from cascade_tf import config as config_lib  # pylint: disable=g-import-not-at-top

VARIANTS = ("intact", "only_gan", "no_pretrain")
CURVES = "curves.png"  # Every run's validation PSNR against the images it has seen.
STAGES = ("pretrain", "gan", "dd", "joint")

_ROOT = flags.DEFINE_string("root", None, "Folder of the runs, their logs and the evaluation.")
_IMAGES = flags.DEFINE_integer("images", None, "Training images per variant (main updates).")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds; each variant is trained once per seed.")
_VARIANTS = flags.DEFINE_list("variants", list(VARIANTS), f"Some of {VARIANTS}.")
_SPLIT = flags.DEFINE_list("split", ["pretrain:0.4", "gan:0.2", "dd:0.2", "joint:0.2"],
                           "Shares of the budget of intact's stages, stage:share, sum 1.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs training at once (one thread each).")
_EVALUATE_ONLY = flags.DEFINE_bool("evaluate_only", False, "Skip training; only score.")
_EVALUATE = flags.DEFINE_bool("evaluate", True, "Score the runs with evaluate.py at the end.")
_TRAINER = flags.DEFINE_enum("trainer", "train_py", ["train_py", "jax"],
                             "train_py: train.py (TensorFlow); jax: scripts/train_jax.py from "
                             "--bundle, into ROOT/<run>/jax (imported by --evaluate_only).")
_BUNDLE = flags.DEFINE_string("bundle", None, "--trainer=jax: scripts/prepare_jax_run.py's "
                              "bundle.")
JAX_DIR = "jax"  # ROOT/<run>/jax: a --trainer=jax run's scripts/train_jax.py output.
_EVAL_FLAGS = flags.DEFINE_list(
    "eval_flags", ["--figure_images=3", "--notiming"],
    "Extra flags of evaluate.py (the data flags after `--` are passed on too).")

# The flags after `--` that evaluate.py takes too (the data's, the preset's).
_SHARED_EVAL_FLAGS = ("--preset", "--dataset", "--manual_dir", "--data_dir", "--image_dir",
                      "--image_size", "--hole_size")


def parse_split(items) -> dict[str, float]:
  """--split's stage:share pairs, checked: the four stages, shares > 0 summing to 1."""
  split = {}
  for item in items:
    stage, sep, share = item.partition(":")
    if not sep or stage not in STAGES:
      raise ValueError(f"--split: {item!r} is not stage:share with a stage of {STAGES}.")
    try:
      split[stage] = float(share)
    except ValueError:
      raise ValueError(f"--split: {item!r}: the share is not a number.") from None
  if set(split) != set(STAGES) or any(v <= 0 for v in split.values()):
    raise ValueError(f"--split: give each of {STAGES} a share > 0 (got {items}).")
  if abs(sum(split.values()) - 1.0) > 1e-6:
    raise ValueError(f"--split: the shares sum to {sum(split.values())}, not 1.")
  return split


def stage_budgets(variant: str, images: int, split: dict[str, float]) -> dict[str, int]:
  """Images of each stage a variant trains, in order; they sum to `images`."""
  if variant == "intact":
    shares = dict(split)
  elif variant == "only_gan":
    pair = split["pretrain"] + split["gan"]
    shares = {"pretrain": split["pretrain"] / pair, "gan": split["gan"] / pair}
  elif variant == "no_pretrain":
    shares = {"joint": 1.0}
  else:
    raise ValueError(f"Unknown variant {variant!r}: expected one of {VARIANTS}.")
  budgets = {stage: int(images * share) for stage, share in shares.items()}
  last = list(budgets)[-1]
  budgets[last] += images - sum(budgets.values())  # Rounding goes to the last stage.
  return budgets


def critic_images(cfg: config_lib.Config, stage: str, images: int) -> int:
  """Images the critic sees over a stage of `images` main-update images."""
  if stage not in ("gan", "joint"):
    return 0
  steps = -(-images // cfg.stage_batch_size(stage))
  return steps * cfg.train.n_critic * cfg.stage_batch_size(stage)


class DefineInto:
  """absl's `flags` module, defining into the FlagValues given (cli.define_flags's argument)."""

  def __init__(self, values: flags.FlagValues):
    self.values = values

  def __getattr__(self, name):
    return functools.partial(getattr(flags, name), flag_values=self.values)


def _config(train_flags) -> config_lib.Config:
  """The config the runs train with, resolved from the flags as train.py resolves them."""
  for flag in train_flags:
    if "=" not in flag and not flag.startswith("--no"):
      raise ValueError(f"{flag}: pass the training flags after `--` as --name=value.")
  values = flags.FlagValues()
  cli.define_flags(DefineInto(values), cli.TRAIN_FLAGS)
  try:
    values(["train.py", *train_flags])
  except flags.Error as e:
    raise ValueError(f"the training flags after `--`: {e}") from None
  return cli.config_from_flags(values, cli.TRAIN_FLAGS)


def train_commands(run_dir: str, variant: str, seed: str, budgets: dict[str, int],
                   train_flags) -> list[list[str]]:
  """The train.py calls of one run, in order."""
  commands = []
  for stage, images in budgets.items():
    command = [sys.executable, os.path.join(REPO, "train.py"), *train_flags,
               f"--workdir={run_dir}", f"--seed={seed}", f"--stage={stage}",
               f"--set=train.{stage}_images={images}"]
    if variant == "no_pretrain":
      command.append("--init_from=scratch")
    commands.append(command)
  return commands


def jax_command(run_dir: str, variant: str, seed: str, budgets: dict[str, int],
                cfg: config_lib.Config, bundle: str) -> list[str]:
  """The one scripts/train_jax.py call of a run: its stages, budgets and seed, into RUN/jax."""
  preset = config_lib.get_preset(cfg.preset)
  sets = [f"--set={key}={value}"
          for key, value in config_lib.overrides_between(preset, cfg).items()
          if key != "train.seed" and not key.endswith("_images")]
  command = [sys.executable, os.path.join(REPO, "scripts", "train_jax.py"), f"--bundle={bundle}",
             f"--out_dir={os.path.join(run_dir, JAX_DIR)}", f"--preset={cfg.preset}", *sets,
             f"--seed={seed}", f"--stages={','.join(budgets)}",
             *(f"--set=train.{stage}_images={images}" for stage, images in budgets.items())]
  if variant == "no_pretrain":
    command.append("--from_scratch")
  return command


def import_jax_runs(root: str, names) -> list[str]:
  """Imports each ROOT/<run>/jax (a finished train_jax.py run) into the workdir ROOT/<run>.

  A run already imported (its workdir has config.json) is left alone.
  Returns the runs imported now.
  """
  from cascade_tf.training import imported  # pylint: disable=g-import-not-at-top  (TensorFlow)
  done = []
  for name in names:
    run_dir, workdir = os.path.join(root, name, JAX_DIR), os.path.join(root, name)
    if (os.path.exists(os.path.join(run_dir, "run.json"))
        and not os.path.exists(os.path.join(workdir, "config.json"))):
      imported.import_run(run_dir, workdir)
      done.append(name)
  return done


def _run_one(name: str, commands, log_path: str) -> str:
  env = dict(os.environ, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
             OMP_NUM_THREADS="1")
  with open(log_path, "a") as log:
    for command in commands:
      log.write("$ " + " ".join(command) + "\n")
      log.flush()
      code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
      if code:
        return f"{name}: {' '.join(command[2:])} exited with {code} (see {log_path})"
  return ""


def write_budgets(path: str, budgets: dict) -> None:
  """Writes ROOT/budgets.json; runs already there from the same experiment are kept.

  Another call of this script with other --seeds or --variants (the same
  --images, --split and train flags) adds its runs to the file rather than
  replacing theirs; a different experiment replaces the file.
  """
  try:
    with open(path) as f:
      previous = json.load(f)
  except (OSError, ValueError):
    previous = {}
  same = all(previous.get(k) == budgets[k] for k in ("images_per_variant", "split", "train_flags"))
  if same:
    budgets = {**budgets, "runs": {**previous.get("runs", {}), **budgets["runs"]}}
  with open(path, "w") as f:
    json.dump(budgets, f, indent=2)


def seed_summary(results: dict, runs: dict) -> dict:
  """Per variant, output and track: the mean, sample standard deviation and values over seeds.

  `results` is evaluate.py's results.json["results"]; `runs` maps a run name
  (`<variant>_s<seed>`) to (variant, seed). A variant's `final` output is
  its runs' rows (the restorer's R(G(x))), its `intermediate` output their
  `_intermediate` rows (the generator's G(x)); `only_gan` has only the
  latter. The table's score of a variant is its final output where it has
  one, else its intermediate output (`scored`).
  """
  summary = {}
  for variant in dict.fromkeys(v for v, _ in runs.values()):
    names = [name for name, (v, _) in runs.items() if v == variant]
    outputs = {}
    for output, suffix in (("final", ""), ("intermediate", "_intermediate")):
      rows = [results[name + suffix] for name in names if name + suffix in results]
      if len(rows) != len(names):
        continue
      tracks = {}
      for track in rows[0]:
        values = {metric: [row[track].get(metric) for row in rows]
                  for metric in ("psnr", "ssim", "hole_psnr")}
        # A metric a track does not have (hole PSNR without a hole) is None: left out.
        values = {m: v for m, v in values.items() if all(x is not None for x in v)}
        tracks[track] = {metric: {"mean": statistics.fmean(v),
                                  "std": statistics.stdev(v) if len(v) > 1 else None,
                                  "values": v}
                         for metric, v in values.items()}
      outputs[output] = tracks
    if outputs:
      summary[variant] = {"seeds": [int(runs[n][1]) for n in names],
                          "scored": "final" if "final" in outputs else "intermediate",
                          **outputs}
  return summary


def format_seed_summary(summary: dict) -> str:
  """Markdown: per track, each variant's scored output, PSNR mean ± std (n seeds) and SSIM."""
  tracks = list(dict.fromkeys(t for v in summary.values() for t in v[v["scored"]]))
  lines = ["| variant | output | seeds | " + " | ".join(f"{t} PSNR" for t in tracks) + " | " +
           " | ".join(f"{t} SSIM" for t in tracks) + " |",
           "|---|---|---|" + "---:|" * (2 * len(tracks))]

  def cell(stats, digits):
    if stats is None:
      return "-"
    return (f"{stats['mean']:.{digits}f}" if stats["std"] is None
            else f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}")

  for variant, v in summary.items():
    for output in ("final", "intermediate"):
      if output not in v:
        continue
      rows = v[output]
      label = f"{output}{' (scored)' if output == v['scored'] else ''}"
      lines.append(f"| {variant} | {label} | {len(v['seeds'])} | " +
                   " | ".join(cell(rows.get(t, {}).get("psnr"), 2) for t in tracks) + " | " +
                   " | ".join(cell(rows.get(t, {}).get("ssim"), 4) for t in tracks) + " |")
  lines.append("")
  lines.append("Mean ± sample standard deviation over the seeds (no ± with one seed).")
  return "\n".join(lines) + "\n"


def main(argv):
  train_flags = list(argv[1:])
  if not _ROOT.value:
    raise app.UsageError("--root is required.")
  if not _EVALUATE_ONLY.value and (not _IMAGES.value or _IMAGES.value < 1):
    raise app.UsageError("--images: a positive number of training images per variant.")
  unknown = set(_VARIANTS.value) - set(VARIANTS)
  if unknown:
    raise app.UsageError(f"--variants: {sorted(unknown)} not in {VARIANTS}.")
  try:
    split = parse_split(_SPLIT.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  os.makedirs(_ROOT.value, exist_ok=True)
  runs = {f"{variant}_s{seed}": (variant, seed) for variant in _VARIANTS.value
          for seed in _SEEDS.value}

  jax = _TRAINER.value == "jax"
  if jax and not _EVALUATE_ONLY.value and not _BUNDLE.value:
    raise app.UsageError("--trainer=jax needs --bundle (scripts/prepare_jax_run.py).")
  if not _EVALUATE_ONLY.value:
    try:
      cfg = _config(train_flags)
    except ValueError as e:
      raise app.UsageError(str(e)) from None
    plan = {}
    for name, (variant, seed) in runs.items():
      budgets = stage_budgets(variant, _IMAGES.value, split)
      plan[name] = {
          "variant": variant, "seed": int(seed), "images": budgets,
          "steps": {s: -(-n // cfg.stage_batch_size(s)) for s, n in budgets.items()},
          # Whole batches: what the main updates really see.
          "images_seen": sum(-(-n // cfg.stage_batch_size(s)) * cfg.stage_batch_size(s)
                             for s, n in budgets.items()),
          "critic_images": sum(critic_images(cfg, s, n) for s, n in budgets.items()),
      }
    write_budgets(os.path.join(_ROOT.value, "budgets.json"),
                  {"images_per_variant": _IMAGES.value, "split": split,
                   "train_flags": train_flags, "runs": plan})
    def commands(name, variant, seed):
      run_dir = os.path.join(_ROOT.value, name)
      if jax:
        return [jax_command(run_dir, variant, seed, plan[name]["images"], cfg, _BUNDLE.value)]
      return train_commands(run_dir, variant, seed, plan[name]["images"], train_flags)

    with concurrent.futures.ThreadPoolExecutor(max(1, _PARALLEL.value)) as pool:
      futures = [pool.submit(_run_one, name, commands(name, variant, seed),
                             os.path.join(_ROOT.value, f"{name}.log"))
                 for name, (variant, seed) in runs.items()]
      failures = [f.result() for f in futures if f.result()]
    if failures:
      sys.exit("table2.py: error:\n" + "\n".join(failures))

  if jax and not _EVALUATE.value and not _EVALUATE_ONLY.value:
    print(f"Trained into {_ROOT.value}/<run>/{JAX_DIR}; where TensorFlow is, run the same "
          "command with --evaluate_only to import, plot and score them.", flush=True)
    return
  if jax:
    for name in import_jax_runs(_ROOT.value, runs):
      print(f"Imported {name}/{JAX_DIR} into {os.path.join(_ROOT.value, name)}", flush=True)
  trained = {name: os.path.join(_ROOT.value, name) for name in runs
             if os.path.exists(os.path.join(_ROOT.value, name, "config.json"))}
  missing = [name for name in runs if name not in trained]
  if missing:  # e.g. --seeds=0,1,2 where only some variants were trained on every seed.
    print(f"Not trained, left out: {', '.join(missing)}", flush=True)
  runs = {name: runs[name] for name in trained}
  if trained:
    from cascade_tf.training import report  # pylint: disable=g-import-not-at-top  (matplotlib)
    curves = os.path.join(_ROOT.value, CURVES)
    report.plot_runs(trained, curves, title=f"{_IMAGES.value or ''} images per variant".strip())
    print(f"Wrote {curves}", flush=True)

  if _EVALUATE.value and runs:
    compare = ",".join(f"{name}={os.path.join(_ROOT.value, name)}" for name in runs)
    shared = [f for f in train_flags if f.partition("=")[0] in _SHARED_EVAL_FLAGS]
    eval_dir = os.path.join(_ROOT.value, "eval")
    command = [sys.executable, os.path.join(REPO, "evaluate.py"), *shared,
               f"--compare={compare}", f"--output_dir={eval_dir}", *_EVAL_FLAGS.value]
    print("$ " + " ".join(command), flush=True)
    code = subprocess.call(command, cwd=REPO)
    if code == 0:
      with open(os.path.join(eval_dir, "results.json")) as f:
        summary = seed_summary(json.load(f)["results"], runs)
      with open(os.path.join(eval_dir, "seeds.json"), "w") as f:
        json.dump(summary, f, indent=2)
      with open(os.path.join(eval_dir, "seeds.md"), "w") as f:
        f.write(format_seed_summary(summary))
      print(f"Wrote {eval_dir}/seeds.md and seeds.json", flush=True)
    sys.exit(code)


if __name__ == "__main__":
  app.run(main)
