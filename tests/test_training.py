"""Short runs of every training stage on the tiny preset: resume, chaining, faults.

These use the `samples` source (scikit-image photos, no download) at 32x32
and VGG16 with random weights (`vgg_weights=none`): the perceptual term is
exercised, not meaningful.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from cascade_tf import config as config_lib
from cascade_tf import runtime
from cascade_tf.data import pipeline
from cascade_tf.training import loop
from cascade_tf.training import schedule
from cascade_tf.training import stages as stages_lib

ROOT = Path(__file__).resolve().parents[1]


def _tiny(**overrides):
  base = {"train.steps": 2, "train.checkpoint_every": 1, "train.eval_every": 2,
          "train.log_every": 1}
  base.update(overrides)
  return config_lib.with_overrides(config_lib.tiny(), base)


def _variables(path, network):
  """The weights of `network` as restored from the checkpoint at `path`."""
  net = stages_lib.build_networks(_tiny(), [network])[network]
  tf.train.Checkpoint(**{network: net}).restore(path).expect_partial() \
      .assert_existing_objects_matched()
  return {v.path: v.numpy() for v in net.weights}


def _differs(a, b):
  assert a.keys() == b.keys() and a
  return any(not np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def chained(tmp_path_factory):
  """One `all` run: pretrain -> gan -> dd -> joint, two steps each."""
  workdir = str(tmp_path_factory.mktemp("all"))
  results = loop.train(_tiny(), "all", workdir)
  return workdir, results


def test_all_chains_the_four_stages(chained):
  workdir, results = chained
  assert [r.stage for r in results] == ["pretrain", "gan", "dd", "joint"]
  for r in results:
    assert r.step == 2
    assert r.last_losses and all(np.isfinite(v) for v in r.last_losses.values())
    assert loop.latest_checkpoint(workdir, r.stage).endswith("ckpt-2")
    assert os.path.exists(os.path.join(workdir, r.stage, "metrics.jsonl"))
    assert os.listdir(os.path.join(workdir, r.stage, "tensorboard"))
  assert {"mse", "perceptual", "adversarial", "total", "critic_loss", "wasserstein"} <= set(
      results[1].last_losses)
  assert {"mse", "perceptual", "adversarial", "mse_intermediate"} <= set(results[3].last_losses)
  assert "psnr_restored" in results[3].validation
  assert os.path.exists(os.path.join(workdir, "config.json"))
  # A warm-started stage (gan, joint) is validated at step 0 too, where it begins.
  for r in results:
    rows = [json.loads(line) for line in open(os.path.join(workdir, r.stage, "metrics.jsonl"))]
    val_steps = sorted({row["step"] for row in rows if "val_track" in row})
    assert val_steps == ([0, 2] if r.stage in ("gan", "joint") else [2]), r.stage


def test_each_stage_changes_its_weights(chained):
  workdir, _ = chained
  ckpt = {s: loop.latest_checkpoint(workdir, s) for s in ("pretrain", "gan", "dd", "joint")}
  # Warm-started networks moved away from where they started.
  assert _differs(_variables(ckpt["gan"], "generator"), _variables(ckpt["pretrain"], "generator"))
  assert _differs(_variables(ckpt["joint"], "generator"), _variables(ckpt["gan"], "generator"))
  assert _differs(_variables(ckpt["joint"], "restorer"), _variables(ckpt["dd"], "restorer"))
  assert _differs(_variables(ckpt["joint"], "critic"), _variables(ckpt["gan"], "critic"))
  # pretrain and dd moved away from the seeded initialisation.
  for stage, network in (("pretrain", "generator"), ("dd", "restorer")):
    tf.keras.utils.set_random_seed(_tiny().train.seed)
    fresh = stages_lib.build_networks(_tiny(), [network])[network]
    assert _differs(_variables(ckpt[stage], network), {v.path: v.numpy() for v in fresh.weights})


def test_critic_weights_are_clipped(chained):
  workdir, _ = chained
  cfg = _tiny()
  for stage in ("gan", "joint"):
    critic = _variables(loop.latest_checkpoint(workdir, stage), "critic")
    kernels = list(critic.values())
    assert len(kernels) >= 4
    assert max(float(np.abs(v).max()) for v in kernels) <= cfg.train.clip + 1e-7
    # Its health is logged: the Wasserstein estimate, its gradient norm, the share at the bound.
    logged = [json.loads(line) for line in open(os.path.join(workdir, stage, "metrics.jsonl"))]
    values = next(r for r in logged if "critic/at_clip" in r)
    assert 0.0 <= values["critic/at_clip"] <= 1.0
    assert {"wasserstein", "critic/grad_norm"} <= set(values)
    assert ("mse_intermediate" in values) == (stage == "joint")


def test_a_wgan_gp_stage_trains_without_clipping_and_logs_its_penalty(tmp_path):
  cfg = _tiny(**{"train.steps": 2, "loss.critic_constraint": "gp"})
  [result] = loop.train(cfg, "gan", str(tmp_path), init_from="scratch")
  assert result.step == 2
  logged = [json.loads(line) for line in open(tmp_path / "gan" / "metrics.jsonl")]
  values = next(r for r in logged if "gradient_penalty" in r)
  assert values["gradient_penalty"] > 0 and "critic/at_clip" not in values


def test_rerun_of_a_complete_stage_does_nothing(chained):
  workdir, _ = chained
  [result] = loop.train(_tiny(), "dd", workdir)
  assert result.step == 2 and result.resumed_from.endswith("ckpt-2")
  assert result.last_losses == {}


def test_a_stage_that_stops_improving_ends_and_stays_ended(tmp_path):
  """patience=1 with an unreachable gain: the second validation ends the stage."""
  cfg = _tiny(**{"train.steps": 10, "train.eval_every": 1, "train.checkpoint_every": 5,
                 "train.patience": 1, "train.min_improvement": 1000.0})
  [result] = loop.train(cfg, "dd", str(tmp_path))
  assert result.step == 2
  assert loop.latest_checkpoint(str(tmp_path), "dd").endswith("ckpt-2")  # Written on ending.
  state = json.loads((tmp_path / "dd" / loop.EARLY_STOP_FILE).read_text())
  assert state["stopped_at"] == 2 and state["best_step"] == 1 and state["stale"] == 1
  [again] = loop.train(cfg, "dd", str(tmp_path))  # Stays ended: no further step.
  assert again.step == 2 and again.last_losses == {}
  (tmp_path / "dd" / loop.EARLY_STOP_FILE).unlink()  # Deleting the file trains it on.
  [on] = loop.train(_tiny(**{"train.steps": 3}), "dd", str(tmp_path))
  assert on.step == 3


@pytest.mark.parametrize("stage,network", [("pretrain", "generator"), ("dd", "restorer")])
def test_a_first_stage_fine_tunes_another_workdirs_run_of_it(chained, tmp_path, stage, network):
  """--init_from=WORKDIR on pretrain/dd starts from WORKDIR's checkpoint of that stage."""
  source, _ = chained
  cfg = _tiny(**{"train.steps": 1, f"train.{stage}_lr": 1e-12})
  [result] = loop.train(cfg, stage, str(tmp_path), init_from=source)
  assert result.step == 1
  before = _variables(loop.latest_checkpoint(source, stage), network)
  after = _variables(loop.latest_checkpoint(str(tmp_path), stage), network)
  assert before.keys() == after.keys()
  for name, value in before.items():
    if "moving_" not in name:  # Batch norm's running statistics move with any step.
      np.testing.assert_allclose(after[name], value, atol=1e-8, err_msg=name)
  # Its step-0 validation scored the weights it started from: the source's last validation.
  def validations(workdir, step):
    rows = [json.loads(line) for line in open(os.path.join(workdir, stage, "metrics.jsonl"))]
    return {(r["val_track"], r["val_split"]): r for r in rows
            if "val_track" in r and r["step"] == step}
  start, source_end = validations(str(tmp_path), 0), validations(source, 2)
  assert start and start.keys() == source_end.keys()
  for vset, row in start.items():
    for name in row:
      if name.startswith("val_psnr"):
        assert row[name] == pytest.approx(source_end[vset][name], abs=1e-4), (vset, name)
  # A workdir without that stage is named, with the way out.
  with pytest.raises(loop.MissingStageError, match=r"--init_from=scratch"):
    loop.train(cfg, stage, str(tmp_path / "other"), init_from=str(tmp_path / "empty"))


