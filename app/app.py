"""The ZeroI2V demo, launched from a checkout: ``python app/app.py [CHECKPOINT_DIR] [--host H] [--port P]``.

The demo lives in the package (``zeroi2v.demo``), so ``pip install zeroi2v`` gives ``zeroi2v demo``; this
file is the thin launcher the design and the README show.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout without `pip install -e .`

from zeroi2v.demo import main  # noqa: E402

if __name__ == "__main__":
    main()
