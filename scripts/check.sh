#!/usr/bin/env bash
# Sets up the environment (scripts/env.sh) and runs the project's checks: the tests marked `checks` (pyproject.toml),
# by group. With no group, all of them. Extra arguments after a `--` go to pytest.
#   lint     ruff, import-linter, function lengths, a light `import timm_sknet`   tests/test_code_shape.py
#   types    mypy on timm_sknet                                                  tests/test_typing.py
#   docs     mkdocs build --strict                                               tests/test_docs.py
#   dist     sdist + wheel, twine check --strict, their metadata, py.typed       tests/test_distribution.py
#   project  workflows (schema, zizmor), CITATION.cff, pre-commit config, Python versions   tests/test_project_files.py
# .ci/run and CI run these, then the rest of the suite with -m "not checks", so nothing runs twice; the pre-commit
# hooks run lint and types.
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A files=([lint]=tests/test_code_shape.py [types]=tests/test_typing.py [docs]=tests/test_docs.py
                  [dist]=tests/test_distribution.py [project]=tests/test_project_files.py)
groups=() paths=() extra=()
while [ $# -gt 0 ]; do
    if [ "$1" = -- ]; then shift; extra=("$@"); break; fi
    groups+=("$1"); shift
done
[ ${#groups[@]} -gt 0 ] || groups=(lint types docs dist project)
for group in "${groups[@]}"; do
    [ -n "${files[$group]:-}" ] || { echo "scripts/check.sh: no check '$group'; choose from lint types docs dist project" >&2; exit 2; }
    paths+=("${files[$group]}")
done
source scripts/env.sh
exec python -m pytest -q -m checks "${paths[@]}" "${extra[@]}"
