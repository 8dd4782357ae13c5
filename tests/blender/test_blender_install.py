"""Install Backend for real: the wheel shipped in the extension, uv, a new environment in the data folder, live
progress, the previous setting kept until the new one works; Cancel, a failure's own reason, and the installer
ending with Blender. PyPI serves everything but torch, which comes from this machine's local wheel (the same
pin as the Makefile's constraints/cpu.txt), through --find-links and a constraint: the override any studio
with a mirror uses."""
import blender_env  # noqa: F401  (first: points Blender at a temporary user folder before bpy loads)
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import bpy
import pytest

from blender_env import BACKEND_PYTHON, CHECKPOINTS, PKG, ROOT, prefs, runtime, wait_for

from blender_env import addon  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.blender


def _local_torch_links() -> str | None:
    """Where pip on this machine finds the local torch wheel (its find-links), if it has one."""
    out = subprocess.run([BACKEND_PYTHON, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    for m in re.finditer(r"find-links='([^']+)'", out):
        for d in m.group(1).split():
            if list(Path(d).glob("torch-2.13.0*-cp311-*.whl")):
                return d
    return None


LINKS = _local_torch_links()
if sys.version_info[:2] != (3, 11) or bpy.app.version[:2] != (5, 0) or LINKS is None:
    pytest.skip("the real install runs once, on Blender 5.0 (Python 3.11, as this machine's local torch wheel)",
                allow_module_level=True)


def _mod(name):
    return sys.modules[f"{PKG}.{name}"]


@pytest.fixture(scope="module")
def wheel():
    install = _mod("blender_addon.install")
    if install.bundled_wheel(str(ROOT)) is None:  # `make test` builds it; a bare checkout builds it here
        subprocess.run([BACKEND_PYTHON, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                        str(ROOT / install.WHEEL_DIR), str(ROOT)], check=True)
    return install.bundled_wheel(str(ROOT))


@pytest.fixture
def online(addon, tmp_path):
    bpy.context.preferences.system.use_online_access = True
    constraints = tmp_path / "constraints.txt"
    pins = (ROOT / "constraints" / "cpu.txt").read_text().replace("torch==2.13.0", "torch==2.13.0+cpu")
    constraints.write_text(pins)
    p = prefs()
    p.python, p.checkpoints, p.device = BACKEND_PYTHON, str(CHECKPOINTS), "cpu"
    p.torch_backend = "pypi"
    p.install_args = f"--find-links {LINKS} --constraint {constraints}"
    yield p
    bpy.context.preferences.system.use_online_access = False
    p.install_args = ""
    runtime().stop_backend(settle=False)


def _drive(ops, until, timeout=900):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ops.poll()
        st = ops.STATE
        seen.append((st["phase"], st["package"], st["percent"]))
        if until(st):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"install did not finish: {ops.STATE['phase']} {ops.STATE['error']}")


def test_install_for_real_then_update_keeps_the_working_env(online, wheel):
    ops, locations = _mod("operators.install_ops"), _mod("blender_addon.locations")
    install = _mod("blender_addon.install")
    backend = locations.backend_dir()
    t0 = time.monotonic()
    assert bpy.ops.stableavatar.install_backend() == {"FINISHED"}
    assert online.python == BACKEND_PYTHON  # the working setting stays while the new environment is built
    seen = _drive(ops, lambda st: st["phase"] in ("done", "failed", "cancelled"))
    seconds = time.monotonic() - t0
    assert ops.STATE["phase"] == "done", ops.STATE["error"] + "\n" + Path(ops.STATE["log"]).read_text()[-3000:]
    percents = [p for _, _, p in seen]
    assert percents == sorted(percents) and len(set(percents)) >= 4, percents  # live, never backwards
    phases = {ph for ph, _, _ in seen}
    assert {"getting uv", "downloading", "installing"} <= phases, phases
    assert any(pkg for _, pkg, _ in seen), "no package names in the progress"
    env = install.current_env(backend)
    assert env and locations.within(env, locations.data_home()) and online.python == ""
    assert "torch 2.13.0+cpu" in ops.STATE["result"] and "stableavatar 0.1.0" in ops.STATE["result"]
    cache = Path(locations.data_home()) / "cache" / "uv"
    size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file() and not f.is_symlink())
    units = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    announced = sum(float(n) * units[u] for n, u in re.findall(r"Downloading \S+ \(([\d.]+)(KiB|MiB|GiB)\)",
                                                                  Path(ops.STATE["log"]).read_text()))
    print(f"\nINSTALL: {seconds:.1f} s; downloaded from PyPI (uv's announced downloads) {announced / 2**20:.0f} MiB; "
          f"uv cache {size / 2**20:.0f} MiB (unpacked, incl. the local torch wheel); env {env}")
    # the new environment is what the backend runs from now, and it works
    rt = runtime()
    assert rt.backend_python() == install.venv_python(env)
    assert bpy.ops.stableavatar.check_backend() == {"FINISHED"}
    wait_for(lambda: rt.SESSION.info is not None, 300, "the installed backend's ready")
    report = online.backend_report
    assert "weights load from" in report and "stableavatar 0.1.0" in report and "torch 2.13.0+cpu" in report, report
    rt.stop_backend(settle=False)

    # a failing install says why, in uv's words, and changes nothing
    online.install_args += " --constraint /no/such/constraints.txt"
    assert bpy.ops.stableavatar.install_backend() == {"FINISHED"}
    _drive(ops, lambda st: st["phase"] in ("done", "failed", "cancelled"))
    assert ops.STATE["phase"] == "failed" and "/no/such/constraints.txt" in ops.STATE["error"], ops.STATE["error"]
    assert install.current_env(backend) == env and online.python == ""
    assert len(os.listdir(os.path.join(backend, "envs"))) == 1  # the unfinished environment is gone
    assert bpy.ops.stableavatar.open_install_log.poll()

    # Cancel: the environment in use stays
    online.install_args = online.install_args.replace(" --constraint /no/such/constraints.txt", "")
    assert bpy.ops.stableavatar.install_backend() == {"FINISHED"}
    assert bpy.ops.stableavatar.cancel_install() == {"FINISHED"}
    _drive(ops, lambda st: st["phase"] in ("done", "failed", "cancelled"), 120)
    assert ops.STATE["phase"] == "cancelled", ops.STATE
    assert install.current_env(backend) == env and os.listdir(os.path.join(backend, "envs")) == [Path(env).name]

    # Blender quits during an install: the installer and its uv go with it
    assert bpy.ops.stableavatar.install_backend() == {"FINISHED"}
    _drive(ops, lambda st: st["phase"] in ("resolving", "downloading", "unpacking", "installing"), 120)
    proc = ops.STATE["proc"]
    ops.stop_installer()  # what atexit and unregister call
    assert proc.poll() is not None
    children = subprocess.run(["pgrep", "-f", os.path.join(backend, "envs")], capture_output=True, text=True).stdout
    assert children.strip() == "", children
    _drive(ops, lambda st: st["phase"] in ("failed", "cancelled"), 30)
    assert install.current_env(backend) == env