def test_missing_stage_names_it_and_the_command(tmp_path):
  with pytest.raises(loop.MissingStageError, match=r"'pretrain'.*train.py --stage=pretrain"):
    loop.train(_tiny(), "gan", str(tmp_path))


def test_no_pretraining_ablation_runs_joint_from_scratch(tmp_path):
  [result] = loop.train(_tiny(**{"train.steps": 1}), "joint", str(tmp_path), init_from="scratch")
  assert result.step == 1
  assert np.isfinite(result.last_losses["total"])


@pytest.mark.parametrize("log_every,stops_at", [(1, 3), (100, 4)])
def test_nan_in_data_stops_training_and_keeps_the_last_checkpoint(tmp_path, monkeypatch,
                                                                  log_every, stops_at):
  """Batches from the third on are NaN: step 3 is the first bad one. Losses are read at
  logged steps and before every checkpoint (every 2 steps here), so with log_every=100
  the NaN is caught at step 4, before checkpoint 4 is written."""
  real = pipeline.make_dataset

  def poisoned(*args, **kwargs):
    dataset = real(*args, **kwargs)
    if not kwargs.get("training"):
      return dataset
    def poison(i, batch):
      bad = tf.where(i >= 2, np.nan, 0.0)
      return {**batch, "corrupted": batch["corrupted"] + bad}
    return dataset.enumerate().map(poison)

  monkeypatch.setattr(loop.pipeline, "make_dataset", poisoned)
  workdir = str(tmp_path)
  with pytest.raises(loop.NonFiniteLossError,
                     match=rf"step {stops_at}: non-finite loss.*ckpt-2"):
    loop.train(_tiny(**{"train.steps": 5, "train.log_every": log_every,
                         "train.checkpoint_every": 2, "train.eval_every": 100}),
               "pretrain", workdir)
  assert loop.latest_checkpoint(workdir, "pretrain").endswith("ckpt-2")


