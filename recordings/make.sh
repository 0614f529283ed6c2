#!/usr/bin/env bash
# Regenerates every bundled recording; each line is the command in manifest.json.
set -euo pipefail
cd "$(dirname "$0")"
monitor simulate posterior-leak --seed 11 --scenario posterior --size 384 --frames 48 --fps 7.5 --bits 8 --intensity LOG
monitor simulate no-leak --seed 12 --scenario none --side bipedicular --level T12 --size 384 --frames 48 --fps 7.5 --bits 8 --intensity LOG --photometric MONOCHROME1
monitor simulate venous-leak --seed 13 --scenario venous --level L3 --size 384 --frames 48 --fps 7.5 --bits 8 --field round --fracture biconcave
