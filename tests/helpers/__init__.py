"""What the tests share: the repository root, tolerances, the tiny corpus, fairseq runs."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
