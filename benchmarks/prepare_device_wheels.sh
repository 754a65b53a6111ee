#!/usr/bin/env bash
# Downloads, into .whl/ (git-ignored), the Python 3.12 manylinux wheels that the GPU machine
# lacks for benchmarks/device_check.py: its image has jax, flax, optax, orbax, chex, OpenCV, torch
# and their dependencies, but not tfds, grain, array_record, ml_collections, tensorboardX and the
# small packages only they need. The machine has no network, so run this beforehand where PyPI is
# reachable; the check installs them with `pip install --no-index --no-deps` (--no-deps: the
# image's own versions of shared dependencies, protobuf or numpy, are left alone).
#
#   bash benchmarks/prepare_device_wheels.sh          # then carry .whl to the GPU machine
#
# Versions are those this repository is tested with (requirements.txt lower bounds). Fails when the
# folder exceeds 64 MiB, the most a device call may carry.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEST=.whl
WHEELS=(
  grain==0.2.18 array_record==0.8.6 tensorflow-datasets==4.9.10 ml_collections==1.1.0
  tensorboardX==2.6.5 importlib_resources==7.1.0
  # dependencies of the above that the image does not have
  dm-tree==0.1.10 immutabledict==4.3.1 promise==2.3 simple-parsing==0.1.9 docstring-parser==0.17.0
  tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0 termcolor==3.3.0 toml==0.10.2
  portpicker==1.6.0
  # tensorflow-metadata's generated code needs a protobuf runtime at least as new as this one;
  # installed into the check's own folder, it shadows the image's for the check alone
  protobuf==7.36.2
)
rm -rf "$DEST" && mkdir -p "$DEST"
# promise has only an sdist: pip builds it here into a pure-Python wheel.
"$PYTHON" -m pip wheel -q --no-deps -w "$DEST" promise==2.3
for spec in "${WHEELS[@]}"; do
  [[ $spec == promise==* ]] && continue
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$DEST" "$spec"
done
size=$(du -sb "$DEST" | cut -f1)
ls -l "$DEST"
echo "$DEST: $(ls "$DEST" | wc -l) wheels, $((size / 1024 / 1024)) MiB"
if ((size > 64 * 1024 * 1024)); then
  echo "error: $DEST is over the 64 MiB a device call may carry" >&2
  exit 1
fi
