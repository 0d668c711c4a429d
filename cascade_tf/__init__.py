"""cascade_tf: a deep cascade of networks for inpainting, deblurring and denoising.

A TensorFlow 2 / Keras 3 reimplementation of Zhao et al. 2017, "A deep
cascade of neural networks for image inpainting, deblurring and denoising".
"""

__version__ = "0.1.0"
