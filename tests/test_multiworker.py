"""Two worker processes on 127.0.0.1 with TF_CONFIG and MultiWorkerMirroredStrategy.

The workers run tests/multiworker_worker.py. Every process is bounded by a
timeout and killed with the test, so a hung collective cannot hang the suite.
"""

import json
import os
from pathlib import Path
import socket
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from cascade_tf import config as config_lib
from cascade_tf import weights_io
from cascade_tf.training import loop
from cascade_tf.training import stages
from cascade_tf.training import steps

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "multiworker_worker.py"
SMALL = {"loss.lambda_per": 0.0, "generator.num_levels": 2, "generator.num_res_blocks": 1,
         "train.batch_size": 4, "train.jit_compile": "off"}


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _run_workers(directory, while_running, timeout=300):
  """Starts both workers, calls `while_running(procs, deadline)`, waits for both (killing
  them at `timeout` seconds from the start), returns their (returncode, stdout, stderr)."""
  ports = ",".join(map(str, _free_ports(2)))
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
  deadline = time.time() + timeout
  procs = [subprocess.Popen([sys.executable, str(WORKER), str(directory), ports, str(i)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  outputs = []
  try:
    while_running(procs, deadline)
    for proc in procs:
      outputs.append(proc.communicate(timeout=max(1.0, deadline - time.time())))
  finally:
    for proc in procs:
      proc.kill()
  return [(proc.returncode, out, err) for proc, (out, err) in zip(procs, outputs)]


def _signal_worker_1_once_the_long_stage_runs(workdir):
  """SIGTERM to the non-chief worker once the chief has logged a step of the long stage
  (its handler is then installed): the chief, which got no signal, must stop and save too."""
  metrics = workdir / "pretrain" / "metrics.jsonl"

  def while_running(procs, deadline):
    while not (metrics.exists() and metrics.read_text().strip()):
      assert time.time() < deadline and all(p.poll() is None for p in procs), (
          [p.poll() for p in procs])
      time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)

  return while_running


def test_two_workers_update_like_one_process_checkpoint_on_the_chief_and_stop_together(
    tmp_path):
  """One process pair (collectives are configured once per process) runs three parts:
  one update compared with the single-process update, three steps of the loop, and a
  long stage that a SIGTERM to the non-chief worker stops."""
  cfg = config_lib.with_overrides(config_lib.tiny(), SMALL)
  (tmp_path / "config.json").write_text(config_lib.to_json(cfg))
  loop_cfg = config_lib.with_overrides(cfg, {
      "train.strategy": "multiworker", "train.steps": 3, "train.checkpoint_every": 1,
      "train.log_every": 1, "train.eval_every": 3})
  (tmp_path / "loop.json").write_text(config_lib.to_json(loop_cfg))
  keras.utils.set_random_seed(0)
  wired = stages.build_stage(cfg, "pretrain", global_batch_size=4)
  generator = wired.nets["generator"]
  weights_io.save_weights(generator, str(tmp_path / "init"), "generator")
  rng = np.random.default_rng(0)
  batch = {k: rng.uniform(0, 1, (4, 32, 32, 3)).astype("float32") for k in ("corrupted", "clean")}
  np.savez(tmp_path / "batch.npz", **batch)

  stop_cfg = config_lib.with_overrides(loop_cfg, {
      "train.steps": 100_000, "train.checkpoint_every": 100_000, "train.log_every": 1,
      "train.eval_every": 100_000})
  (tmp_path / "stop.json").write_text(config_lib.to_json(stop_cfg))

  runs = _run_workers(tmp_path, _signal_worker_1_once_the_long_stage_runs(
      tmp_path / "workdir-stop"))
  for returncode, _, err in runs:  # Both stopped as train.py does on SIGTERM.
    assert returncode == 128 + signal.SIGTERM, err[-3000:]
  outputs = [out for _, out, _ in runs]

  # 1. The update: each worker had half of the global batch.
  optimizer = keras.optimizers.RMSprop(1e-3)
  optimizer.build(wired.main.variables)
  single = steps.make_step(tf.distribute.get_strategy(), wired.main, optimizer)(
      {k: tf.constant(v) for k, v in batch.items()})
  expected = [v.numpy() for v in generator.weights]
  for index in range(2):
    with np.load(tmp_path / f"after-{index}.npz") as after:
      assert float(after["mse"]) == pytest.approx(float(single["mse"]), rel=1e-5)
      got = [after[f"arr_{i}"] for i in range(len(expected))]
    worst = max(float(np.abs(a - b).max()) for a, b in zip(got, expected))
    assert worst < 1e-5, (index, worst)  # Batch norm's statistics included (synchronized).

  # 2. The loop: both workers finish; the chief alone wrote the workdir.
  results = [json.loads(out.strip().splitlines()[-2]) for out in outputs]
  assert [r["step"] for r in results] == [3, 3]
  assert results[0]["losses"] == results[1]["losses"]  # Reduced over both workers.
  workdir = tmp_path / "workdir"
  ckpt_dir = workdir / "pretrain" / "checkpoints"
  assert sorted(p.name for p in ckpt_dir.iterdir() if not p.name.startswith("ckpt-")) == [
      "checkpoint"]
  assert sorted({p.name.split(".")[0] for p in ckpt_dir.glob("ckpt-*")}) == [
      "ckpt-1", "ckpt-2", "ckpt-3"]
  assert sorted(p.name for p in workdir.iterdir()) == ["config.json", "pretrain"]
  assert sorted(p.name for p in (workdir / "pretrain").iterdir()) == [
      "checkpoints", "metrics.jsonl", "tensorboard"]
  rows = [json.loads(l) for l in (workdir / "pretrain" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if "mse" in r] == [1, 2, 3]  # Written once: by the chief.
  # The checkpoint restores completely into single-process networks and optimizers.
  nets = stages.build_networks(loop_cfg, ["generator"])
  step_var = tf.Variable(0, dtype=tf.int64)
  tf.train.Checkpoint(step=step_var, batches_drawn=tf.Variable(0, dtype=tf.int64), **nets,
                      **loop.build_optimizers(loop_cfg, "pretrain", nets)).restore(
                          loop.latest_checkpoint(str(workdir), "pretrain")
                      ).assert_existing_objects_matched()
  assert int(step_var) == 3

  # 3. SIGTERM to worker 1 alone stopped both workers at one step, which the chief saved.
  stops = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
  assert "stopped by SIGTERM" in stops[1]["stopped"], stops
  assert "stopped by a signal to another worker" in stops[0]["stopped"], stops
  stopped_at = {int(s["stopped"].split(" at step ")[1].split()[0]) for s in stops}
  assert len(stopped_at) == 1, stops
  [stopped_at] = stopped_at
  assert stops[1]["checkpoint"] is None
  assert stops[0]["checkpoint"].endswith(f"ckpt-{stopped_at}")
  assert loop.latest_checkpoint(str(tmp_path / "workdir-stop"), "pretrain") == (
      stops[0]["checkpoint"])
  reader = tf.train.load_checkpoint(stops[0]["checkpoint"])
  assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == stopped_at
