"""A smoke run of benchmarks/bench.py on the tiny preset: rows, keys, arithmetic, CLI contract.

The numbers are not checked (the machine is shared), only that every row is
measured, positive and finite, and consistent with its FLOP count. VGG16 is
switched off (lambda_per=0) in the library runs to keep the test short; the
perceptual path runs in tests/test_training.py.
"""

import json
import math
import os
from pathlib import Path
import subprocess
import sys

import pytest

from benchmarks import bench
from cascade_tf import config
from cascade_tf import flops
from cascade_tf import runtime

ROOT = Path(__file__).resolve().parents[1]
FAST = {"steps": 2, "warmup": 1}


@pytest.fixture(scope="module")
def cfg():
  return config.with_overrides(config.tiny(), {"loss.lambda_per": 0.0})


def _check_row(row, cfg, stage, precision="float32"):
  assert set(bench.ROW_KEYS) <= set(row) and set(bench.SETTING_KEYS) <= set(row)
  assert row["stage"] == stage and row["mode"] == bench.ROW_MODE[stage]
  assert row["preset"] == cfg.preset and row["precision"] == precision
  for key in ("img_per_s", "img_per_s_min", "img_per_s_max", "peak_rss_mb"):
    assert math.isfinite(row[key]) and row[key] > 0, key
  assert row["img_per_s_min"] <= row["img_per_s"] <= row["img_per_s_max"]
  if row["gflop_per_img"] is not None:
    assert row["gflops"] == pytest.approx(row["gflop_per_img"] * row["img_per_s"])
  json.dumps(row)  # Plain JSON types only.


def test_train_rows(cfg):
  # Every step factory once: MSE, critic (fused n_critic loop) + generator, joint.
  stages = ["pretrain", "gan_full_step", "joint"]
  rows = bench.measure_rows(cfg, "train", 2, stages=stages, fuse_critic=True, **FAST)
  assert [r["stage"] for r in rows] == stages
  forward = flops.network_forward_flops(cfg)
  for row in rows:
    _check_row(row, cfg, row["stage"])
    assert row["batch_size"] == 2 and row["image_size"] == 32
    assert row["gflop_per_img"] * 1e9 == pytest.approx(
        flops.step_flops(cfg, row["stage"], forward))
    assert row["peak_fraction"] is None  # No peak rows measured.
    assert row["fuse_critic"] == row["stage"].endswith("_full_step")
    assert row["jit_compile"] is False  # The tiny preset's train.jit_compile is "off".
    assert row["onednn"] in (True, None)  # Importing cascade_tf turns oneDNN on.


def test_rows_of_a_mask_reading_generator(cfg):
  """The `photo` preset's generator (mask channel, composite) trains on a centre hole."""
  import dataclasses
  photo_like = dataclasses.replace(
      cfg, generator=dataclasses.replace(cfg.generator, mask_channel=True, composite=True))
  rows = bench.measure_rows(photo_like, "all", 2, stages=["pretrain", "joint", "infer_keras"],
                            **FAST)
  assert [r["stage"] for r in rows] == ["pretrain", "joint", "infer_keras"]
  assert all(r["img_per_s"] > 0 for r in rows)


def test_xla_setting_reaches_the_training_rows_only(cfg):
  rows = bench.measure_rows(cfg, "all", 2, stages=["pretrain", "infer_keras"],
                            jit_compile="auto", **FAST)
  by_stage = {r["stage"]: r for r in rows}
  # auto: on for a CPU run, unless the CPU has native bfloat16 (oneDNN beats XLA there).
  native_bf16 = bool(runtime.native_bfloat16_features())
  assert by_stage["pretrain"]["jit_compile"] is (not native_bf16)
  assert by_stage["infer_keras"]["jit_compile"] is False  # Inference is never compiled by auto.
  assert bench.resolve_jit("on", "infer_keras") and not bench.resolve_jit("on", "data_joint")
  _check_row(by_stage["pretrain"], cfg, "pretrain")


def test_inference_row_runs_frozen_only_when_asked_and_never_compiled(cfg):
  assert bench.measure_row("infer_keras", cfg, 2, **FAST)[0]["freeze"] is False  # As Repairer.
  assert bench.measure_row("infer_keras", cfg, 2, freeze=True, **FAST)[0]["freeze"] is True
  compiled = bench.measure_row("infer_keras", cfg, 2, jit_compile="on", freeze=True, **FAST)[0]
  assert compiled["jit_compile"] is True and compiled["freeze"] is False
  assert bench.measure_row("pretrain", cfg, 2, **FAST)[0]["freeze"] is None


