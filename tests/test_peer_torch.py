"""The PyTorch peer (benchmarks/peer_torch.py): the project's FLOPs, its update, vs_pytorch.py.

PyTorch is a benchmark-only dependency, so without it every test here is
skipped (pip install -r requirements-bench.txt to run them). Speeds are not
checked (the machine is shared), only that both frameworks are measured.
"""

import json
import math
import os
import re
from pathlib import Path
import subprocess
import sys

import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is benchmark-only: pip install -r requirements-bench.txt")

# pylint: disable=wrong-import-position
from benchmarks import peer_torch
from cascade_tf import config
from cascade_tf import flops

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("preset", ["tiny", "cpu"])
def test_peer_flops_match_the_project(preset):
  cfg = config.get_preset(preset)
  project = flops.network_forward_flops(cfg)
  peer = peer_torch.check_flops(cfg, project=project)
  assert set(peer) == set(project) and min(peer.values()) > 0
  for name, count in project.items():
    assert peer[name] == pytest.approx(count, rel=0.01), name
  with pytest.raises(AssertionError, match="restorer: peer"):
    peer_torch.check_flops(cfg, project={**project, "restorer": 2 * project["restorer"]})


def test_joint_update_trains_generator_and_restorer_only():
  cfg = config.tiny()
  nets = peer_torch.build_networks(cfg)
  before = {name: [p.detach().clone() for p in nets[name].parameters()]
            for name in ("generator", "restorer", "critic")}
  step = peer_torch.make_joint_step(cfg, nets=nets)
  out = step(peer_torch.random_batch(2, cfg.data.image_size))
  assert {"mse", "perceptual", "adversarial", "mse_intermediate", "perceptual_intermediate",
          "total", "grad_norm"} <= set(out)
  assert all(math.isfinite(float(v)) for v in out.values())
  assert float(out["perceptual"]) > 0 and float(out["grad_norm"]) > 0
  moved = {name: any(not torch.equal(a, b) for a, b in zip(old, nets[name].parameters()))
           for name, old in before.items()}
  assert moved == {"generator": True, "restorer": True, "critic": False}


def test_bf16_channels_last_runs_both_rows_in_bfloat16_on_channels_last_data():
  cfg = config.tiny()
  options = peer_torch.OPTIONS["bf16_channels_last"]
  assert (options.precision, options.channels_last, options.compile) == ("bfloat16", True, False)
  nets = peer_torch.build_networks(cfg, options)
  conv = next(m for m in nets["restorer"].modules() if isinstance(m, torch.nn.Conv2d))
  assert conv.weight.is_contiguous(memory_format=torch.channels_last)
  step = peer_torch.make_joint_step(cfg, options, nets=nets)
  batch = peer_torch.random_batch(2, cfg.data.image_size, options=options)
  out = step(batch)
  assert all(math.isfinite(float(v)) for v in out.values()) and float(out["grad_norm"]) > 0
  infer = peer_torch.make_inference(cfg, options, nets=nets)
  outputs = infer(batch["corrupted"])
  for name in ("inpainted", "restored"):
    image = outputs[name]
    assert image.dtype == torch.float32 and image.shape == batch["corrupted"].shape, name
    assert bool(torch.isfinite(image).all()) and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0


def test_unmirrored_options_raise():
  with pytest.raises(ValueError, match="generator.mask_channel"):
    peer_torch.build_networks(config.photo())
  with pytest.raises(ValueError, match="mode='train'"):
    peer_torch.make_row("train", config.tiny(), 2)


def test_quick_run_prints_both_frameworks(tmp_path):
  path = tmp_path / "rows.json"
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  result = subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / "vs_pytorch.py"), "--quick", f"--json={path}"],
      capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"PyTorch {torch.__version__}" in result.stdout
  summary = [line for line in result.stdout.splitlines()
             if line.startswith(("| joint | ", "| infer | ")) and "(vs " in line]
  assert [line.split(" | ")[0] for line in summary] == ["| joint", "| infer"]
  rows = json.loads(path.read_text())
  measured = {(r["row"], r["framework"], r["option"]) for r in rows}
  for row in ("joint", "infer"):
    assert {(row, "pytorch", "f32"), (row, "pytorch", "channels_last")} <= measured
    # The project's row at its default precision (auto: chosen per CPU, named as chosen)
    # and the tiny preset's XLA setting (off).
    ours = {option for r, framework, option in measured if (r, framework) == (row, "cascade_tf")}
    assert len(ours) == 1 and re.fullmatch(r"(float32|bfloat16) \(auto\), XLA off", ours.pop())
  for r in rows:
    assert r["img_per_s"] > 0 and r["peak_fraction"] > 0 and len(r["round_img_per_s"]) == 1
