"""ICNet in JAX/Flax. `icnet_jax.load(run)` gives a trained run as a `Model` that segments
images (`icnet_jax/inference/model.py`); imported on first use, so that `import icnet_jax` and
its small modules stay light."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from icnet_jax.inference.model import Model, load

__all__ = ["Model", "load"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from icnet_jax.inference import model

        return getattr(model, name)
    raise AttributeError(f"module 'icnet_jax' has no attribute {name!r}")
