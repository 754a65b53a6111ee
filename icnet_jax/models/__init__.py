"""ICNet and its PSPNet50 baseline as Flax linen modules."""

from icnet_jax.models.folding import fold_batchnorm, released_tensors
from icnet_jax.models.icnet import ICNet
from icnet_jax.models.pspnet import PSPNet

__all__ = ["ICNet", "PSPNet", "fold_batchnorm", "released_tensors"]
