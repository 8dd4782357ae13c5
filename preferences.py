"""Add-on preferences: this machine's settings (backend Python, checkpoints, engine settings, jobs folder; or a
remote backend over SSH, `ui/remote_props.py`).

A top-level module that imports only bpy and the bpy-free core, so operators/ and ui/ can both use `prefs()`
without importing each other. The engine settings' choices come from the contract.
"""
import os

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from .blender_addon import contract, farm, install, locations
from .ui import remote_props
from .ui.layout import multiline

ADDON_ID = __package__  # "bl_ext.<repository>.stableavatar" when installed as an extension
EXTENSION_DIR = os.path.dirname(os.path.abspath(__file__))
EXTENSION_VERSION = install.extension_version(EXTENSION_DIR)
DEVICE_LABELS = {"cuda": ("CUDA GPU", "An NVIDIA GPU through CUDA"),
                 "cpu": ("CPU (very slow)", "Real weights on a CPU take hours per second of video")}


def prefs():
    return bpy.context.preferences.addons[ADDON_ID].preferences


def _memory_modes():
    return [(m, m.replace("_", " ").title(), contract.MEMORY_MODE_HELP[m]) for m in contract.MEMORY_MODE_CHOICES]


class STABLEAVATAR_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    python: StringProperty(name="Backend Python", subtype="FILE_PATH",
                           description="Python of the environment that has the stableavatar backend installed "
                                       "(empty: the one made by Install Backend, in the data folder)")
    checkpoints: StringProperty(name="Checkpoints", subtype="DIR_PATH",
                                description="Folder with the StableAvatar, Wan2.1-Fun and wav2vec2 weights (empty: "
                                            "the data folder's checkpoints, shared by every Blender)")
    device: EnumProperty(name="Device", items=[(d, *DEVICE_LABELS[d]) for d in contract.DEVICES],
                         default=contract.DEVICES[0])
    dtype: EnumProperty(name="Precision", items=[("AUTO", "Auto", contract.ENGINE_SETTINGS["dtype"].help)]
                        + [(d, d, "") for d in contract.DTYPES], default="AUTO")
    memory_mode: EnumProperty(name="Memory mode", items=_memory_modes(),
                              default=contract.ENGINE_SETTINGS["memory_mode"].default)
    jobs_dir: StringProperty(name="Jobs folder", subtype="DIR_PATH",
                             description="Where job folders (audio, still, frames) go; // is relative to the .blend "
                                         f"(empty: {locations.JOBS_BESIDE_BLEND}/ beside the saved .blend, the data "
                                         "folder for a file not saved yet)")
    backend_report: StringProperty(name="Backend report")
    idle_release_min: FloatProperty(name="Free GPU after idle (min)", default=10.0, min=0.0, max=1440.0,
                                    description="Release the models' GPU memory after this many minutes without a "
                                                "job (0: keep them loaded); the next job loads them again")
    torch_backend: EnumProperty(name="PyTorch build", items=list(install.TORCH_BACKENDS), default="auto",
                                description="Which PyTorch build Install Backend asks uv for")
    install_args: StringProperty(name="Extra installer options",
                                 description="Added to `uv pip install` (e.g. --index-url, --find-links, "
                                             "--constraint for a local mirror)")
    remote: PointerProperty(type=remote_props.STABLEAVATAR_PG_remote)
    devices: IntProperty(name="GPUs per job", min=1, max=contract.ENGINE_SETTINGS["devices"].max,
                         default=contract.ENGINE_SETTINGS["devices"].default,
                         description=contract.ENGINE_SETTINGS["devices"].help)
    backend_report: StringProperty(name="Backend report")
    # the shot farm (docs/scale.md): a Ray cluster reached through the backend's `stableavatar farm` commands
    use_farm: BoolProperty(name="Send jobs to the farm", description="Run jobs on the Ray cluster below instead of "
                                                                     "the local backend")
    farm_address: StringProperty(name="Farm address", description="HOST:PORT of the cluster's head "
                                                                  "(printed by `ray start --head`)")
    farm_jobs_root: StringProperty(name="Shared jobs folder", subtype="DIR_PATH",
                                   description="A folder every node of the cluster sees, as this machine sees it")
    farm_node_root: StringProperty(name="Same folder on the nodes",
                                   description="The shared jobs folder's path on the nodes (empty: the same path)")
    farm_checkpoints: StringProperty(name="Checkpoints on the nodes",
                                     description="The checkpoint folder as the nodes see it (empty: their "
                                                 "$STABLEAVATAR_CHECKPOINTS)")

    def engine_settings(self, checkpoints: str) -> contract.EngineSettings:
        return contract.EngineSettings(checkpoints=checkpoints, device=self.device,
                                       dtype=None if self.dtype == "AUTO" else self.dtype,
                                       memory_mode=self.memory_mode, devices=self.devices)

    def farm_engine_argv(self) -> list[str]:
        """The engine flags every farm runner gets (paths as the nodes see them)."""
        return self.engine_settings(self.farm_checkpoints or None).argv()

    def farm_paths(self) -> farm.PathMap:
        return farm.PathMap(bpy.path.abspath(self.farm_jobs_root), self.farm_node_root)

    def draw(self, context):
        draw_preferences(self, self.layout)


def draw_preferences(p, layout):
    from .ui.prefs_install import draw_install, draw_locations
    layout.row().prop(p.remote, "backend", expand=True)
    col = layout.column()
    local = p.remote.backend == "LOCAL"
    if not local:
        remote_props.draw(p.remote, col)
    for name in (("python", "checkpoints") if local else ()) + ("device", "dtype", "memory_mode", "devices",
                                                                  "jobs_dir", "idle_release_min"):
        col.prop(p, name)
    draw_locations(layout)
    box = layout.box()
    box.prop(p, "use_farm")
    for name in ("farm_address", "farm_jobs_root", "farm_node_root", "farm_checkpoints"):
        row = box.row()
        row.active = p.use_farm
        row.prop(p, name)
    row = layout.row()
    row.operator("stableavatar.check_backend", icon="CHECKMARK")
    row.operator("stableavatar.stop_backend", icon="CANCEL")
    if p.backend_report:
        multiline(layout.box(), p.backend_report, 100)
    if not local:
        remote_props.draw_setup(layout)
        return
    box = layout.box()
    box.label(text="Setup (downloads; needs online access)", icon="URL")
    if not bpy.app.online_access:
        box.label(text="Online access is off (Preferences > System > Network): these buttons will refuse",
                  icon="ERROR")
    draw_install(p, box)
    for line in install.DOWNLOAD_WHAT:
        box.label(text=line)
    box.operator("stableavatar.download_weights", icon="IMPORT")


classes = remote_props.classes + (STABLEAVATAR_AP_preferences,)