def test_periodic_work_is_due_every_n_steps_and_at_the_end():
  assert [s for s in range(1, 11) if schedule.is_due(s, 4, 10)] == [4, 8, 10]
  assert [s for s in range(1, 6) if schedule.is_due(s, 0, 5)] == [5]


def test_changed_network_in_same_workdir_is_refused(tmp_path):
  loop.save_config(_tiny(), str(tmp_path))
  with pytest.raises(ValueError, match="generator.base_filters"):
    loop.save_config(_tiny(**{"generator.base_filters": 8}), str(tmp_path))


def _train_cmd(workdir, steps):
  return [sys.executable, str(ROOT / "train.py"), "--preset=tiny", "--stage=pretrain",
          f"--workdir={workdir}", f"--steps={steps}", "--checkpoint_every=1", "--eval_every=1000",
          "--log_every=1"]


def _start(cmd, env, log):
  """Starts a training process with its stderr in the file `log` (a pipe could fill up)."""
  with open(log, "w") as err:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)


def _wait_for_step(metrics_path, step, proc, log, seconds=240):
  """Waits until the training subprocess has logged `step`; fails if it ends first."""
  deadline = time.time() + seconds
  while time.time() < deadline:
    if proc.poll() is not None:
      pytest.fail(f"training ended early with {proc.returncode}: {log.read_text()[-3000:]}")
    if metrics_path.exists():
      steps = [json.loads(line).get("step", 0) for line in metrics_path.read_text().splitlines()
               if line.strip()]
      if steps and max(steps) >= step:
        return
    time.sleep(0.3)
  pytest.fail(f"training did not reach step {step} in {seconds} s")


def _stopped_by(proc, sig, log):
  """Sends `sig`; returns (the step the run says it checkpointed, its stderr)."""
  proc.send_signal(sig)
  try:
    proc.wait(timeout=240)
  finally:
    proc.kill()
  stderr = log.read_text()
  assert proc.returncode == 128 + sig, stderr[-3000:]
  line = next(l for l in stderr.splitlines() if f"stopped by {sig.name} at step" in l)
  step = int(line.split(" at step ")[1].split(" ")[0])
  assert "Traceback" not in stderr and f"ckpt-{step} holds it" in line
  return step, stderr


