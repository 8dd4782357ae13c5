"""The preferences' Install Backend box (progress, Cancel, the failure reason, Open Log, Update Backend) and
where the extension keeps what outlives it."""
from ..blender_addon import install, locations
from ..blender_addon.install_state import STATE, running
from .layout import multiline, progress


def draw_locations(layout):
    col = layout.column(align=True)
    col.scale_y = 0.8
    col.label(text=f"Data folder (kept when the extension is removed): {locations.data_home()}", icon="FILE_FOLDER")
    col.label(text=f"Weights by default: {locations.checkpoints_dir()}")
    col.label(text=f"Jobs: {locations.JOBS_BESIDE_BLEND}/ beside the saved .blend, else {locations.unsaved_jobs_dir()}")


def draw_install(p, box):
    for line in install.install_what():
        box.label(text=line)
    row = box.row(align=True)
    row.prop(p, "torch_backend")
    box.prop(p, "install_args")
    st = STATE
    if running():
        text = f"{st['phase']}" + (f": {st['package']}" if st["package"] else "")
        progress(box, min(1.0, st["percent"] / 100.0), f"{st['percent']:.0f}% {text}")
        box.operator("stableavatar.cancel_install", icon="CANCEL")
    else:
        row = box.row(align=True)
        update = bool(st["update_needed"])
        op = row.operator("stableavatar.install_backend", text="Update Backend" if update else "Install Backend",
                          icon="FILE_REFRESH" if update else "IMPORT")
        op.update = update
        row.operator("stableavatar.open_install_log", icon="TEXT")
    if st["error"]:
        multiline(box, st["error"], 100)
    elif st["result"]:
        multiline(box, st["result"], 100)
