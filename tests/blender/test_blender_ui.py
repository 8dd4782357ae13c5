"""The sidebar panels and preferences draw without errors for every job state, and every property,
operator and icon they name exists in this Blender (a recording layout checks each call against RNA)."""
import blender_env  # noqa: F401  (first: points Blender at a temporary user folder before bpy loads)
import sys
from pathlib import Path

import bpy
import pytest

from blender_env import PKG, add_voice, prefs

from blender_env import addon, scene  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.blender

ICONS = set(bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items.keys())


class OpProps:
    def __init__(self, idname):
        mod, name = idname.split(".")
        self.__dict__["_rna"] = getattr(getattr(bpy.ops, mod), name).get_rna_type()

    def __setattr__(self, key, value):
        assert key in self._rna.properties, f"operator {self._rna.identifier} has no property {key}"


class Layout:
    def __init__(self, log):
        self.log = log
        self.scale_y = 1.0

    def _child(self, *args, **kwargs):
        return Layout(self.log)

    row = column = box = split = _child

    def _icon(self, kwargs):
        assert kwargs.get("icon", "NONE") in ICONS, kwargs["icon"]

    def label(self, text="", **kwargs):
        self._icon(kwargs)
        self.log.append(text)

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, f"{data} has no property {name}"
        self._icon(kwargs)

    def prop_search(self, data, name, search_data, search_name, **kwargs):
        assert name in data.bl_rna.properties and search_name in search_data.bl_rna.properties, search_name

    def operator(self, idname, **kwargs):
        self._icon(kwargs)
        self.log.append("op:" + idname)
        return OpProps(idname)

    def progress(self, factor=0.0, type="BAR", text=""):
        assert 0.0 <= factor <= 1.0
        self.log.append(text)

    def menu(self, idname, **kwargs):
        assert hasattr(bpy.types, idname), idname
        self.log.append("menu:" + idname)

    def template_icon(self, icon_value=0, scale=1.0):
        self.log.append(f"icon:{icon_value}")


class FakePanel:
    def __init__(self):
        self.log = []
        self.layout = Layout(self.log)


def test_panels_and_preferences_draw(scene):
    sc = scene
    voice = add_voice(sc, length=12)
    sc.sequence_editor.active_strip = voice
    st = sc.stableavatar
    for i, status in enumerate(("PREPARING", "QUEUED", "RUNNING", "CANCELLING", "IMPORTED", "CANCELLED", "ERROR")):
        job = st.jobs.add()
        job.job_id, job.source, job.status = f"job{i}", "voice", status
        job.message, job.error_text = f"message {i}", "line one\n" + "x" * 200 if status == "ERROR" else ""
        job.preview, job.warning, job.take, job.seed = "/nonexistent/preview.jpg", "moved" if i == 4 else "", i, i
    drawn = []
    for still in ("FILE", "STRIP", "CAMERA"):
        for seeded, res in ((True, "512x512"), (False, "CUSTOM")):
            st.still_source, st.new_seed_per_take, st.resolution = still, seeded, res
            for cls in (bpy.types.STABLEAVATAR_PT_animate, bpy.types.STABLEAVATAR_PT_advanced,
                        bpy.types.STABLEAVATAR_PT_jobs, bpy.types.STABLEAVATAR_PT_takes):
                assert cls.poll(bpy.context)
                panel = FakePanel()
                cls.draw(panel, bpy.context)
                drawn += panel.log
    assert "op:stableavatar.animate" in drawn and "op:stableavatar.copy_error" in drawn
    assert "menu:STABLEAVATAR_MT_presets" in drawn and "op:stableavatar.preset_add" in drawn
    assert "warning: moved" in drawn and any(line.startswith("icon:") for line in drawn)  # the live preview
    assert "op:stableavatar.take_switch" in drawn and "op:stableavatar.take_delete" in drawn
    assert "op:stableavatar.cancel_job" in drawn and "op:stableavatar.retry_job" in drawn
    assert any("x" * 70 == line for line in drawn)  # long errors are wrapped, not cut
    preferences = sys.modules[PKG + ".preferences"]
    panel = FakePanel()
    preferences.draw_preferences(prefs(), panel.layout)
    assert "op:stableavatar.install_backend" in panel.log and "op:stableavatar.check_backend" in panel.log
    assert "op:stableavatar.open_install_log" in panel.log
    assert any("Data folder (kept when the extension is removed)" in line for line in panel.log)
    # the status bar shows the running job
    feedback = sys.modules[PKG + ".operators.feedback"]
    assert feedback.draw_status in bpy.types.STATUSBAR_HT_header._dyn_ui_initialize()
    st.jobs[2].fraction, st.jobs[2].phase = 0.4, "denoise"
    bar = FakePanel()
    feedback.draw_status(bar, bpy.context)
    assert "40% denoise" in bar.log and "Avatar: voice" in bar.log
    # the overlap dialog of Animate Avatar
    add_voice(sc, name="music", channel=2, start=1, trim_start=0, length=30)
    animate = sys.modules[PKG + ".operators.animate"]
    dialog = FakePanel()
    animate.STABLEAVATAR_OT_animate.draw(dialog, bpy.context)
    assert any("music" in line for line in dialog.log)


def test_image_strip_picker_offers_only_image_strips(scene):
    sc = scene
    add_voice(sc, length=12)
    from blender_env import MEDIA, compat
    compat.top_strips(sc.sequence_editor).new_image("portrait", str(MEDIA / "case-3-reference.png"), 4, 1)
    st = sc.stableavatar
    items = [i.identifier for i in st.bl_rna.properties["image_strip_pick"].enum_items] or None
    props = sys.modules[PKG + ".ui.props"]
    names = [i[0] for i in props._image_strip_items(st, bpy.context)]
    assert names == ["NONE", "portrait"], names  # the sound strip "voice" is not offered
    st.image_strip_pick = "portrait"
    assert st.image_strip == "portrait" and st.image_strip_pick == "portrait"
    del items


def test_presets_bundled_and_your_own(scene):
    sc = scene
    st = sc.stableavatar
    presets = sys.modules[PKG + ".ui.presets"]
    contract = sys.modules[PKG + ".blender_addon.contract"]
    final = str(Path(presets.BUNDLED) / "Final.py")
    st.steps = 3
    assert bpy.ops.script.execute_preset(filepath=final, menu_idname="STABLEAVATAR_MT_presets") == {"FINISHED"}
    assert st.steps == contract.PARAMS["steps"].default  # Final = the official step count
    st.steps, st.text_scale, st.resolution = 7, 4.5, "832x480"
    assert bpy.ops.stableavatar.preset_add(name="My Look") == {"FINISHED"}
    (mine,) = [f for p in bpy.utils.preset_paths(presets.SUBDIR) for f in Path(p).glob("My_Look.py")]
    st.steps, st.text_scale, st.resolution = 1, 1.0, "512x512"
    bpy.ops.script.execute_preset(filepath=str(mine), menu_idname="STABLEAVATAR_MT_presets")
    assert (st.steps, round(st.text_scale, 3), st.resolution) == (7, 4.5, "832x480")