def test_inference_data_and_peak_rows(cfg):
  rows = bench.measure_rows(
      cfg, "all", 2, stages=["infer_keras", "infer_savedmodel", "data_joint", "peak_matmul",
                             "peak_conv3x3"],
      data_batches=1, peak_matmul_size=64, peak_conv_shape=(1, 16, 8), **FAST)
  by_stage = {r["stage"]: r for r in rows}
  assert list(by_stage) == ["infer_keras", "infer_savedmodel", "data_joint", "peak_matmul",
                            "peak_conv3x3"]
  for row in rows:
    _check_row(row, cfg, row["stage"])
  assert by_stage["infer_keras"]["gflop_per_img"] == by_stage["infer_savedmodel"]["gflop_per_img"]
  assert by_stage["data_joint"]["gflops"] is None
  assert by_stage["data_joint"]["peak_fraction"] is None
  peaks = [by_stage["peak_matmul"], by_stage["peak_conv3x3"]]
  assert max(r["peak_fraction"] for r in peaks) == pytest.approx(1.0)
  assert by_stage["peak_matmul"]["gflop_per_img"] == pytest.approx(2 * 64**3 / 1e9)
  assert by_stage["infer_keras"]["peak_fraction"] == pytest.approx(
      by_stage["infer_keras"]["gflops"] / max(r["gflops"] for r in peaks))


def test_bfloat16_peak_rows_cover_both_precisions(cfg):
  rows = bench.measure_row("peak_matmul", cfg, 1, "bfloat16", peak_matmul_size=32, **FAST)
  assert [r["precision"] for r in rows] == ["float32", "bfloat16"]
  bench.add_peak_fractions(rows)
  assert all(r["peak_fraction"] == pytest.approx(1.0) for r in rows)


def test_invalid_requests_raise(cfg):
  with pytest.raises(ValueError, match="not measured by --mode=infer"):
    bench.plan_rows("infer", ["joint"])
  with pytest.raises(ValueError, match="--mode="):
    bench.plan_rows("speed")
  with pytest.raises(ValueError, match="--precision="):
    bench.measure_row("pretrain", cfg, 2, "float64")
  assert bench.plan_rows("train") == list(bench.TRAIN_ROWS)
  assert bench.plan_rows("all")[-2:] == ["peak_matmul", "peak_conv3x3"]


def test_table_has_one_line_per_row():
  row = {"stage": "dd", "precision": "float32", "batch_size": 8, "img_per_s": 10.0,
         "img_per_s_min": 9.0, "img_per_s_max": 11.0, "gflop_per_img": 1.5, "gflops": 15.0,
         "peak_fraction": 0.25, "peak_rss_mb": 900.0}
  data = {**row, "stage": "data_joint", "gflop_per_img": None, "gflops": None,
          "peak_fraction": None}
  lines = bench.format_table([row, data]).splitlines()
  assert len(lines) == 4
  assert lines[2] == "| dd | float32 | 8 | 10 [9–11] | 1.5 | 15.0 | 25.0 | 900 |"
  assert lines[3].endswith("| - | - | - | 900 |")


def test_command_line_writes_the_json_contract(tmp_path):
  path = tmp_path / "rows.json"
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  result = subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--preset=tiny", "--mode=infer",
       "--batch_size=2", "--steps=1", "--warmup=1", f"--json={path}"],
      capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  rows = json.loads(path.read_text())
  assert [r["stage"] for r in rows] == ["infer_keras"]
  assert set(bench.ROW_KEYS) <= set(rows[0])
  # --precision defaults to auto: the row says what it resolved to on this machine.
  precision = bench.resolve_precision("auto", "infer_keras")
  assert rows[0]["precision_setting"] == "auto" and rows[0]["precision"] == precision
  assert f"| infer_keras | {precision} | 2 |" in result.stdout
  assert "precision: auto (here: training" in result.stdout


def test_auto_precision_resolves_per_row(monkeypatch):
  from cascade_tf import runtime
  monkeypatch.setattr(runtime, "accelerator_kind", lambda: None)
  monkeypatch.setattr(runtime, "NATIVE_BFLOAT16_CHOICE", {
      "train": ("float32", "not faster"), "infer": ("mixed_bfloat16", "gates met")})
  monkeypatch.setattr(runtime, "cpu_info", lambda: ("a CPU with AMX", ["avx512f", "amx_bf16"]))
  assert bench.resolve_precision("auto", "joint") == "float32"
  assert bench.resolve_precision("auto", "infer_keras") == "bfloat16"
  assert bench.resolve_precision("auto", "peak_matmul") == "bfloat16"
  assert bench.resolve_precision("auto", "infer_savedmodel") == "float32"  # export.py: float32.
  assert bench.resolve_precision("auto", "data_joint") == "float32"
  assert bench.resolve_precision("float16", "joint") == "float16"
  monkeypatch.setattr(runtime, "cpu_info", lambda: ("an AVX2 CPU", ["avx2", "fma"]))
  assert {bench.resolve_precision("auto", r) for r in bench.ROW_MODE} == {"float32"}


