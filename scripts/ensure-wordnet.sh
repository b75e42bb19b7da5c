#!/usr/bin/env bash
# METEOR (tuneforge.evaluation.text_metrics) needs WordNet 3.0 for nltk. Debian's wordnet-base and
# wordnet-sense-index put it in /usr/share/wordnet; this copies it (nltk refuses symlinks and hardlinks that leave
# its data folder) into <venv>/share/nltk_data/corpora/wordnet, which nltk searches through sys.prefix, and writes
# the lexnames file Debian does not ship. Usage: scripts/ensure-wordnet.sh [venv folder, default .venv]
set -euo pipefail
VENV="${1:-.venv}"
SRC="${WORDNET_SRC:-/usr/share/wordnet}"  # overridable for testing this script
DEST="$VENV/share/nltk_data/corpora/wordnet"
FILES="index.noun index.verb index.adj index.adv data.noun data.verb data.adj data.adv
       noun.exc verb.exc adj.exc adv.exc index.sense"

unavailable() {
  if [ "${CI:-}" = "true" ]; then
    echo "ensure-wordnet: $1 (CI needs WordNet for METEOR: apt-get install wordnet-base wordnet-sense-index)" >&2
    exit 1
  fi
  echo "warning: $1; METEOR will be reported as unavailable" >&2
  exit 0
}

has_files() {  # $1: folder; every file present and non-empty
  local f
  for f in $FILES; do [ -s "$1/$f" ] || return 1; done
}
copied() {  # the copy is complete and made of plain files, not links
  local f
  for f in $FILES lexnames; do [ -s "$DEST/$f" ] && [ ! -L "$DEST/$f" ] || return 1; done
}

if copied; then exit 0; fi

if ! has_files "$SRC"; then
  command -v apt-get >/dev/null || unavailable "WordNet is not in $SRC and apt-get is missing"
  if [ "$(id -u)" = 0 ]; then SUDO=""
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"
  else unavailable "WordNet is not in $SRC and this user cannot install it"
  fi
  echo "installing WordNet 3.0 (Debian packages wordnet-base, wordnet-sense-index) for METEOR"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  $SUDO apt-get install -y -qq --no-install-recommends wordnet-base wordnet-sense-index >/dev/null \
    || unavailable "apt-get could not install wordnet-base wordnet-sense-index"
fi
has_files "$SRC" || unavailable "WordNet files are missing from $SRC after installing it"

mkdir -p "$DEST"
for f in $FILES; do cp --remove-destination "$SRC/$f" "$DEST/$f"; done  # cp follows links in $SRC: real copies
[ -s "$SRC/cntlist.rev" ] && cp --remove-destination "$SRC/cntlist.rev" "$DEST/"  # lemma counts (optional)
# WordNet 3.0 lexicographer files: number, name, part of speech (1 noun, 2 verb, 3 adjective, 4 adverb).
# Written last: its presence marks a complete copy.
{
  n=0
  for name in adj.all:3 adj.pert:3 adv.all:4 noun.Tops:1 \
      noun.{act,animal,artifact,attribute,body,cognition,communication,event,feeling,food,group,location,motive}:1 \
      noun.{object,person,phenomenon,plant,possession,process,quantity,relation,shape,state,substance,time}:1 \
      verb.{body,change,cognition,communication,competition,consumption,contact,creation,emotion,motion}:2 \
      verb.{perception,possession,social,stative,weather}:2 adj.ppl:3; do
    printf '%02d\t%s\t%s\n' "$n" "${name%:*}" "${name##*:}"
    n=$((n + 1))
  done
} > "$DEST/lexnames.tmp"
mv -f "$DEST/lexnames.tmp" "$DEST/lexnames"

if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c "from nltk.corpus import wordnet; assert wordnet.synsets('dog')" \
    >/dev/null 2>&1; then
  rm -f "$DEST/lexnames"
  unavailable "nltk cannot read the WordNet copied to $DEST"
fi
echo "WordNet 3.0 ready for nltk in $DEST"