def test_kill_9_resumes_and_sigterm_checkpoints_the_step_in_progress(tmp_path):
  """kill -9: the rerun resumes from the last periodic checkpoint. SIGTERM: a checkpoint of
  the step in progress, exit status 143 and a message (no traceback)."""
  workdir = tmp_path / "run"
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
  ckpt_dir = workdir / "pretrain" / "checkpoints"
  metrics = workdir / "pretrain" / "metrics.jsonl"
  proc = _start(_train_cmd(workdir, 100000), env, tmp_path / "first.log")
  try:
    _wait_for_step(metrics, 3, proc, tmp_path / "first.log")
    deadline = time.time() + 60
    # Any checkpoint from step 3 on (a fast CPU may be several steps further by now).
    while int((tf.train.latest_checkpoint(str(ckpt_dir)) or "-0").rsplit("-", 1)[1]) < 3:
      assert time.time() < deadline, "no checkpoint of step 3"
      time.sleep(0.2)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  # The newest checkpoint on disk, as the rerun looks for it: a kill between writing a
  # checkpoint's files and updating the `checkpoint` state file leaves the state file one behind.
  newest = loop._checkpoint_prefixes(str(ckpt_dir))[0]  # pylint: disable=protected-access
  killed_at = int(newest.rsplit("-", 1)[1])

  # The rerun checkpoints only when signalled: the checkpoint after the signal is its own.
  cmd = [*_train_cmd(workdir, 100000)[:-3], "--checkpoint_every=1000", "--eval_every=1000",
         "--log_every=1"]
  proc = _start(cmd, env, tmp_path / "rerun.log")
  _wait_for_step(metrics, killed_at + 2, proc, tmp_path / "rerun.log")
  stopped_at, stderr = _stopped_by(proc, signal.SIGTERM, tmp_path / "rerun.log")
  resumed = [line for line in stderr.splitlines() if "Resumed stage pretrain from" in line]
  assert resumed and int(resumed[0].rsplit("at step ", 1)[1].rstrip(".")) == killed_at
  assert stopped_at >= killed_at + 2
  assert tf.train.latest_checkpoint(str(ckpt_dir)).endswith(f"ckpt-{stopped_at}")
  reader = tf.train.load_checkpoint(str(ckpt_dir / f"ckpt-{stopped_at}"))
  assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == stopped_at


def test_stop_requests_collect_sigint_and_sigterm_and_restore_the_handlers():
  before = {sig: signal.getsignal(sig) for sig in loop.STOP_SIGNALS}
  with loop._stop_requests() as requested:  # pylint: disable=protected-access
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: no KeyboardInterrupt while it is installed.
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.time() + 5
    while len(requested) < 2 and time.time() < deadline:
      time.sleep(0.01)
    assert requested == [signal.SIGINT, signal.SIGTERM]
  assert {sig: signal.getsignal(sig) for sig in loop.STOP_SIGNALS} == before
  seen = []

  def in_a_thread():  # Python installs handlers only in the main thread.
    with loop._stop_requests() as requested:  # pylint: disable=protected-access
      seen.append((requested, signal.getsignal(signal.SIGTERM)))

  thread = threading.Thread(target=in_a_thread)
  thread.start()
  thread.join()
  assert seen == [([], before[signal.SIGTERM])]


def test_an_unreadable_checkpoint_is_set_aside_and_the_newest_readable_one_resumes(tmp_path,
                                                                                   capsys):
  cfg = _tiny(**{"train.steps": 3, "train.eval_every": 100})
  loop.train(cfg, "pretrain", str(tmp_path))
  ckpt_dir = tmp_path / "pretrain" / "checkpoints"
  [data_file] = ckpt_dir.glob("ckpt-3.data-*")
  data_file.write_bytes(data_file.read_bytes()[:100])  # Truncated, as by a full disk.
  [result] = loop.train(_tiny(**{"train.steps": 4, "train.eval_every": 100}), "pretrain",
                        str(tmp_path))
  assert result.resumed_from.endswith("ckpt-2") and result.step == 4
  err = capsys.readouterr().err
  assert "ckpt-3 is unreadable" in err and "Resumed stage pretrain from" in err
  assert sorted(p.name for p in (ckpt_dir / "unreadable").iterdir())[0].startswith("ckpt-3.")
  assert tf.train.latest_checkpoint(str(ckpt_dir)).endswith("ckpt-4")

  for index_file in ckpt_dir.glob("ckpt-*.index"):  # Now every checkpoint is damaged.
    index_file.write_bytes(b"garbage")
  with pytest.raises(loop.UnreadableCheckpointError, match="none of the checkpoints"):
    loop.train(_tiny(**{"train.steps": 5, "train.eval_every": 100}), "pretrain", str(tmp_path))
  assert not list((tmp_path / "pretrain" / "checkpoints").glob("ckpt-5*"))  # Nothing trained.


