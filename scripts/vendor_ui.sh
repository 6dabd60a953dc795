#!/usr/bin/env bash
# Re-fetch the web UI's vendored JavaScript from the npm registry at a pinned version and
# check every file against its pinned sha256 (a changed file fails; nothing is copied then).
# Usage: bash scripts/vendor_ui.sh          (needs npm; writes mlvc/server/ui/static/vendor/)
set -euo pipefail
cd "$(dirname "$0")/.."

UPLOT_VERSION=1.6.32
UPLOT_TGZ_SHA256=4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d
declare -A UPLOT_FILES=(
  [dist/uPlot.esm.js]=5dd9b3281aa64b461b42d9945f6adb2649d346502b12281a9ae0d46599a80eba
  [dist/uPlot.min.css]=df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04
  [LICENSE]=8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd
)
DEST=mlvc/server/ui/static/vendor

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "uplot@${UPLOT_VERSION}" >/dev/null)
tgz="$work/uplot-${UPLOT_VERSION}.tgz"
echo "${UPLOT_TGZ_SHA256}  ${tgz}" | sha256sum --check --quiet
tar -xzf "$tgz" -C "$work"
for f in "${!UPLOT_FILES[@]}"; do
  echo "${UPLOT_FILES[$f]}  $work/package/$f" | sha256sum --check --quiet
done
mkdir -p "$DEST"
cp "$work/package/dist/uPlot.esm.js" "$DEST/uPlot.esm.js"
cp "$work/package/dist/uPlot.min.css" "$DEST/uPlot.min.css"
cp "$work/package/LICENSE" "$DEST/uPlot.LICENSE"
echo "vendored uPlot ${UPLOT_VERSION} into ${DEST} (sha256 checked)"
