#!/usr/bin/env bash
# Here, once: the wheels the lent GPU machine lacks, into .whl/ (ignored by git, carried by the
# device call). That machine has CPython 3.12 with torch, numpy, pillow, pyyaml, psutil, tqdm,
# msgpack, ninja, einops and py-cpuinfo; it lacks DeepSpeed (PyPI ships only its source: built
# here into a pure-Python wheel, no ops), pydantic (which DeepSpeed needs), Hydra and webdataset.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
grep -qxF '/.whl/' .git/info/exclude || echo '/.whl/' >>.git/info/exclude
rm -rf .whl && mkdir -p .whl
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl deepspeed==0.19.8
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl pydantic-core==2.50.5
"$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl pydantic==2.14.4 annotated-types==0.8.0 \
    typing-inspection==0.4.5 hjson==3.1.0 hydra-core==1.3.8 omegaconf==2.3.1 webdataset==1.0.2 braceexpand==0.1.7
"$PY" -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3  # PyPI has its source only: pure Python
ls -la .whl
du -sh .whl
