# Sourced by run.sh and test.sh: create .venv if needed, (re)install the project when
# pyproject.toml changed since the last install, and activate it.
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv with $python" >&2
    "$python" -m venv .venv
fi
stamp=.venv/.facegen-pyproject.sha256
if [ "$(cat "$stamp" 2>/dev/null)" != "$(sha256sum pyproject.toml)" ]; then
    echo "installing facegen and its dependencies into .venv (first run: several minutes)" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
    sha256sum pyproject.toml > "$stamp"
fi
# shellcheck disable=SC1091
source .venv/bin/activate
