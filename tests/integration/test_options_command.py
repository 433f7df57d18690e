"""python -m fairseq_gradvac --help lists every option the task adds to fairseq-train's
parser, with its default."""
import subprocess
import sys

from fairseq import options

import fairseq_gradvac  # noqa: F401  (registers the task)
from tests.helpers.fairseq_runs import ROOT, USER_DIR


def test_the_options_command_lists_every_option_of_the_task():
    proc = subprocess.run([sys.executable, "-m", "fairseq_gradvac", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the options fairseq-train's own parser gets from the task (those it does not get from
    # the translation task with the same model): all of them, with their defaults
    def parsed(*task):
        parser = options.get_training_parser()
        options.parse_args_and_arch(parser, ["data", "--user-dir", USER_DIR, "--arch", "transformer", *task])
        return parser

    before = {o for a in parsed("--task", "translation")._actions for o in a.option_strings}
    added = [a for a in parsed("--task", "multilingual_gradvac", "--lang-pairs", "en-fr")._actions
             if a.option_strings and not set(a.option_strings) & before]
    assert len(added) > 20, [a.option_strings for a in added]
    for action in added:
        for option in action.option_strings:
            assert option in proc.stdout, option
    for option, default in (("--gradient-combiner", "gradvac"), ("--combine-granularity", "all_layer"),
                            ("--gradvac-beta", "0.01"), ("--direction-batching", "auto"),
                            ("--similarity-interval", "0"), ("--sampling-method", "concat")):
        entry = proc.stdout[proc.stdout.index(f"\n  {option} "):]  # its help entry, up to the next
        entry = " ".join(entry.split("\n  -", 2)[1].split())
        assert f"(default: {default})" in entry, entry
