"""Tests of cascade_tf.runtime and the package's CPU defaults (oneDNN, XLA)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

import cascade_tf
from cascade_tf import config
from cascade_tf import runtime

ROOT = Path(__file__).resolve().parents[1]


class _FakeStrategy:
  def __init__(self, replicas):
    self.num_replicas_in_sync = replicas


def test_jit_compile_resolution():
  one, two = _FakeStrategy(1), _FakeStrategy(2)
  has_accelerator = bool(tf.config.list_logical_devices("GPU") +
                         tf.config.list_logical_devices("TPU"))
  avx2, native_bf16 = ["avx2", "fma"], ["avx2", "fma", "avx512f", "avx512_bf16"]
  assert runtime.resolve_jit_compile("auto", one, features=avx2) is (not has_accelerator)
  # On a CPU with native bfloat16 oneDNN's kernels beat XLA's (docs/benchmarks.md).
  assert runtime.resolve_jit_compile("auto", one, features=native_bf16) is False
  assert runtime.resolve_jit_compile("auto", one, features=["amx_bf16", "amx_tile"]) is False
  assert runtime.resolve_jit_compile("auto", two, features=avx2) is False
  assert runtime.resolve_jit_compile("on", one, features=native_bf16) is True
  assert runtime.resolve_jit_compile("on", one) is True
  assert runtime.resolve_jit_compile("on", two) is False  # XLA needs a single replica.
  assert runtime.resolve_jit_compile("off", one) is False
  with pytest.raises(ValueError, match="jit_compile='yes'"):
    runtime.resolve_jit_compile("yes", one)


def test_jit_compile_config_values():
  assert config.cpu().train.jit_compile == config.paper().train.jit_compile == "auto"
  assert config.tiny().train.jit_compile == "off"
  assert config.with_overrides(config.cpu(), {"train.jit_compile": "on"}).train.jit_compile == "on"
  with pytest.raises(ValueError, match="train.jit_compile"):
    config.with_overrides(config.cpu(), {"train.jit_compile": "maybe"})


def _onednn_in_fresh_process(env_value):
  env = {k: v for k, v in os.environ.items() if k != cascade_tf.ONEDNN_ENV}
  if env_value is not None:
    env[cascade_tf.ONEDNN_ENV] = env_value
  env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
  code = ("import cascade_tf, os, tensorflow\n"
          "from tensorflow.python.util import _pywrap_util_port\n"
          "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), _pywrap_util_port.IsMklEnabled())")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120, check=True)
  return out.stdout.split()


def test_importing_the_package_turns_onednn_on_unless_the_user_chose():
  assert _onednn_in_fresh_process(None) == ["1", "True"]
  assert _onednn_in_fresh_process("0") == ["0", "False"]  # The user's choice wins.


# What `auto` would pick were the bfloat16 gates met on a CPU with native bfloat16.
_GATES_MET = {"train": ("float32", "not faster"), "infer": ("mixed_bfloat16", "gates met")}


@pytest.mark.parametrize("features, accelerator, train, infer", [
    (["avx2", "fma"], None, "float32", "float32"),
    (["avx2", "avx512f"], None, "float32", "float32"),  # AVX-512 without BF16: emulated.
    (["avx512f", "avx512_bf16"], None, "float32", "mixed_bfloat16"),
    (["avx512f", "amx_bf16", "amx_tile"], None, "float32", "mixed_bfloat16"),
    (["avx512_bf16"], "GPU", "float32", "float32"),
])
def test_auto_precision_follows_the_cpu_and_the_device(monkeypatch, features, accelerator,
                                                       train, infer):
  monkeypatch.setattr(runtime, "NATIVE_BFLOAT16_CHOICE", _GATES_MET)
  for purpose, expected in (("train", train), ("infer", infer)):
    policy, reason = runtime.resolve_precision("auto", purpose, features=features,
                                               accelerator=accelerator)
    assert policy == expected and reason.startswith("auto")


def test_auto_precision_is_the_measured_choice():
  """docs/benchmarks.md: on a CPU with native bfloat16 both gates held for both purposes."""
  for purpose in runtime.PURPOSES:
    policy, reason = runtime.resolve_precision("auto", purpose, features=["amx_bf16"],
                                               accelerator=None)
    assert policy == "mixed_bfloat16" and "amx_bf16" in reason
    policy, reason = runtime.resolve_precision("auto", purpose, features=["avx2", "fma"],
                                               accelerator=None)
    assert policy == "float32" and "emulated" in reason
  # An explicit policy is kept whatever the machine.
  assert runtime.resolve_precision("mixed_float16", "train", features=[],
                                   accelerator=None) == ("mixed_float16", "set explicitly")
  with pytest.raises(ValueError, match="--mixed_precision='half'"):
    runtime.resolve_precision("half", "infer")
  with pytest.raises(ValueError, match="purpose"):
    runtime.resolve_precision("auto", "serve")


def test_auto_is_the_default_precision_and_resolves_in_the_config():
  assert config.TrainConfig().mixed_precision == "auto"
  assert all(config.get_preset(p).train.mixed_precision == "auto" for p in config.PRESETS)
  resolved = runtime.resolve_config_precision(config.tiny(), "train")
  assert resolved.train.mixed_precision in config.POLICIES
  assert resolved.train.mixed_precision == runtime.resolve_precision("auto", "train")[0]


def test_precision_scope_restores_the_policy():
  import keras
  with runtime.precision_scope("mixed_bfloat16") as policy:
    assert policy == keras.mixed_precision.global_policy().name == "mixed_bfloat16"
  assert keras.mixed_precision.global_policy().name == "float32"
