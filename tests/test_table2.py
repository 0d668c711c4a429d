"""scripts/table2.py: the Table 2 variants' budgets and train.py calls (its end-to-end run is
the one documented in docs/results.md)."""

import json

import pytest

from cascade_tf import config
from scripts import table2

SPLIT = {"pretrain": 0.4, "gan": 0.2, "dd": 0.2, "joint": 0.2}


@pytest.mark.parametrize("variant,stages", [("intact", ["pretrain", "gan", "dd", "joint"]),
                                            ("only_gan", ["pretrain", "gan"]),
                                            ("no_pretrain", ["joint"])])
def test_every_variant_sees_the_same_images(variant, stages):
  budgets = table2.stage_budgets(variant, 60001, SPLIT)
  assert list(budgets) == stages
  assert sum(budgets.values()) == 60001
  if variant == "only_gan":  # pretrain : gan as in intact.
    assert budgets["pretrain"] == pytest.approx(2 * budgets["gan"], abs=2)


def test_split_is_checked():
  assert table2.parse_split(["pretrain:0.5", "gan:0.1", "dd:0.2", "joint:0.2"])["gan"] == 0.1
  for bad in (["pretrain:0.5"], ["pretrain:0.5", "gan:0.5", "dd:0.5", "joint:0.5"],
              ["pretrain:x", "gan:0.2", "dd:0.2", "joint:0.6"], ["warm:1"]):
    with pytest.raises(ValueError, match="--split"):
      table2.parse_split(bad)


def test_critic_images_count_n_critic_batches_per_adversarial_step():
  cfg = config.with_overrides(config.tiny(), {"train.n_critic": 5, "train.batch_size": 4})
  assert table2.critic_images(cfg, "gan", 10) == 3 * 5 * 4  # 3 steps of batch 4.
  assert table2.critic_images(cfg, "dd", 10) == 0


def test_train_commands_pass_budget_seed_workdir_and_scratch():
  commands = table2.train_commands("/r/no_pretrain_s1", "no_pretrain", "1", {"joint": 100},
                                   ["--preset=cpu"])
  [command] = commands
  assert command[1].endswith("train.py") and "--preset=cpu" in command
  assert {"--workdir=/r/no_pretrain_s1", "--seed=1", "--stage=joint",
          "--set=train.joint_images=100", "--init_from=scratch"} <= set(command)
  intact = table2.train_commands("/r/i", "intact", "0", {"pretrain": 1, "gan": 1}, [])
  assert [c[-1] for c in intact] == ["--set=train.pretrain_images=1", "--set=train.gan_images=1"]


def test_training_flags_must_be_name_value():
  cfg = table2._config(["--preset=tiny", "--set=train.n_critic=3"])
  assert cfg.train.n_critic == 3 and cfg.preset == "tiny"
  with pytest.raises(ValueError, match="--name=value"):
    table2._config(["--preset", "tiny"])


