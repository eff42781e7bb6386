"""Print or (re)write the golden-loss files of registered models (tests/modules/golden/<name>.json).

A golden file pins a model's numerics: a few seeded training steps in a tiny fixed setting
(tests/modules/model_zoo.py). Write one when a model is added, or on purpose when its mathematics changes (say so
in the commit); a refactor must reproduce it.

  .venv/bin/python scripts/golden_losses.py                 # every model: current vs golden
  .venv/bin/python scripts/golden_losses.py --write gru4rec  # (re)write one model's file
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.modules import model_zoo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="model names (default: every registered retrieval model)")
    parser.add_argument("--write", action="store_true", help="write the golden files instead of comparing")
    args = parser.parse_args()
    for name in args.models or model_zoo.retrieval_models():
        if args.write:
            print(f"wrote {model_zoo.write_golden(name)}")
            continue
        path = model_zoo.golden_path(name)
        golden = json.loads(path.read_text())["losses"] if path.is_file() else None
        print(f"{name}: now {model_zoo.train_losses(name)}\n{'':{len(name)}}  golden {golden}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
