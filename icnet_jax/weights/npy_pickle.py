"""`.npy` files read without running code: object arrays go through a restricted unpickler.

The ICNet/PSPNet ports save their weights as `np.save(path, {layer: {param: array}})`, a 0-d
object array whose bytes are a pickle. `np.load(..., allow_pickle=True)` unpickles it with the
plain `pickle` module, which calls whatever the file names (`os.system`, `builtins.exec`, ...).
`load_npy` admits only the globals such a file needs to rebuild NumPy arrays, dtypes, scalars and
`OrderedDict`s; dicts, lists, tuples, strings, numbers, booleans and `None` need no global. Any
other global raises `RefusedGlobal` before anything is called.
"""

from __future__ import annotations

import io
import pathlib
import pickle

import numpy as np
from numpy.lib import format as npy_format

# (module, name) as written by NumPy 2 (`numpy._core`), NumPy 1 and Python 2 (`numpy.core`), and
# Python 3 writers of protocol-2 pickles (`_codecs.encode`, how they store `bytes`).
_ALLOWED = frozenset(
    [
        *((core, name) for core in ("numpy._core.multiarray", "numpy.core.multiarray")
          for name in ("_reconstruct", "scalar")),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),
    ]
)  # fmt: skip


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global other than NumPy's array and dtype constructors."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.global_name = f"{module}.{name}"


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise RefusedGlobal(module, name)
        if module == "numpy.core.multiarray":  # NumPy 2's name, without its deprecation shim
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def load_npy(path: str | pathlib.Path) -> np.ndarray:
    """The array of a `.npy` file; an object array (e.g. a 0-d array holding a dict of arrays) is
    unpickled with the restricted unpickler. Python 2 pickles are read as latin-1, like
    `np.load(..., encoding="latin1")`.

    Raises:
      RefusedGlobal: the pickle names a global outside NumPy's arrays and `OrderedDict`.
      ValueError, pickle.UnpicklingError, EOFError: not a readable `.npy` file.
    """
    with open(path, "rb") as file:
        version = npy_format.read_magic(file)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(file)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(file)
        else:
            raise ValueError(f".npy format version {version} is not supported")
        if not dtype.hasobject:
            file.seek(0)
            return npy_format.read_array(file, allow_pickle=False)
        data = file.read()
    array = _ArraysOnly(io.BytesIO(data), encoding="latin1").load()
    if not isinstance(array, np.ndarray) or array.shape != shape:
        raise ValueError(f"the pickle holds {type(array).__name__}, not the header's {shape} array")
    return array
