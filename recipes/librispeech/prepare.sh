#!/usr/bin/env bash
# Write one manifest per LibriSpeech split found in a local copy.
#
#   recipes/librispeech/prepare.sh /path/to/LibriSpeech [OUT_DIR] [SPLIT ...]
#
# OUT_DIR defaults to data/librispeech; SPLITs default to every standard split present
# under the LibriSpeech directory. PYTHON picks the interpreter (default: .venv/bin/python
# if there is one, else python3). Extra options for `asr data prepare` go in PREPARE_ARGS,
# e.g. PREPARE_ARGS="--max-items 1000 --quiet".
set -euo pipefail

if [ $# -lt 1 ]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
root=$1
out_dir=${2:-data/librispeech}
shift $(( $# >= 2 ? 2 : 1 ))

STANDARD_SPLITS="dev-clean dev-other test-clean test-other train-clean-100 train-clean-360 train-other-500"
if [ $# -gt 0 ]; then
    splits="$*"
else
    splits=""
    for split in $STANDARD_SPLITS; do
        [ -d "$root/$split" ] && splits="$splits $split"
    done
fi
if [ -z "${splits// /}" ]; then
    echo "prepare.sh: no LibriSpeech split directories ($STANDARD_SPLITS) under $root" >&2
    exit 1
fi

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

# Training splits: utterances longer than the 30 s model window cannot be trained on
# as they are, so any are listed and dropped (--skip-bad). Dev/test splits are kept
# whole (no length limit, and any problem stops the run), so that WER stays comparable
# with published LibriSpeech results; long utterances are for the decoder to handle.
for split in $splits; do
    case $split in
        dev-*|test-*) options="--max-duration 0" ;;
        *) options="--skip-bad" ;;
    esac
    # shellcheck disable=SC2086  # options and PREPARE_ARGS are lists of options
    "$PYTHON" -m asr data prepare "$root/$split" "$out_dir/$split.jsonl" $options ${PREPARE_ARGS:-}
done