def _fake_run(path, stages):
  """A workdir with config.json and, per stage, (steps, val rows) in metrics.jsonl."""
  from cascade_tf import config as config_lib
  path.mkdir()
  cfg = config_lib.with_overrides(config_lib.tiny(), {"train.batch_size": 4,
                                                     "train.joint_batch_size": 2})
  (path / "config.json").write_text(config_lib.to_json(cfg))
  for stage, (track, outputs) in stages.items():
    (path / stage).mkdir()
    rows = [{"step": 5, "mse": 0.1}, {"step": 10, "mse": 0.05}]
    for step in (5, 10):
      rows += [{"step": step, "val_track": track, "val_psnr_identity": 18.0,
                **{f"val_psnr_{o}": 18.0 + step / 10 for o in outputs}}]
      # Another validation set (train.val_tracks on training photos): not a panel of its own.
      rows += [{"step": step, "val_track": "inpaint", "val_split": "train",
                "val_psnr_identity": 30.0, **{f"val_psnr_{o}": 40.0 for o in outputs}}]
    (path / stage / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  return str(path)


def test_curves_put_every_run_on_one_axis_of_images_seen(tmp_path):
  from cascade_tf.training import report
  runs = {
      "intact_s0": _fake_run(tmp_path / "intact", {
          "pretrain": ("inpaint", ["inpainted"]), "joint": ("joint", ["inpainted", "restored"])}),
      "no_pretrain_s0": _fake_run(tmp_path / "scratch", {
          "joint": ("joint", ["inpainted", "restored"])}),
  }
  drawn = report.plot_runs(runs, str(tmp_path / "curves.png"), title="60 images per variant")
  assert (tmp_path / "curves.png").stat().st_size > 5_000
  intact = drawn["intact_s0"]
  # pretrain: 10 steps of 4 images; joint then starts at 40 and counts 2 images a step.
  assert intact["pretrain"]["validation"]["inpainted"] == [(20, 18.5), (40, 19.0)]
  assert intact["joint"]["offset"] == 40
  assert intact["joint"]["validation"]["restored"] == [(50, 18.5), (60, 19.0)]
  assert drawn["no_pretrain_s0"]["joint"]["validation"]["restored"] == [(10, 18.5), (20, 19.0)]
  assert [entry["track"] for entry in intact.values()] == ["inpaint", "joint"]
  with pytest.raises(ValueError, match="has no"):  # Not a workdir.
    report.plot_runs({"x": str(tmp_path)}, str(tmp_path / "x.png"))


def test_plateau_table_compares_the_last_two_quarters_of_each_stage():
  from cascade_tf.training import report
  drawn = {"a": {"joint": {"track": "joint", "offset": 100, "validation": {
      "identity": [(120 + 10 * i, 18.0) for i in range(8)],
      # 8 validations over images 100..180: quarters (160, 180] and (140, 160].
      "restored": [(110 + 10 * i, 19.0 + (0.5 if i >= 6 else 0.1 * (i >= 4))) for i in range(8)],
  }}}, "b": {"pretrain": {"track": "inpaint", "offset": 0, "validation": {
      "inpainted": [(10, 18.0), (20, 18.5)]}}}}
  rows = report.plateau_table(drawn).splitlines()
  assert len(rows) == 4  # Header, rule, one row per run, stage and output (identity left out).
  assert rows[2] == "| a | joint | restored | 180 | 19.50 | 19.50 | 19.10 | +0.40 |"
  assert rows[3] == "| b | pretrain | inpainted | 20 | 18.50 | - | - | - |"  # Too few to judge.


def test_training_report_compares_runs_in_one_plot(tmp_path):
  import subprocess
  import sys
  run = _fake_run(tmp_path / "scratch", {"joint": ("joint", ["inpainted", "restored"])})
  script = [sys.executable, "scripts/training_report.py", f"--output_png={tmp_path / 'c.png'}"]
  out = subprocess.run(script + [f"--compare=x={run}, y={run}"], capture_output=True, text=True,
                       check=True).stdout
  assert "| x | joint | restored | 20 | 19.00 |" in out and "| y | joint |" in out
  assert (tmp_path / "c.png").stat().st_size > 5_000
  for bad, message in ((["--compare=x"], "--compare: expected name=WORKDIR"),
                       ([f"--compare=x={run},x={run}"], "the name 'x' is used twice"),
                       ([f"--compare=x={run}", f"--workdir={run}"], "exactly one of")):
    failed = subprocess.run(script + bad, capture_output=True, text=True)
    assert failed.returncode != 0 and message in failed.stderr, failed.stderr


def test_jax_command_hands_the_resolved_config_to_train_jax():
  """--trainer=jax: one train_jax.py call per run whose flags rebuild the very config."""
  from absl import flags as absl_flags
  from cascade_tf import cli
  train_flags = ["--preset=cpu", "--lambda_per=0", "--dataset=bsd300", "--manual_dir=/d",
                 "--set=generator.dilations=1,2", "--set=train.gan_lr=3e-05", "--n_critic=3"]
  cfg = table2._config(train_flags)
  budgets = table2.stage_budgets("no_pretrain", 100, SPLIT)
  command = table2.jax_command("/r/no_pretrain_s2", "no_pretrain", "2", budgets, cfg, "/b")
  assert command[1].endswith("scripts/train_jax.py")
  own = {"--bundle=/b", "--out_dir=/r/no_pretrain_s2/jax", "--stages=joint", "--from_scratch"}
  assert own <= set(command)
  values = absl_flags.FlagValues()  # train_jax.py's own flags, and the config's.
  define = table2.DefineInto(values)
  for name in ("bundle", "out_dir", "stages"):
    define.DEFINE_string(name, None, "")
  define.DEFINE_bool("from_scratch", False, "")
  cli.define_flags(define, ("seed",))
  values(["train_jax.py", *command[2:]])
  rebuilt = cli.config_from_flags(values, ("seed",))
  expected = config.with_overrides(cfg, {"train.seed": 2, "train.joint_images": 100})
  assert rebuilt == expected
  intact = table2.jax_command("/r/i", "intact", "0", table2.stage_budgets("intact", 100, SPLIT),
                              cfg, "/b")
  assert "--stages=pretrain,gan,dd,joint" in intact and "--from_scratch" not in intact


def test_import_jax_runs_imports_finished_runs_once(tmp_path, monkeypatch):
  from cascade_tf.training import imported
  calls = []
  monkeypatch.setattr(imported, "import_run", lambda run_dir, workdir: calls.append(
      (run_dir, workdir)))
  for name, files in (("a_s0", ["jax/run.json"]), ("b_s0", ["jax/run.json", "config.json"]),
                      ("c_s0", [])):
    for file in files:
      (tmp_path / name / file).parent.mkdir(parents=True, exist_ok=True)
      (tmp_path / name / file).write_text("{}")
  assert table2.import_jax_runs(str(tmp_path), ["a_s0", "b_s0", "c_s0"]) == ["a_s0"]
  assert calls == [(str(tmp_path / "a_s0" / "jax"), str(tmp_path / "a_s0"))]


def _row(psnr, ssim=0.5):
  return {"joint": {"psnr": psnr, "ssim": ssim, "hole_psnr": psnr - 3},
          "clean": {"psnr": 40.0 + psnr / 100, "ssim": 0.99, "hole_psnr": None}}


def test_seed_summary_scores_each_variant_on_its_final_output_over_seeds():
  runs = {"intact_s0": ("intact", "0"), "intact_s1": ("intact", "1"),
          "only_gan_s0": ("only_gan", "0"), "only_gan_s1": ("only_gan", "1"),
          "no_pretrain_s0": ("no_pretrain", "0")}
  results = {"intact_s0": _row(20.0), "intact_s0_intermediate": _row(19.0),
             "intact_s1": _row(21.0), "intact_s1_intermediate": _row(19.5),
             "only_gan_s0_intermediate": _row(19.8), "only_gan_s1_intermediate": _row(19.6),
             "no_pretrain_s0": _row(18.0), "no_pretrain_s0_intermediate": _row(17.5),
             "telea": _row(15.0)}
  summary = table2.seed_summary(results, runs)
  assert list(summary) == ["intact", "only_gan", "no_pretrain"]
  intact = summary["intact"]
  assert intact["scored"] == "final" and intact["seeds"] == [0, 1]
  assert intact["final"]["joint"]["psnr"]["mean"] == pytest.approx(20.5)
  assert intact["final"]["joint"]["psnr"]["std"] == pytest.approx(0.7071, abs=1e-4)
  assert intact["intermediate"]["joint"]["psnr"]["values"] == [19.0, 19.5]
  assert "hole_psnr" in intact["final"]["joint"] and "hole_psnr" not in intact["final"]["clean"]
  assert summary["only_gan"]["scored"] == "intermediate" and "final" not in summary["only_gan"]
  assert summary["no_pretrain"]["final"]["joint"]["psnr"]["std"] is None  # One seed.
  table = table2.format_seed_summary(summary)
  lines = table.splitlines()
  assert lines[0].startswith("| variant | output | seeds | joint PSNR | clean PSNR | joint SSIM")
  assert "| intact | final (scored) | 2 | 20.50 ± 0.71 |" in table
  assert "| only_gan | intermediate (scored) | 2 | 19.70 ± 0.14 |" in table
  assert "| no_pretrain | final (scored) | 1 | 18.00 |" in table


def test_budgets_of_a_second_call_are_added_to_the_same_experiment(tmp_path):
  path = str(tmp_path / "budgets.json")
  first = {"images_per_variant": 100, "split": SPLIT, "train_flags": ["--preset=tiny"],
           "runs": {"intact_s0": {"seed": 0}}}
  table2.write_budgets(path, first)
  table2.write_budgets(path, {**first, "runs": {"intact_s1": {"seed": 1}}})
  assert set(json.load(open(path))["runs"]) == {"intact_s0", "intact_s1"}
  table2.write_budgets(path, {**first, "images_per_variant": 200,  # Another experiment.
                              "runs": {"intact_s2": {"seed": 2}}})
  assert set(json.load(open(path))["runs"]) == {"intact_s2"}
