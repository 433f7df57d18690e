"""Make the repository root and this folder importable without installing the package."""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
for path in (os.path.dirname(_HERE), _HERE):
    if path not in sys.path:
        sys.path.insert(0, path)
