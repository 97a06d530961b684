#!/usr/bin/env bash
# Runs the suite at the lowest versions pyproject.toml declares for timm, huggingface_hub and safetensors, so that
# every declared lower bound is a tested one. Extra arguments go to pytest.
#
# Those three are small (pure Python, safetensors one small extension), so they are not a second environment:
# pip installs the pinned versions into a folder beside the cached venv (seconds, once) and PYTHONPATH puts that
# folder in front of the venv's newer copies; torch and everything else stay the venv's.
# Without test paths among the arguments it runs the part of the suite that these three versions decide: Hub
# downloads and folders, checkpoints, torch.hub, the pins, timm's weights and exports, transformers, training
# checkpoints, the embedded weights. (At this writing timm's lowest declared version is also its newest, so
# huggingface_hub and safetensors are what differ.)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
# "timm>=1.0.21" -> "timm==1.0.21", for the packages named above
pins="$(python - pyproject.toml <<'PY'
import re, sys, tomllib
deps = tomllib.load(open(sys.argv[1], 'rb'))['project']['dependencies']
for dep in deps:
    m = re.fullmatch(r'(timm|huggingface-hub|safetensors)>=([0-9][0-9a-z.]*)(,.*)?', dep.replace(' ', ''))
    if m:
        print(f'{m.group(1)}=={m.group(2)}')
PY
)"
[ "$(wc -l <<<"$pins")" -eq 3 ] || { echo "expected lower bounds for timm, huggingface-hub, safetensors; got: $pins" >&2; exit 1; }
overlay="$VIRTUAL_ENV/min-versions-$(sha256sum <<<"$pins" | cut -c1-12)"
if [ ! -f "$overlay/.complete" ]; then
    rm -rf "$overlay"
    # timm and safetensors alone (timm's own dependencies are torch & co.: the venv's stay); huggingface_hub with
    # its dependencies, which differ between its major versions (httpx for 1.x, httpx2 for 2.x)
    # shellcheck disable=SC2086
    python -m pip install -q --no-deps --target "$overlay" $(grep -v '^huggingface-hub' <<<"$pins") \
        2> >(grep -v '^WARNING: Location' >&2)
    python -m pip install -q --target "$overlay" "$(grep '^huggingface-hub' <<<"$pins")" \
        2> >(grep -v -e '^WARNING: Location' -e 'dependency resolver' -e ' requires ' >&2)
    touch "$overlay/.complete"
fi
export PYTHONPATH="$overlay${PYTHONPATH:+:$PYTHONPATH}"
# the versions actually imported, checked against the pins (a stale overlay or a path mix-up fails here)
python - "$pins" <<'PY'
import importlib.metadata as md, sys
from packaging.version import Version
pins = dict(line.split('==') for line in sys.argv[1].split())
used = {name: md.version(name) for name in pins}
print('minimum versions:', ', '.join(f'{k} {v}' for k, v in used.items()))
assert all(Version(used[k]) == Version(v) for k, v in pins.items()), f'overlay not in effect: {used} != {pins}'
PY
version_dependent=(tests/test_hub_*.py tests/test_hubconf.py tests/test_pin_weights.py tests/test_timm_weights.py
                   tests/test_transformers.py tests/test_train.py tests/test_main_job.py tests/test_autoload.py)
for arg in "$@"; do
    [[ "$arg" == tests* ]] && version_dependent=()  # the caller named tests
done
# transformers is left out (TIMM_SKNET_TESTS_WITHOUT, see tests/left_out.py): it needs a newer safetensors than the
# package does (5.23 requires safetensors>=0.8), so at the package's minimum it cannot even be imported.
export TIMM_SKNET_TESTS_WITHOUT=transformers
exec python -m pytest "$@" "${version_dependent[@]}"
