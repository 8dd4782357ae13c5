"""The add-on's bpy-free parts of issue-free production use: where things live, the installer's plan and
progress, the row texts for a backend that cannot start or differs in version, hints in the panel's words."""
import json
import subprocess
import sys
from types import SimpleNamespace

from conftest import REPO

sys.path.insert(0, str(REPO))
from blender_addon import contract, install, install_progress, jobs, locations, rows  # noqa: E402


def test_data_folder_is_outside_blender_and_per_platform(tmp_path):
    assert locations.data_home({"STABLEAVATAR_HOME": str(tmp_path)}) == str(tmp_path)
    assert locations.data_home({"XDG_DATA_HOME": "/x"}, "linux") == "/x/stableavatar"
    assert locations.data_home({"LOCALAPPDATA": "C:/L"}, "win32").endswith("StableAvatar")
    assert "Application Support" in locations.data_home({}, "darwin")
    env = {"STABLEAVATAR_HOME": str(tmp_path)}
    assert locations.within(locations.checkpoints_dir(env), str(tmp_path))
    assert not locations.within(str(tmp_path / "a-b"), str(tmp_path / "a"))


def test_progress_from_uv_lines_never_goes_back_and_keeps_the_reason():
    p = install_progress.Progress()
    p.step("installing")
    seen = []
    for line in ("Resolved 72 packages in 648ms", "Downloading scipy (33.7MiB)", "Downloading numpy (16.1MiB)",
                 " Downloaded numpy", " Downloaded scipy", "Prepared 72 packages in 7.89s",
                 "Installed 72 packages in 340ms"):
        p.feed(line)
        seen.append((p.phase, p.package, p.fraction))
    assert [f for *_, f in seen] == sorted(f for *_, f in seen)
    assert seen[1][:2] == ("downloading", "scipy") and seen[3][1] == "numpy"
    assert 0.15 < seen[3][2] < seen[4][2] <= 0.85  # numpy's 16 MiB of 50 MiB, then all downloads
    assert p.as_dict() == {"phase": "installing", "package": "", "percent": 97.0}
    p = install_progress.Progress()
    p.feed("  × No solution found when resolving dependencies:")
    p.feed("  ╰─▶ Because torch==9.9 was not found in the package registry, your requirements are unsatisfiable.")
    assert "No solution found" in p.reason() and "torch==9.9" in p.reason()


def test_install_plan_uses_the_wheel_uv_and_a_new_env(tmp_path):
    plan = install.plan("/py", str(tmp_path / "backend"), "/ext/backend_wheel/w.whl", "auto", "--find-links /w")
    argvs = [s["argv"] for s in plan["steps"]]
    assert argvs[0][-1] == install.UV_REQUIREMENT  # uv itself comes first, from PyPI
    assert argvs[2][:2] == [install.uv_path(str(tmp_path / "backend" / "tools")), "pip"]
    assert ["--torch-backend", "auto"] == argvs[2][5:7] and argvs[2][-3:] == ["/ext/backend_wheel/w.whl",
                                                                             "--find-links", "/w"]
    assert plan["env"].startswith(str(tmp_path / "backend" / "envs")) and plan["steps"][-1]["verify"]
    assert "--torch-backend" not in install.plan("/py", "/b", "/w.whl", "pypi")["steps"][2]["argv"]
    assert install.current_env(str(tmp_path / "backend")) == ""
    assert any("macOS" in line and "CPU" in line for line in install.install_what("darwin"))
    assert install.extension_version(str(REPO)) == "0.1.0"


def test_installer_reports_a_failing_step_in_its_own_words(tmp_path):
    """The installer process itself, on a plan whose step fails: `failed` with the tool's reason, nothing kept."""
    plan = {"steps": [{"phase": "installing", "argv": [sys.executable, "-c",
                                                        "print('error: File not found: `/no.txt`'); raise SystemExit(2)"]}],
            "env": str(tmp_path / "envs" / "new"), "backend_dir": str(tmp_path), "log": str(tmp_path / "install.log")}
    (tmp_path / "envs" / "new").mkdir(parents=True)
    path = install.write_plan(plan, str(tmp_path / "plan.json"))
    out = subprocess.run([sys.executable, str(REPO / "blender_addon" / "installer.py"), path], capture_output=True,
                         text=True, timeout=60, input="")
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert out.returncode in (1, 130), out.stderr
    assert events[-1]["type"] in ("failed", "cancelled")  # stdin closed at once: either answer is correct
    if events[-1]["type"] == "failed":
        assert "File not found" in events[-1]["reason"]
    assert not (tmp_path / "envs" / "new").exists() and not (tmp_path / "current").exists()


def test_rows_say_when_to_update_and_what_the_engine_error_is():
    ready = {"versions": {"stableavatar": "0.1.0"}, "weights": {"found": True, "path": "/w"}, "device": "cuda",
             "engine_error": {"category": "bad_input", "message": "--device cuda was requested but no CUDA GPU",
                              "hint": "use cpu"}}
    text = rows.format_ready(ready, "0.2.0")
    assert "ENGINE ERROR" in text and "not loaded" in text and "weights load" not in text
    assert "press Update Backend" in text and rows.version_mismatch(ready, "0.1.0") is None


def test_hints_name_the_panel_not_the_command_line():
    row = SimpleNamespace(status="", message="", error_text="")
    rows.set_error(row, "bad_input: audio is silent", hint="check the strip, or allow silent audio (--allow-silent)")
    assert "'Allow silent audio' in the Avatar panel" in row.error_text and "--allow-silent" not in row.error_text
    assert contract.PARAMS["allow_silent"].panel


def test_placement_follows_its_source():
    pl = jobs.Placement(scene="S", source="v", frame_start=10, channel_above=1, n_scene_frames=12, fps=25,
                        fps_base=1.0, source_id="t", source_left=10, source_right=22)
    moved, warning = pl.follow(50, 62)
    assert (moved.frame_start, moved.source_left, warning) == (50, 50, "")
    _, warning = pl.follow(50, 60)
    assert "changed length" in warning
