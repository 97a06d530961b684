#!/usr/bin/env bash
# Source me after scripts/env.sh (or with a venv active): puts cffconvert, which validates CITATION.cff, on
# PYTHONPATH from a folder of its own beside the venv. cffconvert 2.0.0 needs jsonschema<4 and check-jsonschema
# (the workflows' validator, in the venv) needs >=4.18, so the two cannot share the venv; like
# scripts/test_min_versions.sh's overlay, pip installs it there once (seconds) and the folder is reused.
# Sets TIMM_SKNET_TOOLS to that folder; run it as `PYTHONPATH="$TIMM_SKNET_TOOLS" python -m cffconvert --validate`.
cffconvert_pin="cffconvert==2.0.0"
TIMM_SKNET_TOOLS="${VIRTUAL_ENV:?activate the environment first: source scripts/env.sh}/tools-${cffconvert_pin/==/-}"
if [ ! -f "$TIMM_SKNET_TOOLS/.complete" ]; then
    rm -rf "$TIMM_SKNET_TOOLS"
    python -m pip install -q --target "$TIMM_SKNET_TOOLS" "$cffconvert_pin" \
        2> >(grep -v -e '^WARNING: Location' -e 'dependency resolver' -e ' requires ' >&2)
    touch "$TIMM_SKNET_TOOLS/.complete"
fi
export TIMM_SKNET_TOOLS