MIRRORED_SCRIPT = r"""
import sys
import numpy as np
import tensorflow as tf
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
import keras
from cascade_tf import config as config_lib
from cascade_tf import runtime
from cascade_tf.training import loop, stages, steps

cfg = config_lib.tiny()
batch_np = {
    "corrupted": np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32),
    "clean": np.random.default_rng(1).random((4, 32, 32, 3)).astype(np.float32),
}

def one_update(strategy):
  with strategy.scope():
    keras.utils.set_random_seed(0)
    wired = stages.build_stage(cfg, "pretrain", global_batch_size=4)
    net = wired.nets["generator"]
    opt = keras.optimizers.RMSprop(1e-3)
    opt.build(net.trainable_variables)
  step = steps.make_step(strategy, wired.main, opt)
  dataset = tf.data.Dataset.from_tensors(batch_np)
  out = step(next(iter(strategy.experimental_distribute_dataset(dataset))))
  return float(out["mse"]), [v.numpy() for v in net.trainable_variables]

single_loss, single = one_update(tf.distribute.OneDeviceStrategy("/cpu:0"))
mirrored_strategy = runtime.make_strategy("mirrored")
assert mirrored_strategy.num_replicas_in_sync == 2, mirrored_strategy.num_replicas_in_sync
mirrored_loss, mirrored = one_update(mirrored_strategy)
assert abs(single_loss - mirrored_loss) < 1e-5, (single_loss, mirrored_loss)
worst = max(float(np.abs(a - b).max()) for a, b in zip(single, mirrored))
print("max weight difference", worst)
assert worst < 1e-5, worst
print("OK")
"""


def test_two_replica_mirrored_update_matches_one_replica():
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
         "PYTHONPATH": str(ROOT)}
  out = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and "OK" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]


