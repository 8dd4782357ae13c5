"""The preferences of a remote backend (Backend: Remote (SSH)): where the GPU machine is and how to reach it.

A property group on the add-on preferences (`prefs().remote`); what the values mean is the remote client's
`RemoteConfig` (backend/stableavatar/remote/config.py, docs/remote.md), built by `config()`.
"""
import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from ..blender_addon import remote

HOST_KEYS = {"yes": ("Known only", "Refuse a host whose key is not in the known hosts file (ssh's "
                                   "StrictHostKeyChecking=yes)"),
             "accept-new": ("Accept new", "Trust a host seen for the first time and remember its key; a changed "
                                          "key is still refused")}


class STABLEAVATAR_PG_remote(bpy.types.PropertyGroup):
    backend: EnumProperty(name="Backend", items=[
        ("LOCAL", "Local", "Run the backend on this machine"),
        ("REMOTE", "Remote (SSH)", "Run the backend on another machine (a GPU box) over SSH; inputs go there and "
                                   "frames come back")], default="LOCAL")
    host: StringProperty(name="Host", description="The GPU machine's host name or address")
    user: StringProperty(name="User", description="The login there (empty: ssh's default or ~/.ssh/config)")
    port: IntProperty(name="Port", default=22, min=1, max=65535)
    identity: StringProperty(name="Identity file", subtype="FILE_PATH",
                             description="Private key to log in with (empty: ssh's own choice, ssh-agent)")
    known_hosts: StringProperty(name="Known hosts file", subtype="FILE_PATH",
                                description="Where host keys are checked (empty: ~/.ssh/known_hosts)")
    host_keys: EnumProperty(name="Host keys", items=[(k, *v) for k, v in HOST_KEYS.items()], default="yes")
    command: StringProperty(name="Remote command", default=remote.DEFAULT_COMMAND,
                            description="The backend on the GPU machine, e.g. ~/stableavatar/.venv/bin/stableavatar "
                                        "(remote shell text)")
    checkpoints: StringProperty(name="Remote checkpoints",
                                description="The weights folder on the GPU machine (empty: its default)")
    jobs_root: StringProperty(name="Remote jobs folder",
                              description="Where job folders go on the GPU machine; the backend there writes "
                                          f"nowhere else (empty: ~/{remote.DEFAULT_JOBS_ROOT}, or the mapped folder)")
    local_prefix: StringProperty(name="Shared folder here", subtype="DIR_PATH",
                                 description="Shared storage: this folder on this machine ... (empty: files are "
                                             "copied over SSH)")
    remote_prefix: StringProperty(name="Same folder there",
                                  description="... is this folder on the GPU machine: jobs under it are not copied")

    def config(self) -> "remote.RemoteConfig":
        local = bpy.path.abspath(self.local_prefix).rstrip("/\\") if self.local_prefix else ""
        return remote.RemoteConfig(host=self.host, user=self.user, port=self.port,
                                   identity=bpy.path.abspath(self.identity) if self.identity else "",
                                   known_hosts=bpy.path.abspath(self.known_hosts) if self.known_hosts else "",
                                   host_keys=self.host_keys, command=self.command, checkpoints=self.checkpoints,
                                   jobs_root=self.jobs_root, local_prefix=local,
                                   remote_prefix=self.remote_prefix.rstrip("/"))


def draw(r, layout):
    """The remote box of the preferences."""
    box = layout.box()
    col = box.column()
    for name in ("host", "user", "port", "identity", "known_hosts", "host_keys", "command", "checkpoints",
                 "jobs_root"):
        col.prop(r, name)
    sub = box.column(heading="Shared storage (optional)")
    sub.prop(r, "local_prefix")
    sub.prop(r, "remote_prefix")


def draw_setup(layout):
    """Install and Download act on this machine: a remote backend is set up on the GPU machine itself."""
    box = layout.box()
    box.label(text="The GPU machine needs the backend, the weights and your SSH key:", icon="INFO")
    for line in ("pip install the backend there and download the weights (stableavatar download --to DIR),",
                 "add this machine's public key to ~/.ssh/authorized_keys there, then press Check Backend.",
                 "Step by step: docs/remote.md of the StableAvatar repository."):
        box.label(text=line)


classes = (STABLEAVATAR_PG_remote,)
