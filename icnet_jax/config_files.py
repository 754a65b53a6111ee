"""The shipped configs found by name: `--config=quickstart`, `--config=camvid:cpu` as well as
`--config=configs/camvid.py:cpu`, from any folder.

The repository's `configs/` is also the package's `icnet_jax/configs` (a link in the repository,
copied into an installed package), so an installed package finds them away from the clone.
"""

from __future__ import annotations

import pathlib

SHIPPED = pathlib.Path(__file__).resolve().parent / "configs"


def names() -> list[str]:
    """The shipped configs' names: `['camvid', 'cityscapes', ...]`."""
    return sorted(p.stem for p in SHIPPED.glob("*.py") if not p.name.startswith("_"))


def resolve(text: str) -> str:
    """`NAME[:variant]` -> `<shipped>/NAME.py[:variant]`; `configs/NAME.py[:variant]` likewise
    where no such file exists here; any other text (a path of the user's) unchanged."""
    path, colon, variant = text.partition(":")
    if pathlib.Path(path).is_file():
        return text
    candidate = pathlib.PurePath(path)
    if candidate.suffix == ".py" and candidate.parent == pathlib.PurePath("configs"):
        name = candidate.stem
    elif candidate.suffix == "" and len(candidate.parts) == 1:
        name = path
    else:
        return text
    shipped = SHIPPED / f"{name}.py"
    return f"{shipped}{colon}{variant}" if shipped.is_file() else text
