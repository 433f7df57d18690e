"""atomic_write: the file is whole or the previous one, whatever stops the writer."""
import gzip

import pytest

from fairseq_gradvac.tasks.files import atomic_write


def test_a_failed_write_leaves_the_previous_file_and_a_finished_one_replaces_it(tmp_path):
    path = str(tmp_path / "table.csv")
    with atomic_write(path) as f:
        f.write("old\n")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write("half of the new")
            raise RuntimeError("killed")
    assert open(path).read() == "old\n"
    with atomic_write(path, newline="") as f:
        f.write("new\n")
    assert open(path).read() == "new\n"
    with atomic_write(path + ".gz", "wb", opener=gzip.open) as f:
        f.write(b"z")
    assert gzip.open(path + ".gz").read() == b"z"