def test_train_cli_help_and_bad_flag():
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  helped = subprocess.run([sys.executable, str(ROOT / "train.py"), "--helpfull"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
  assert "--n_critic" in helped.stdout and "--mixed_precision" in helped.stdout
  bad = subprocess.run([sys.executable, str(ROOT / "train.py"), "--workdir=/tmp/x",
                        "--image_size=48"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
  assert bad.returncode != 0
  assert "image_size" in bad.stderr and "Traceback" not in bad.stderr


def test_report_plots_curves_and_tabulates_validation(chained, tmp_path):
  from cascade_tf.training import report
  workdir, _ = chained
  png = tmp_path / "curves.png"
  drawn = report.plot_curves(workdir, str(png))
  logged = report.load_metrics(workdir)
  assert list(drawn) == list(logged) == ["pretrain", "gan", "dd", "joint"]
  assert set(drawn["pretrain"]["losses"]) == {"mse"}
  assert set(drawn["dd"]["validation"]) == {"identity", "restored"}
  assert set(drawn["joint"]["validation"]) == {"identity", "inpainted", "restored"}
  # The joint stage's curves: its terms at every logged step, with the logged values.
  assert {"mse", "adversarial", "mse_intermediate", "critic_loss"} <= set(drawn["joint"]["losses"])
  joint_rows = logged["joint"]["train"]
  assert drawn["joint"]["losses"]["mse"] == [(r["step"], r["mse"]) for r in joint_rows]
  from PIL import Image
  with Image.open(png) as image:  # 4 stage columns of 4.2 in, 2 rows of 3.25 in, 110 dpi.
    assert image.size == (round(4 * 4.2 * 110), round(6.5 * 110))
  table = report.validation_table(workdir)
  last = logged["joint"]["val"][-1]
  assert ("| joint | joint | 2 | restored | " in table
          and f"| {last['val_psnr_restored']:.2f} | {last['val_psnr_identity']:.2f} |" in table)
  assert "| dd | restore | 2 | restored |" in table
  with pytest.raises(ValueError, match="metrics.jsonl"):
    report.load_metrics(str(tmp_path))


def test_inference_loads_the_most_trained_weights(chained):
  from cascade_tf import inference
  workdir, _ = chained
  loaded = inference.load_workdir_cascade(workdir)
  assert loaded.weights_from["generator"].endswith("joint/checkpoints/ckpt-2")
  assert loaded.weights_from["restorer"].endswith("joint/checkpoints/ckpt-2")
  only_gan = inference.load_workdir_cascade(workdir, stage="gan", allow_random_restorer=True)
  assert only_gan.weights_from["generator"].endswith("gan/checkpoints/ckpt-2")
  assert only_gan.weights_from["restorer"] == "random"
  with pytest.raises(ValueError, match="no checkpoint with a trained restorer"):
    inference.load_workdir_cascade(workdir, stage="gan")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16", "auto"])
def test_mixed_precision_trains_and_checkpoints(tmp_path, policy):
  import keras
  try:
    [result] = loop.train(_tiny(**{"train.mixed_precision": policy}), "pretrain", str(tmp_path))
    # The stage puts the caller's policy back: models built next are not in its precision.
    assert keras.mixed_precision.global_policy().name == "float32"
  finally:
    keras.mixed_precision.set_global_policy("float32")
  assert result.step == 2 and np.isfinite(result.last_losses["mse"])
  # config.json records the policy the run used: `auto` resolved on this machine.
  written = json.loads((tmp_path / "config.json").read_text())["train"]["mixed_precision"]
  assert written == runtime.resolve_precision(policy, "train")[0] and written != "auto"
  names = [n for n, _ in tf.train.list_variables(loop.latest_checkpoint(str(tmp_path),
                                                                         "pretrain"))]
  # mixed_float16 wraps the optimizer in a LossScaleOptimizer whose scale is saved.
  assert any("dynamic_scale" in n for n in names) == (policy == "mixed_float16")


def test_xla_compiled_updates_match_the_graph_updates():
  """jit_compile=True (the CPU default) computes the same critic and joint updates."""
  import keras
  from cascade_tf.models import perceptual
  from cascade_tf.training import steps as steps_lib
  # Fewer layers than `tiny`: XLA's compile time, most of this test's, grows with them.
  cfg = _tiny(**{"generator.num_levels": 2, "generator.num_res_blocks": 1,
                 "restorer.num_encode": 2, "restorer.num_decode": 2,
                 "critic.convs_per_group": "1,1"})
  strategy = tf.distribute.get_strategy()
  rng = np.random.default_rng(0)
  batch = {k: tf.constant(rng.uniform(0, 1, (4, 32, 32, 3)).astype("float32"))
           for k in ("corrupted", "clean")}

  def updates(jit):
    keras.utils.set_random_seed(3)
    vgg = perceptual.build_vgg_features("none", 32)
    wired = stages_lib.build_stage(cfg, "joint", global_batch_size=4, vgg=vgg)
    nets = wired.nets
    critic = steps_lib.make_step(strategy, wired.critic, keras.optimizers.RMSprop(1e-3),
                                 jit_compile=jit)
    joint = steps_lib.make_step(strategy, wired.main, keras.optimizers.RMSprop(1e-3),
                                jit_compile=jit)
    critic_values = critic(batch)  # The critic updates first, as in the loop.
    out = stages_lib.logged_values(joint(batch), critic_values)
    weights = [v.numpy() for v in wired.main.variables + nets["critic"].trainable_variables]
    clipped = max(float(np.abs(v.numpy()).max()) for v in nets["critic"].trainable_variables)
    return {k: float(v) for k, v in out.items()}, weights, clipped

  plain_losses, plain_weights, _ = updates(False)
  xla_losses, xla_weights, xla_clipped = updates(True)
  assert plain_losses.keys() == xla_losses.keys()
  for key, value in plain_losses.items():
    assert xla_losses[key] == pytest.approx(value, rel=1e-3, abs=1e-5), key
  worst = max(float(np.abs(a - b).max()) for a, b in zip(plain_weights, xla_weights))
  assert worst < 1e-4, worst
  assert xla_clipped <= 0.01 + 1e-7  # Weight clipping ran inside the compiled critic update.


XLA_SCRIPT = r"""
import sys
import numpy as np
from cascade_tf import config as config_lib
from cascade_tf.training import loop
cfg = config_lib.with_overrides(config_lib.tiny(), {
    "train.steps": 2, "train.checkpoint_every": 1, "train.eval_every": 2, "train.log_every": 1,
    "train.jit_compile": sys.argv[2]})
[result] = loop.train(cfg, "pretrain", sys.argv[1])
assert result.step == 2 and np.isfinite(result.last_losses["mse"]), result
assert loop.latest_checkpoint(sys.argv[1], "pretrain").endswith("ckpt-2")
print("OK")
"""


def test_training_loop_runs_xla_compiled_steps(tmp_path):
  """With jit_compile on, XLA compiles the update: XLA dumps its `replica_fn` modules.

  (With jit_compile off the same run dumps none; checked when this test was
  written, not repeated to keep the suite short.)
  """
  dump = tmp_path / "xla_dump"
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT),
         "XLA_FLAGS": f"--xla_dump_to={dump}"}
  out = subprocess.run([sys.executable, "-c", XLA_SCRIPT, str(tmp_path / "work"), "on"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
  assert list(dump.glob("*replica_fn*"))
