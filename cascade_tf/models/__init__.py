"""The networks of the deep cascade (paper Sec. 3) and the perceptual VGG16.

    generator.py   build_generator: inpainting generator G (Sec. 3.2, Fig. 3)
    critic.py      build_critic: WGAN critic D, VGG16-like (Sec. 3.2)
    restorer.py    build_restorer: deblurring-denoising network R (Sec. 3.3, Fig. 4)
    cascade.py     build_cascade: x -> {G(x), R(G(x))} (Sec. 3.1, Fig. 2)
    perceptual.py  build_vgg_features: frozen VGG16 features for eqs. (2-3)
    fold.py        fold_batch_norm: inference copy with batch norm merged into convs

All take and return images in [-1, 1]. docs/architecture.md documents the
choices made where the paper is silent.
"""

from cascade_tf.models.cascade import build_cascade
from cascade_tf.models.critic import build_critic
from cascade_tf.models.generator import build_generator
from cascade_tf.models.perceptual import build_vgg_features
from cascade_tf.models.restorer import build_restorer

__all__ = ["build_cascade", "build_critic", "build_generator", "build_restorer",
           "build_vgg_features"]
