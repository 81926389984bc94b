import os
import sys

# tests/helpers.py is imported as a plain module.
sys.path.insert(0, os.path.dirname(__file__))
