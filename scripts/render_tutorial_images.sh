#!/usr/bin/env bash
# Regenerates the PNG heatmaps of the DocC tutorial "Chapter 3 in Swift" from
# `attention demo --svg` (rsvg-convert: Debian's librsvg2-bin).
# Usage: scripts/render_tutorial_images.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v rsvg-convert >/dev/null || { echo "needs rsvg-convert (apt-get install librsvg2-bin)" >&2; exit 1; }
svg="$(mktemp -d)"
swift run attention demo --svg "$svg" >/dev/null
out=Sources/Attention/Attention.docc/Resources
render() { rsvg-convert -o "$out/$2" "$svg"/$1-*.svg; echo "$out/$2"; }
render 04-02 chapter3-simple-weights.png       # softmax(x·xᵀ), §3.3.2
render 08-01 chapter3-trainable-weights.png    # SelfAttention_v1 weights, §3.4
render 09-01 chapter3-masked-scores.png        # −∞ above the diagonal, §3.5.1
render 09-02 chapter3-causal-weights.png       # causal weights, §3.5.1
render 12-01 chapter3-dropout-weights.png      # dropout on the causal weights, §3.5.2
render 15-02 chapter3-multihead-head0.png      # MultiHeadAttention head 0, §3.6.2
render 16-02 chapter3-minilm-head1.png         # MiniLM layer 0 head 1 ([CLS])
render 16-03 chapter3-minilm-head2.png         # MiniLM layer 0 head 2 (previous token)
rm -rf "$svg"
