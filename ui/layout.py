"""Small layout helpers shared by the panels and the preferences (imports nothing of the add-on's)."""
import bpy


def progress(layout, factor: float, text: str):
    if "progress" in bpy.types.UILayout.bl_rna.functions:  # UILayout.progress exists from 4.0
        layout.progress(factor=factor, type="BAR", text=text)
    else:
        layout.label(text=f"{int(factor * 100)}% {text}")


def multiline(layout, text: str, width: int = 70):
    """Labels for `text`, wrapped at `width` characters (a label never wraps by itself)."""
    col = layout.column(align=True)
    col.scale_y = 0.8
    for para in text.splitlines():
        while len(para) > width:
            col.label(text=para[:width])
            para = para[width:]
        col.label(text=para)
