"""Tests of evaluate.py, cascade_tf.evaluation.evaluate and figures: tiny 32x32 runs.

The metrics themselves are cross-checked against scikit-image in
test_metrics.py. Here: the identity row against a direct computation, two
runs writing the same files, an end-to-end CLI run on `samples` with a
tiny trained workdir (under a 2-replica MirroredStrategy), ablations with
--compare, a SavedModel, baseline tuning on the train split only, the k-NN
baseline's bank, and the CLI's one-line errors. The CLI subprocesses start
early and run while the in-process tests do, to keep the module fast.
"""

import dataclasses
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

from matplotlib import image as mpimg
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from cascade_tf import config as config_lib
from cascade_tf import inference
from cascade_tf import metrics
from cascade_tf import ranges
from cascade_tf.data import pipeline
from cascade_tf.data import sources
from cascade_tf.evaluation import evaluate as evaluate_lib
from cascade_tf.evaluation import figures
from cascade_tf.training import loop

ROOT = Path(__file__).resolve().parents[1]
TINY_DATA = config_lib.tiny().data  # samples, 32 px, 16-px hole.
ROW_KEYS = {"psnr", "hole_psnr", "ssim", "hole_ssim", "sec_per_image"}
BASELINES = ("identity", "telea", "tv")
# Runs evaluate.py's main with two logical CPUs, so that --strategy=mirrored
# really splits batches across two replicas (they must be configured before
# TensorFlow starts, which a plain `python evaluate.py` cannot do).
_TWO_CPU_CLI = """
import runpy, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, ".")
sys.argv = ["evaluate.py"] + sys.argv[1:]
runpy.run_path("evaluate.py", run_name="__main__")
"""
# Runs evaluate.py's main under app.run once per case: {case: [exit code, stderr]}.
_ERROR_CASES_CLI = """
import contextlib, io, json, runpy, sys
sys.path.insert(0, ".")
from absl import app, flags
cli = runpy.run_path("evaluate.py", run_name="evaluate_cli")
results = {}
for case, argv in json.loads(sys.argv[1]).items():
  flags.FLAGS.unparse_flags()
  stderr, code = io.StringIO(), 0
  with contextlib.redirect_stderr(stderr):
    try:
      app.run(cli["main"], argv=["evaluate.py", *argv])
    except SystemExit as exit:
      code = exit.code
  results[case] = [code, stderr.getvalue()]
print(json.dumps(results))
"""


def _options(**overrides):
  defaults = dict(baselines=BASELINES, max_images=3, batch_size=2, figure_images=0,
                  progress=False, strategy="default", timing=False)
  return evaluate_lib.EvalOptions(**{**defaults, **overrides})


