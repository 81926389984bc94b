import os
import sys
import tempfile

# A fresh compile cache per run: inductor's on-disk cache does not key on a custom
# op's fake implementation, so a stale entry from an older build could be replayed.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="aploss-inductor-"))

# tests/helpers.py is imported as a plain module.
sys.path.insert(0, os.path.dirname(__file__))
