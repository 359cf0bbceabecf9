#!/usr/bin/env bash
# Lints the delivery pipeline: the Dockerfile with hadolint (settings in .hadolint.yaml) and the
# GitHub workflows with actionlint, which runs shellcheck on every `run:` block, and with yamllint
# (.yamllint, strict). Exits non-zero on any finding. The tools come from scripts/install-tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="$(bash scripts/install-tools.sh --print-bin)"
for tool in hadolint actionlint shellcheck yamllint; do
    if [ ! -x "$bin/$tool" ]; then
        echo "$tool is missing from $bin: run bash scripts/install-tools.sh" >&2
        exit 1
    fi
done

failed=0

echo "== hadolint $("$bin/hadolint" --version | awk '{print $NF}'): Dockerfile (.hadolint.yaml)"
if "$bin/hadolint" --no-color --config .hadolint.yaml Dockerfile; then
    echo "ok"
else
    failed=1
fi

workflows=(.github/workflows/*.yml)
echo "== actionlint $("$bin/actionlint" -version | head -n 1 | awk '{print $NF}')" \
    "with shellcheck $("$bin/shellcheck" --version | awk '/^version:/ {print $2}'):" \
    "${workflows[*]}"
# actionlint skips shellcheck silently when it cannot find it: the check above makes sure it is
# there, and the explicit path makes sure actionlint runs that one.
if "$bin/actionlint" -no-color -shellcheck "$bin/shellcheck" -pyflakes= "${workflows[@]}"; then
    echo "ok"
else
    failed=1
fi

echo "== yamllint $("$bin/yamllint" --version | awk '{print $NF}') (.yamllint, strict): .github/workflows"
if "$bin/yamllint" --strict --config-file .yamllint .github/workflows; then
    echo "ok"
else
    failed=1
fi

exit "$failed"