def test_compare_settings_tabulates_runs_fastest_first(tmp_path):
  from benchmarks import compare_settings
  row = {"stage": "joint", "preset": "paper", "precision": "float32", "batch_size": 8, "img_per_s": 1.0,
         "img_per_s_min": 0.9, "img_per_s_max": 1.1, "peak_rss_mb": 100.0, "onednn": False,
         "jit_compile": False, "threads_intra": 0, "threads_inter": 0}
  (tmp_path / "slow.json").write_text(json.dumps([row]))
  (tmp_path / "fast.json").write_text(json.dumps([{**row, "img_per_s": 2.0, "onednn": True,
                                                   "img_per_s_max": 2.5},
                                                  {**row, "stage": "critic"}]))
  (tmp_path / "bad.json").write_text("{not json")
  paths = [str(tmp_path / n) for n in ("slow.json", "fast.json")]
  table = compare_settings.format_table(compare_settings.load_rows(paths, ["joint"]))
  lines = table.splitlines()
  assert len(lines) == 4 and "critic" not in table
  assert lines[2].startswith("| joint | fast | paper | True | False | default/default | float32 | "
                             "8 | 2 [")
  assert lines[3].startswith("| joint | slow |")
  with pytest.raises(SystemExit, match="bad.json"):
    compare_settings.load_rows([str(tmp_path / "bad.json")], None)


def _infer_ab(capsys, *flags):
  """Runs benchmarks/infer_ab.py: its output, {path: max |output - plain|}, its table's rows."""
  from benchmarks import infer_ab
  assert infer_ab.main(["--rounds=4", "--warmup=1", *flags]) == 0
  out = capsys.readouterr().out
  differences = json.loads(out.split("max |output - plain| in ", 1)[1].split(": ", 1)[1]
                           .split("\n", 1)[0])
  rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
  return out, differences, rows


def test_infer_ab_times_the_three_inference_paths(capsys):
  _, differences, rows = _infer_ab(capsys, "--preset=tiny", "--batch_size=2")
  assert set(differences) == {"folded", "savedmodel"}
  assert max(differences.values()) < 1e-5  # All three paths compute the same images.
  assert [row.split(" | ")[0] for row in rows] == ["| plain", "| folded", "| savedmodel"]
  assert rows[1].endswith("| 1.000 [1.000–1.000] |")


def test_infer_ab_under_a_mixed_policy_times_the_folded_copy_with_float32_weights(capsys):
  out, differences, rows = _infer_ab(capsys, "--preset=tiny", "--batch_size=2",
                                     "--precision=mixed_bfloat16")
  assert "precision mixed_bfloat16" in out
  assert set(differences) == {"folded", "folded_float32_weights"}  # No float32 SavedModel.
  # Weights stored in bfloat16 compute what the per-call casts computed.
  assert differences["folded"] == differences["folded_float32_weights"]
  assert differences["folded"] < 0.05  # Folding under bfloat16: rounding only.
  assert [row.split(" | ")[0] for row in rows] == ["| plain", "| folded",
                                                   "| folded_float32_weights"]


def test_layers_benchmark_reports_every_layer_kind(capsys):
  from benchmarks import layers
  assert layers.main(["--batch_size=1", "--repeats=1", "--xla=off",
                      "--precisions=float32,bfloat16"]) == 0
  rows = [line for line in capsys.readouterr().out.splitlines()
          if line.startswith("| ") and "---" not in line][1:]
  assert len(rows) == 2 * len(layers.layer_cases())
  assert [row.split(" | ")[1] for row in rows] == (["float32"] * len(layers.layer_cases()) +
                                                   ["bfloat16"] * len(layers.layer_cases()))
  for row in rows:
    fwd, fwd_bwd = (float(v) for v in row.strip("| ").split(" | ")[3:5])
    assert fwd > 0 and fwd_bwd > 0
  import keras
  assert keras.mixed_precision.global_policy().name == "float32"  # Restored.
  with pytest.raises(SystemExit, match="--repeats=0"):
    layers.main(["--repeats=0"])
  with pytest.raises(SystemExit, match="float16"):
    layers.main(["--precisions=float16"])


