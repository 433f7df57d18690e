"""fairseq-train that kills itself (SIGKILL) at a chosen moment: a crash, reproducibly.

    python tests/helpers/killed_train.py update:18 ARGS...             right after update 18
    python tests/helpers/killed_train.py write:checkpoint_2_20.pt ARGS...  half-way through writing it
    python tests/helpers/killed_train.py copy:checkpoint_2_20.pt:checkpoint_last.pt ARGS...
                                                    half-way through copying the one to the other

A half-written file is what the kernel keeps of a process killed in the middle of a write.
"""
import io
import os
import shutil
import signal
import sys

import torch
from fairseq import trainer
from fairseq_cli import train


def _die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _half_then_die(data, f):
    f.write(data[: len(data) // 2])
    f.flush()
    _die()


def main():
    moment, sys.argv[1:] = sys.argv[1], sys.argv[2:]
    kind, _, what = moment.partition(":")
    if kind == "update":
        step = trainer.Trainer.train_step

        def train_step(self, *args, **kwargs):
            out = step(self, *args, **kwargs)
            if self.get_num_updates() == int(what):
                _die()
            return out

        trainer.Trainer.train_step = train_step
    elif kind == "write":
        save = torch.save

        def torch_save(obj, f, *args, **kwargs):
            if os.path.basename(getattr(f, "name", str(f))).startswith(what):
                buffer = io.BytesIO()
                save(obj, buffer, *args, **kwargs)
                _half_then_die(buffer.getvalue(), f)
            return save(obj, f, *args, **kwargs)

        torch.save = torch_save
    elif kind == "copy":
        copyfile = shutil.copyfile
        source, _, target = what.partition(":")

        def copy_file(src, dst, *args, **kwargs):
            # fairseq copies to checkpoint_last.pt; a safe copy may go through a temporary file
            if os.path.basename(src) == source and os.path.basename(dst).startswith(target):
                with open(src, "rb") as f, open(dst, "wb") as out:
                    _half_then_die(f.read(), out)
            return copyfile(src, dst, *args, **kwargs)

        shutil.copyfile = copy_file
    else:
        raise SystemExit(f"unknown moment {moment!r}: update:N, write:FILE or copy:FROM:TO")
    train.cli_main()


if __name__ == "__main__":
    main()
