"""The suite runs from the repository root (``python -m pytest tests``): ``tests`` and its
helpers import as packages (``from tests.helpers import tiny_corpus``), the plugin from the
working tree."""
