"""The package as a user installs it: a wheel built from the tree holds every package of the tree
(pyproject's list follows the layout), and installed in a fresh virtual environment its
`adapt-distill` command runs from the wheel, not from this checkout."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("app", "core", "db", "worker")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # the build backend of this environment: no download, no build isolation
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(out)], cwd=ROOT, check=True, capture_output=True, text=True, timeout=300)
    (found,) = out.glob("adapt_distill-*.whl")
    return found


def test_the_wheel_holds_every_package_of_the_tree(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    packages = {str(init.parent.relative_to(ROOT)) for top in OURS for init in (ROOT / top).rglob("__init__.py")}
    modules = {str(p.relative_to(ROOT)) for top in OURS for p in (ROOT / top).rglob("*.py")
               if "__pycache__" not in p.parts}
    assert packages and all(f"{package}/__init__.py" in names for package in packages)
    assert modules - names == set()


def test_the_installed_command_runs_from_the_wheel(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # the dependencies come from this environment's site-packages, read as a plain path entry: its
    # .pth files (this checkout's editable install among them) are not run
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    command = venv / "bin" / "adapt-distill"
    for args in (["--help"], ["demo", "--help"]):
        result = subprocess.run([str(command), *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "usage: adapt-distill" in result.stdout
    where = subprocess.run([str(python), "-c", "import app, core, db, worker; "
                            "print('\\n'.join(m.__file__ for m in (app, core, db, worker)))"],
                           capture_output=True, text=True, cwd=tmp_path, check=True).stdout.split()
    assert all(Path(path).is_relative_to(site) for path in where), where
