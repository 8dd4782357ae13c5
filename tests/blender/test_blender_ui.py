"""The sidebar panels and preferences draw without errors for every job state, and every property,
operator and icon they name exists in this Blender (a recording layout checks each call against RNA)."""
import blender_env  # noqa: F401  (first: points Blender at a temporary user folder before bpy loads)
import sys

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
    drawn = []
    for still in ("FILE", "STRIP", "CAMERA"):
        for preset, res in (("DRAFT", "512x512"), ("CUSTOM", "CUSTOM")):
            st.still_source, st.preset, st.resolution = still, preset, res
            for cls in (bpy.types.STABLEAVATAR_PT_animate, bpy.types.STABLEAVATAR_PT_advanced,
                        bpy.types.STABLEAVATAR_PT_jobs):
                assert cls.poll(bpy.context)
                panel = FakePanel()
                cls.draw(panel, bpy.context)
                drawn += panel.log
    assert "op:stableavatar.animate" in drawn and "op:stableavatar.copy_error" in drawn
    assert "op:stableavatar.cancel_job" in drawn and "op:stableavatar.retry_job" in drawn
    assert any("x" * 70 == line for line in drawn)  # long errors are wrapped, not cut
    preferences = sys.modules[PKG + ".preferences"]
    panel = FakePanel()
    preferences.draw_preferences(prefs(), panel.layout)
    assert "op:stableavatar.install_backend" in panel.log and "op:stableavatar.check_backend" in panel.log
    # the overlap dialog of Animate Avatar
    add_voice(sc, name="music", channel=2, start=1, trim_start=0, length=30)
    animate = sys.modules[PKG + ".operators.animate"]
    dialog = FakePanel()
    animate.STABLEAVATAR_OT_animate.draw(dialog, bpy.context)
    assert any("music" in line for line in dialog.log)