class _CliRun:
  """evaluate.py running in the background; `result()` waits once and caches."""

  def __init__(self, args, python_args=("evaluate.py",)):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    self._process = subprocess.Popen([sys.executable, *python_args, *args], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    self._result = None

  def result(self, timeout=240):
    """(returncode, stdout, stderr)."""
    if self._result is None:
      stdout, stderr = self._process.communicate(timeout=timeout)
      self._result = (self._process.returncode, stdout, stderr)
    return self._result


@pytest.fixture(scope="module", autouse=True)
def error_runs(tmp_path_factory):
  """The CLI's three error cases and --model=none, started first so that they run
  alongside the rest.

  One process runs them through absl's `app.run(main)` in turn, each with
  its own argv and captured stderr (one TensorFlow start-up, not four).
  """
  tmp = tmp_path_factory.mktemp("errors")
  (tmp / "empty").mkdir()
  common = ["--preset=tiny", f"--output_dir={tmp / 'out'}"]
  cases = {
      "missing_workdir": ["--dataset=samples", f"--workdir={tmp / 'nope'}", *common],
      "unknown_dataset": ["--dataset=foo", "--model=none", *common],
      "empty_folder": ["--dataset=folder", f"--image_dir={tmp / 'empty'}", "--model=none",
                       *common],
      # Not an error: --model=none scores the baselines alone (no shipped model).
      "no_model": ["--dataset=samples", "--model=none", "--max_images=1", "--tracks=clean",
                   "--baselines=identity", "--notiming", "--figure_images=0", "--preset=tiny",
                   f"--output_dir={tmp / 'no_model'}"],
  }
  run = _CliRun([json.dumps(cases)], python_args=("-c", _ERROR_CASES_CLI))
  run.tmp = tmp
  return run


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A tiny cascade trained for one step of `pretrain` (generator) and `dd` (restorer).

  A complete cascade for inference (load_workdir_cascade takes the generator
  of `pretrain` and the restorer of `dd`) at a quarter of the cost of all
  four stages, whose critic and perceptual network evaluation never uses.
  """
  path = str(tmp_path_factory.mktemp("workdir"))
  cfg = config_lib.with_overrides(config_lib.tiny(), {
      "train.steps": 1, "train.checkpoint_every": 1, "train.eval_every": 1})
  for stage in ("pretrain", "dd"):
    loop.train(cfg, stage, path)
  return path


@pytest.fixture(scope="module")
def cli_run(workdir, tmp_path_factory):
  """evaluate.py on samples with the workdir, 2 replicas, frozen (each replica runs the frozen
  graphs); started, not yet finished."""
  output_dir = tmp_path_factory.mktemp("cli")
  args = ["--dataset=samples", "--preset=tiny", f"--workdir={workdir}", "--max_images=3",
          "--batch_size=3", f"--baselines={','.join(BASELINES)}", "--strategy=mirrored",
          "--freeze", f"--output_dir={output_dir}"]
  return _CliRun(args, python_args=("-c", _TWO_CPU_CLI)), output_dir


@pytest.fixture(scope="module")
def reference_run(workdir, cli_run, tmp_path_factory):
  """The workdir scored in-process like cli_run (default strategy, batches of 2).

  Requested at the protocol's 128 px, so it is evaluated at the tiny model's
  32 px instead (and says so). Depends on cli_run so that the CLI runs
  meanwhile.
  """
  del cli_run
  output_dir = tmp_path_factory.mktemp("reference")
  options = _options(models=evaluate_lib.model_specs(workdir=workdir), figure_images=2)
  return evaluate_lib.evaluate(config_lib.DataConfig(), options, str(output_dir)), output_dir


def _strip_timing(results):
  return {method: {track: {k: v for k, v in row.items() if k != "sec_per_image"}
                   for track, row in per_track.items()}
          for method, per_track in results["results"].items()}


def _assert_same_scores(ours, theirs, tolerance: float):
  """The same rows and tracks in both results, every score within `tolerance`."""
  ours, theirs = _strip_timing(ours), _strip_timing(theirs)
  assert set(ours) == set(theirs)
  for method, per_track in ours.items():
    for track, row in per_track.items():
      for key, value in row.items():
        assert theirs[method][track][key] == pytest.approx(value, abs=tolerance), (
            method, track, key)


# --------------------------------------------------------------------------
# Parsing what to score.


def test_resolve_baseline_names_routes_each_name_to_its_tracks():
  names = evaluate_lib.resolve_baseline_names(
      ["default", "telea+tv", "knn"], ["inpaint", "restore", "joint"], include_bm3d=False,
      knn_available=True)
  assert names["inpaint"] == ("identity", "telea", "navier_stokes", "biharmonic", "knn")
  assert names["restore"] == ("identity", "tv", "wiener_oracle", "richardson_lucy_oracle")
  assert names["joint"][0] == "identity" and "telea+tv" in names["joint"]
  assert not any("bm3d" in n for track in names.values() for n in track)
  assert evaluate_lib.resolve_baseline_names(["none"], ["joint"]) == {"joint": ()}
  only = evaluate_lib.resolve_baseline_names(["identity", "tv"], ["inpaint", "restore"])
  assert only == {"inpaint": ("identity",), "restore": ("identity", "tv")}


@pytest.mark.parametrize("tokens, tracks, message", [
    (["telea", "nope"], ["inpaint"], "Unknown baseline 'nope'"),
    (["tv"], ["inpaint"], "'tv' is meant for the track(s) ['restore', 'clean']"),
    (["none", "tv"], ["restore"], "'none' cannot be combined"),
])
def test_resolve_baseline_names_rejects_bad_names(tokens, tracks, message):
  with pytest.raises(ValueError, match="--baselines") as error:
    evaluate_lib.resolve_baseline_names(tokens, tracks)
  assert message in str(error.value)


def test_model_specs_parse_compare_and_reject_bad_entries():
  specs = evaluate_lib.model_specs(workdir="runs/a", compare="no_pretrain=runs/b, only_gan=x/1")
  assert [(s.name, s.path, s.flag) for s in specs] == [
      ("cascade", "runs/a", "--workdir"), ("no_pretrain", "runs/b", "--compare no_pretrain"),
      ("only_gan", "x/1", "--compare only_gan")]
  for kwargs, message in [({"workdir": "a", "model": "b"}, "--workdir and --model"),
                          ({"compare": "a=x,a=y"}, "used twice"),
                          ({"compare": "runs/a"}, "name=WORKDIR_OR_MODEL"),
                          ({"compare": "telea=runs/a"}, "baseline's name")]:
    with pytest.raises(ValueError, match="--") as error:
      evaluate_lib.model_specs(**kwargs)
    assert message in str(error.value)
  with pytest.raises(ValueError, match="--tracks: unknown"):
    evaluate_lib.parse_tracks("inpaint,deblur")


# --------------------------------------------------------------------------
# Baselines only.


def test_identity_row_equals_a_direct_computation(tmp_path):
  results = evaluate_lib.evaluate(TINY_DATA, _options(baselines=("identity",)), str(tmp_path))
  assert results["n_images"] == 3 and results["dataset"] == "samples"
  assert set(results["results"]) == {"identity"}
  source = sources.load_source(TINY_DATA, "test")
  for track in config_lib.TRACKS:
    batch = next(pipeline.make_dataset(TINY_DATA, split="test", track=track, batch_size=3,
                                       training=False, max_images=3,
                                       source=source).as_numpy_iterator())
    clean = batch["clean"].astype(np.float64)
    error = (clean - batch["corrupted"].astype(np.float64))**2
    with np.errstate(divide="ignore"):  # `clean`: no error, PSNR capped.
      psnr = np.mean(np.minimum(10 * np.log10(1.0 / error.mean(axis=(1, 2, 3))),
                                metrics.PSNR_CAP_DB))
    row = results["results"]["identity"][track]
    assert row["psnr"] == pytest.approx(psnr, abs=1e-4)
    hole = batch["mask"][..., 0] > 0.5
    if track in ("restore", "clean"):
      assert row["hole_psnr"] is None and row["hole_ssim"] is None and not hole.any()
    else:
      hole_mse = np.array([e[h].mean() for e, h in zip(error, hole)])
      assert row["hole_psnr"] == pytest.approx(np.mean(10 * np.log10(1.0 / hole_mse)), abs=1e-4)
      assert results["protocol"]["mask_area"][track] == pytest.approx(hole.mean(), abs=1e-4)
      assert row["hole_ssim"] < row["ssim"]  # The hole is where the input is wrong.
    if track == "clean":
      assert row["psnr"] == metrics.PSNR_CAP_DB and row["ssim"] == 1.0
    else:
      assert 0 < row["ssim"] < 1
    assert row["sec_per_image"] is None
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved == results
  assert "| inpaint | identity |" in (tmp_path / "results.md").read_text()


def test_default_baselines_leave_out_knn_when_train_is_test():
  options = _options(tracks=("inpaint",), baselines=("default",), max_images=None)
  results = evaluate_lib.evaluate(TINY_DATA, options, None)
  assert list(results["results"]) == ["identity", "telea", "navier_stokes", "biharmonic"]
  assert any("knn left out" in note for note in results["notes"])
  assert results["methods"]["telea"]["params"] == {"radius": 25}
  with pytest.raises(ValueError, match="--baselines: knn needs training images"):
    evaluate_lib.evaluate(TINY_DATA, _options(tracks=("inpaint",), baselines=("knn",),
                                              max_images=None), None)


def test_knn_bank_holds_only_training_images(tmp_path):
  rng = np.random.default_rng(0)
  for i in range(8):
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
  data_cfg = config_lib.with_overrides(config_lib.tiny(), {
      "data.dataset": "folder", "data.image_dir": str(tmp_path),
      "data.folder_test_fraction": 0.5}).data
  options = _options(tracks=("inpaint", "joint"), baselines=("identity", "knn", "knn+tv"),
                     max_images=None)
  results = evaluate_lib.evaluate(data_cfg, options, None)
  assert results["n_images"] == 4
  assert set(results["results"]["knn"]) == {"inpaint"}
  assert set(results["results"]["knn+tv"]) == {"joint"}
  assert results["methods"]["knn"]["knn_bank_images"] == 4
  assert results["methods"]["knn"]["params"]["hole_size"] == 16
  assert results["methods"]["knn+tv"]["params"]["knn"]["hole_size"] == 16


def test_tuning_sees_only_the_train_split(monkeypatch):
  calls = []
  make_dataset = pipeline.make_dataset

  def spy(cfg, **kwargs):
    calls.append((kwargs["split"], kwargs["track"], cfg.eval_seed))
    return make_dataset(cfg, **kwargs)

  monkeypatch.setattr(evaluate_lib.pipeline, "make_dataset", spy)
  options = _options(tracks=("inpaint", "restore"), baselines=("identity", "telea", "tv"),
                     tune_baselines=True, tune_images=2, max_images=2)
  results = evaluate_lib.evaluate(TINY_DATA, options, None)
  tuning = [c for c in calls if c[0] == "train"]
  assert sorted(tuning) == [("train", "inpaint", 1), ("train", "restore", 1)]
  assert sorted(c for c in calls if c[0] == "test") == [("test", "inpaint", 0),
                                                        ("test", "restore", 0)]
  for name, param, grid in (("telea", "radius", (5, 9, 15, 25)),
                            ("tv", "weight", (0.01, 0.02, 0.03, 0.05))):
    method = results["methods"][name]
    assert method["params_from"].startswith("tuned on 2 images of the train split")
    assert method["params"][param] in grid
  assert results["methods"]["identity"]["params"] == {}


# --------------------------------------------------------------------------
# With a trained model.


def test_two_runs_write_the_same_files_and_match_the_cli(workdir, reference_run, cli_run,
                                                         tmp_path):
  first, first_dir = reference_run
  options = _options(models=evaluate_lib.model_specs(workdir=workdir))
  evaluate_lib.evaluate(config_lib.DataConfig(), options, str(tmp_path))
  for name in ("results.json", "results.md"):
    assert (first_dir / name).read_bytes() == (tmp_path / name).read_bytes()
  assert any("model's image size 32 px" in note for note in first["notes"])
  assert first["protocol"]["image_size"] == 32 and not first["protocol"]["follows_protocol"]
  assert (first_dir / "figure_joint.png").exists()

  # The CLI ran the same images with batches of 3 split over 2 replicas, frozen.
  run, output_dir = cli_run
  returncode, _, stderr = run.result()
  assert returncode == 0, stderr[-3000:]
  cli = json.loads((output_dir / "results.json").read_text())
  assert cli["protocol"]["device"]["replicas"] == 2 and cli["methods"]["cascade"]["frozen"]
  _assert_same_scores(first, cli, 1e-3)


def test_cli_end_to_end_on_samples(cli_run):
  run, output_dir = cli_run
  returncode, stdout, stderr = run.result()
  assert returncode == 0, stderr[-3000:]
  assert "| joint | cascade |" in stdout and "| inpaint | cascade_intermediate |" in stdout
  results = json.loads((output_dir / "results.json").read_text())
  assert {"dataset", "n_images", "protocol", "results"} <= set(results)
  assert results["dataset"] == "samples" and results["n_images"] == 3
  assert results["protocol"]["deviations"] and results["protocol"]["timing"]
  tracks = {"cascade": set(config_lib.TRACKS), "cascade_intermediate": set(config_lib.TRACKS),
            "identity": set(config_lib.TRACKS), "telea": {"inpaint", "inpaint_free"},
            "tv": {"restore", "clean"}}
  assert {m: set(t) for m, t in results["results"].items()} == tracks
  for method, per_track in results["results"].items():
    for track, row in per_track.items():
      assert set(row) == ROW_KEYS
      assert (row["hole_psnr"] is None) == (track in ("restore", "clean"))
      assert row["sec_per_image"] > 0 and 0 < row["psnr"] <= 100
  weights_from = results["methods"]["cascade"]["weights_from"]
  assert weights_from["generator"].endswith(os.path.join("pretrain", "checkpoints", "ckpt-1"))
  assert weights_from["restorer"].endswith(os.path.join("dd", "checkpoints", "ckpt-1"))
  assert (output_dir / "results.md").read_text().startswith("# Evaluation on `samples`")
  # figure_inpaint: rows = 3 images; columns = truth, input, ours x2, telea (not identity).
  figure = mpimg.imread(output_dir / "figure_inpaint.png")
  assert figure.shape[:2] == (540, 5 * 160)
  assert {p.name for p in output_dir.glob("figure_*.png")} == {
      f"figure_{t}.png" for t in config_lib.TRACKS}


def test_compare_scores_ablations_side_by_side(workdir, tmp_path):
  # A workdir whose restorer was never trained, like the paper's "Only GAN".
  no_restorer = tmp_path / "no_restorer"
  shutil.copytree(workdir, no_restorer, ignore=shutil.ignore_patterns("dd"))
  options = _options(tracks=("inpaint",), baselines=("none",), max_images=2,
                     models=evaluate_lib.model_specs(compare=f"intact={workdir},"
                                                     f"only_gan={no_restorer}"))
  results = evaluate_lib.evaluate(TINY_DATA, options, None)
  assert list(results["results"]) == ["intact_intermediate", "intact", "only_gan_intermediate"]
  assert any("only only_gan_intermediate" in note for note in results["notes"])
  assert results["methods"]["only_gan_intermediate"]["weights_from"]["restorer"] == "random"
  assert (results["results"]["only_gan_intermediate"]["inpaint"]
          == results["results"]["intact_intermediate"]["inpaint"])  # The same generator.

  bigger = tmp_path / "bigger"
  shutil.copytree(no_restorer, bigger)
  config = json.loads((bigger / "config.json").read_text())
  config["data"].update(image_size=64, hole_size=32)
  (bigger / "config.json").write_text(json.dumps(config))
  options = _options(models=evaluate_lib.model_specs(compare=f"a={workdir},b={bigger}"))
  with pytest.raises(ValueError, match="--compare: the models were trained at different"):
    evaluate_lib.evaluate(TINY_DATA, options, None)


def test_self_ensemble_is_applied_recorded_and_refused_for_a_saved_model(workdir, tmp_path):
  options = _options(tracks=("inpaint",), baselines=("none",), max_images=2,
                     models=evaluate_lib.model_specs(workdir=workdir))
  plain = evaluate_lib.evaluate(TINY_DATA, options, None)
  ensemble = evaluate_lib.evaluate(
      TINY_DATA, dataclasses.replace(options, self_ensemble=4), None)
  assert plain["methods"]["cascade"]["self_ensemble"] == 1
  assert ensemble["methods"]["cascade"]["self_ensemble"] == 4
  assert (ensemble["results"]["cascade"]["inpaint"]["psnr"]
          != plain["results"]["cascade"]["inpaint"]["psnr"])
  with pytest.raises(ValueError, match="--self_ensemble=5"):
    evaluate_lib.evaluate(TINY_DATA, dataclasses.replace(options, self_ensemble=5), None)
  (tmp_path / "1").mkdir()
  (tmp_path / "1" / "saved_model.pb").write_bytes(b"")  # Refused before it is read.
  with pytest.raises(ValueError, match="--self_ensemble=2: --model=.* is a SavedModel"):
    evaluate_lib.evaluate(TINY_DATA, dataclasses.replace(
        options, self_ensemble=2, models=evaluate_lib.model_specs(model=str(tmp_path / "1"))),
        None)


def test_frozen_and_variable_graphs_score_alike_and_are_recorded(workdir, reference_run):
  variables = reference_run[0]  # EvalOptions.freeze is off by default.
  options = _options(models=evaluate_lib.model_specs(workdir=workdir), freeze=True)
  frozen = evaluate_lib.evaluate(config_lib.DataConfig(), options, None)
  assert frozen["methods"]["cascade"]["frozen"] is True
  assert variables["methods"]["cascade"]["frozen"] is False
  _assert_same_scores(frozen, variables, 1e-4)


def test_saved_model_scores_like_its_workdir(workdir, reference_run, tmp_path):
  loaded = inference.load_workdir_cascade(workdir)

  class Serving(tf.Module):

    def __init__(self, generator, restorer):
      super().__init__()
      self.generator, self.restorer = generator, restorer

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def serve(self, images):
      inpainted = self.generator(ranges.to_model(images), training=False)
      restored = self.restorer(inpainted, training=False)
      return {"inpainted": ranges.from_model(inpainted, clip=True),
              "restored": ranges.from_model(restored, clip=True)}

  module = Serving(loaded.generator, loaded.restorer)
  tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": module.serve})
  # As export.py does: the training config, so that the model runs at its own size.
  (tmp_path / "1" / "assets.extra").mkdir(exist_ok=True)
  (tmp_path / "1" / "assets.extra" / "cascade_tf.json").write_text(json.dumps(
      {"config": config_lib.to_dict(loaded.config), "weights_from": loaded.weights_from}))
  options = _options(tracks=("joint",), baselines=("none",),
                     models=evaluate_lib.model_specs(model=str(tmp_path / "1")))
  results = evaluate_lib.evaluate(config_lib.DataConfig(), options, None)
  assert results["methods"]["cascade"]["format"] == "savedmodel"
  assert results["protocol"]["image_size"] == 32
  with pytest.raises(ValueError, match="--model=.* has no saved_model.pb.*versions \\['1'\\]"):
    evaluate_lib.evaluate(TINY_DATA, _options(models=evaluate_lib.model_specs(
        model=str(tmp_path))), None)
  reference = reference_run[0]["results"]
  for row in ("cascade", "cascade_intermediate"):
    for key in ("psnr", "hole_psnr", "ssim"):
      assert results["results"][row]["joint"][key] == pytest.approx(
          reference[row]["joint"][key], abs=1e-3)


# --------------------------------------------------------------------------
# The CLI's errors: one line, no traceback.


@pytest.mark.parametrize("case, message", [
    ("missing_workdir", "does not exist"),
    ("unknown_dataset", "--dataset: data.dataset='foo'"),
    ("empty_folder", "--image_dir="),
])
def test_cli_errors_are_one_line(error_runs, case, message):
  returncode, stdout, stderr = error_runs.result()
  assert returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
  code, case_stderr = json.loads(stdout.splitlines()[-1])[case]
  assert code == 1, case_stderr
  assert case_stderr.startswith("evaluate.py: error:") and case_stderr.count("\n") == 1
  assert message in case_stderr, case_stderr


def test_model_none_scores_the_baselines_alone(error_runs):
  returncode, stdout, stderr = error_runs.result()
  assert returncode == 0, stderr[-3000:]
  code, case_stderr = json.loads(stdout.splitlines()[-1])["no_model"]
  assert code in (0, None), case_stderr
  text = (error_runs.tmp / "no_model" / evaluate_lib.RESULTS_JSON).read_text()
  assert '"identity"' in text and '"cascade"' not in text and '"pretrained"' not in text


def test_figure_rejects_columns_of_another_length(tmp_path):
  images = [np.zeros((32, 32, 3), np.float32)] * 2
  path = figures.save_track_figure(str(tmp_path / "f.png"), "inpaint", images, images,
                                   {"telea": images}, {"telea": [20.0, 21.0]})
  assert mpimg.imread(path).shape[:2] == (380, 3 * 160)
  with pytest.raises(ValueError, match="column 'telea' has 1 images, expected 2"):
    figures.save_track_figure(str(tmp_path / "g.png"), "inpaint", images, images,
                              {"telea": images[:1]})


def test_dumped_inputs_scored_as_an_external_tool_reproduce_the_identity_row(tmp_path):
  """--dump_inputs, then --external with the dumped inputs themselves as the tool's outputs:
  the row equals identity up to the 8-bit rounding of the PNGs."""
  tracks = ("inpaint_free", "joint_free", "clean")
  dumped = tmp_path / "inputs"
  options = _options(tracks=tracks, baselines=("identity",), dump_inputs=str(dumped))
  first = evaluate_lib.evaluate(TINY_DATA, options, None)
  for track in tracks:
    names = sorted(p.name for p in (dumped / track).iterdir())
    assert names == [f"{i:04d}_{kind}.png" for i in range(3) for kind in ("clean", "input",
                                                                           "mask")]
    mask = np.asarray(Image.open(dumped / track / "0000_mask.png"))
    assert set(np.unique(mask)) <= {0, 255} and (mask.any() == (track != "clean"))
  tool = tmp_path / "tool"  # A "tool" that returns its input unchanged.
  for track in tracks[:2]:  # It has no output for `clean`: no row there.
    (tool / track).mkdir(parents=True)
    for i in range(3):
      shutil.copy(dumped / track / f"{i:04d}_input.png", tool / track / f"{i:04d}.png")
  options = _options(tracks=tracks, baselines=("identity",),
                     externals=evaluate_lib.parse_externals(f"same={tool}"))
  results = evaluate_lib.evaluate(TINY_DATA, options, None)
  assert set(results["results"]["same"]) == set(tracks[:2])
  for track in tracks[:2]:
    identity, same = first["results"]["identity"][track], results["results"]["same"][track]
    for metric in ("psnr", "hole_psnr"):
      assert same[metric] == pytest.approx(identity[metric], abs=0.05), (track, metric)
    assert same["ssim"] == pytest.approx(identity["ssim"], abs=2e-3)
  assert results["methods"]["same"]["kind"] == "external"
  (tool / "joint_free" / "0002.png").unlink()
  with pytest.raises(ValueError, match="0002.png is missing"):
    evaluate_lib.evaluate(TINY_DATA, options, None)
  with pytest.raises(ValueError, match="--external: expected name=DIR"):
    evaluate_lib.parse_externals(str(tool))
  with pytest.raises(ValueError, match="no such folder"):
    evaluate_lib.parse_externals("x=/no/such/folder")
  with pytest.raises(ValueError, match="--external: the name 'x' is used twice"):
    evaluate_lib.parse_externals(f"x={tool},x={tool}")
