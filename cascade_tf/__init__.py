"""cascade_tf: a deep cascade of networks for inpainting, deblurring and denoising.

A TensorFlow 2 / Keras 3 reimplementation of Zhao et al. 2017, "A deep
cascade of neural networks for image inpainting, deblurring and denoising".

Importing the package before TensorFlow turns TensorFlow's oneDNN CPU
kernels on (`TF_ENABLE_ONEDNN_OPTS=1`) unless the environment already sets
that variable: TensorFlow enables them by itself only on CPUs with AVX-512
VNNI/BF16 or AMX, but on this project's AVX2 machine they made training
updates and inference faster (docs/benchmarks.md has the measurements). Set
`TF_ENABLE_ONEDNN_OPTS=0` to keep TensorFlow's own choice. The setting
changes only which CPU kernels run, so results can differ from the Eigen
kernels in the last bits of float32 rounding.
"""

import os as _os
import sys as _sys

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
if "tensorflow" not in _sys.modules:  # Read by TensorFlow once, when it is imported.
  _os.environ.setdefault(ONEDNN_ENV, "1")

__version__ = "0.1.0"
