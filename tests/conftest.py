"""Shared test setup: quiet TensorFlow, repo root importable, fixed seeds."""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))
# Before any test imports TensorFlow, so the tests run with the package's
# defaults (oneDNN kernels on, see cascade_tf/__init__.py).
import cascade_tf  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-position


def pytest_xdist_auto_num_workers(config):  # pylint: disable=unused-argument
  """`-n auto` (pytest.ini): a worker per core, at most 4.

  Each worker imports its own TensorFlow and builds its own models, and a test
  file's tests stay on one worker (`--dist loadfile`) so that its module fixtures
  are built once: past a few workers the longest files set the time.
  """
  return max(1, min(4, os.cpu_count() or 1))
