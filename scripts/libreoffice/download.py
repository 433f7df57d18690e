"""Step 1: fetch the Debian packages with apt-get download and unpack them with dpkg-deb -x
(nothing is installed), cached."""
import logging
import os
import subprocess
from pathlib import Path

from .languages import package_name

log = logging.getLogger("prepare_libreoffice")


def fetch_packages(cache_dir, langs, l10n_langs):
    """apt-get download + dpkg-deb -x into cache_dir/root (cached); returns the root."""
    cache_dir = Path(cache_dir).resolve()
    deb_dir = cache_dir / "debs"
    root = cache_dir / "root"
    deb_dir.mkdir(parents=True, exist_ok=True)
    wanted = ["libreoffice-help-%s" % package_name(l) for l in ["en"] + langs]
    wanted += ["libreoffice-l10n-%s" % package_name(l) for l in l10n_langs]
    debs = []
    for pkg in wanted:
        found = sorted(deb_dir.glob(pkg + "_*.deb"))
        if not found:
            log.info("apt-get download %s", pkg)
            cmd = ["apt-get", "download", pkg]
            r = subprocess.run(cmd, cwd=deb_dir, capture_output=True, text=True)
            if r.returncode != 0 and os.geteuid() == 0:
                log.info("apt-get download failed (%s); running apt-get update", r.stderr.strip())
                subprocess.run(["apt-get", "update"], check=True, capture_output=True)
                r = subprocess.run(cmd, cwd=deb_dir, capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit("apt-get download %s failed:\n%s\n(run `apt-get update`, or "
                                 "use --packages-dir)" % (pkg, r.stderr))
            found = sorted(deb_dir.glob(pkg + "_*.deb"))
        debs.append(found[-1])
    for deb in debs:
        stamp = root / ".extracted" / deb.name
        if not stamp.exists():
            log.info("dpkg-deb -x %s", deb.name)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.touch()
    return root, [d.name for d in debs]