def test_op_profile_sums_operation_time_by_type():
  """A profiled function's operations by type; function calls and executor events left out."""
  import tensorflow as tf
  from benchmarks import layers
  x = tf.random.stateless_normal((2, 16, 16, 8), [0, 1])
  kernel = tf.random.stateless_normal((3, 3, 8, 8), [0, 2])

  @tf.function
  def step():
    return tf.reduce_sum(tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME")))

  seconds = layers.op_seconds(step, steps=2)
  assert any(layers.is_convolution(k) for k in seconds), seconds
  assert not [k for k in seconds if k.startswith("__") or k.endswith("PartitionedCall")]
  assert all(v >= 0 for v in seconds.values())
  table = layers.format_op_profile(seconds).splitlines()
  conv, rest = (float(line.split(" | ")[2].rstrip("% |")) for line in table[-2:])
  assert conv + rest == pytest.approx(100.0, abs=0.2)


def test_batch_norm_ab_and_op_profile_of_a_whole_row(capsys):
  from benchmarks import layers
  from cascade_tf.models import layers as layers_lib
  assert layers.main(["--preset=tiny", "--batch_size=2", "--steps=1", "--rounds=1",
                      "--precision=float32", "--jit_compile=off", "--op_profile=dd",
                      "--batch_norm_ab=dd"]) == 0
  out = capsys.readouterr().out
  assert "FusedBatchNormV3" in out and "**all convolutions**" in out
  row = [line for line in out.splitlines() if line.startswith("| dd |")]
  assert len(row) == 1 and float(row[0].split(" | ")[1]) > 0
  assert layers_lib.FusedBatchNorm.enabled  # Restored.
  with pytest.raises(SystemExit, match="'nope'"):
    layers.main(["--preset=tiny", "--op_profile=nope"])
  with pytest.raises(SystemExit, match="--preset=nope"):
    layers.main(["--preset=nope", "--op_profile=dd"])


def test_winograd_convolution_matches_conv2d(capsys):
  import numpy as np
  import tensorflow as tf
  from benchmarks import winograd
  rng = np.random.default_rng(0)
  x = tf.constant(rng.standard_normal((2, 6, 8, 5)).astype("float32"))
  kernel = rng.standard_normal((3, 3, 5, 4)).astype("float32")
  expected = tf.nn.conv2d(x, kernel, 1, "SAME").numpy()
  out = winograd.winograd_conv3x3(x, tf.constant(winograd.transform_kernel(kernel))).numpy()
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="must be even"):
    winograd.winograd_conv3x3(x[:, :5], tf.constant(winograd.transform_kernel(kernel)))
  assert winograd.main(["--batch_size=1", "--size=8", "--channels=4", "--rounds=1",
                        "--repeats=1"]) == 0
  rows = [line for line in capsys.readouterr().out.splitlines()
          if line.startswith("| ") and "---" not in line][1:]
  assert len(rows) == 3 and all(float(row.split(" | ")[-1].strip(" |")) < 1e-4 for row in rows)


@pytest.mark.parametrize("network", ["generator", "restorer"])
def test_infer_ab_times_one_network_and_its_frozen_graph(capsys, network):
  out, differences, rows = _infer_ab(capsys, "--preset=tiny", "--batch_size=2",
                                     f"--network={network}", "--frozen")
  assert f"preset tiny, {network}," in out and "in [-1, 1]: " in out
  assert set(differences) == {"folded", "folded_frozen"}  # A network alone: no SavedModel.
  assert max(differences.values()) < 1e-4  # Folded and frozen compute the same outputs.
  assert [row.split(" | ")[0] for row in rows] == ["| plain", "| folded", "| folded_frozen"]


def test_bench_randomises_every_bias():
  # A freshly built layer's bias is all zeros, which Grappler's constant folding deletes from a
  # frozen graph (and with it the convolution-bias-activation fusion a trained network gets).
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cascade_tf.models import build_generator  # pylint: disable=g-import-not-at-top
  cfg = config.get_preset("tiny")
  generator = build_generator(cfg.generator, cfg.data.image_size)
  biases = [layer.bias for layer in generator.layers if getattr(layer, "bias", None) is not None]
  assert biases and not any(np.any(b.numpy()) for b in biases)
  bench.randomise_biases(generator)
  assert all(np.all(b.numpy() != 0) for b in biases)


def test_infer_ab_times_the_shipped_cascade(capsys):
  out, differences, _ = _infer_ab(capsys, "--weights=pretrained", "--batch_size=1", "--frozen")
  assert "preset photo (the shipped weights), cascade," in out
  assert set(differences) == {"folded", "savedmodel", "folded_frozen", "savedmodel_frozen"}
  assert max(differences.values()) < 1e-4
