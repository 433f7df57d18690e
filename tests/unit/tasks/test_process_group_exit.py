"""fairseq_changes.destroy_process_group_at_exit: a process that initialized torch.distributed
(gloo) has its group destroyed by the time the interpreter exits, once however often it is
asked, and nothing is registered where torch.distributed is not initialized."""
import subprocess
import sys

from tests.helpers import ROOT

SCRIPT = """
import atexit, sys
import torch.distributed as dist
# registered first, so it runs last (atexit is LIFO): what the interpreter's exit would meet
atexit.register(lambda: print("initialized at exit:", dist.is_initialized(), flush=True))
from fairseq_gradvac.tasks import fairseq_changes
print("before init:", fairseq_changes.destroy_process_group_at_exit(), flush=True)
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
print("after init:", fairseq_changes.destroy_process_group_at_exit(), fairseq_changes.destroy_process_group_at_exit(),
      flush=True)
"""


def test_the_process_group_is_destroyed_before_the_interpreter_exits(tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "store")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-3:] == ["before init: False", "after init: True False", "initialized at exit: False"]
