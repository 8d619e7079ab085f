"""Names are not paths: the one check of a class or group name, and the names the tool writes in its folders.

A class names a folder of compose's OUT (``OUT/<class>/...``, tar members ``<class>/...``), so a class (or group)
name that holds a separator, is ``.`` or ``..``, absolute, or holds NUL or control characters would put files
outside OUT or fail every item; one named like a file the tool writes beside the class folders (the manifest, the
run record, ...) would collide with it. ``check_name`` refuses them wherever the name comes from (a folder, a
metadata table, ``--class-names``), before any work. ``is_tool_file`` tells the files the tool writes at the top of
an output folder (single-file outputs such as ``--preview`` may not land on them).
"""

from __future__ import annotations

import re

from .errors import StepError

# the files (and hidden files) the tool writes at the top of an output folder, beside the class folders
TOOL_FILES = re.compile(
    r"(autobackswap(\..+)?\.json|manifest(\..+)?\.csv|mask_quality\.csv|index(\..+)?\.json|shard-.*\.tar|labels\.json|labeler\.json"
    r"|\.autobackswap.*|\.abs-tmp-.*)",
    re.IGNORECASE,
)


def is_tool_file(name: str) -> bool:
    """Whether ``name`` (one path component) is a file the tool writes at the top of an output folder."""
    return TOOL_FILES.fullmatch(name) is not None


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a class or group folder (None: it can)."""
    if not name or not name.strip():
        return "it is empty"
    if "/" in name or "\\" in name:
        return "it holds a path separator"
    if name in (".", ".."):
        return "it is . or .."
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "it holds a control character (NUL, newline, ...)"
    if is_tool_file(name):
        return "it is the name of a file the tool writes in the output folder"
    return None


def check_name(name: str, where: str, role: str = "class") -> str:
    """``name`` if it can name a ``role`` folder; else a ``StepError`` saying ``where`` it came from and why."""
    problem = name_problem(name)
    if problem is not None:
        raise StepError(f"{where}: the {role} name {name!r} cannot be used: {problem}; class and group names become folder "
                        f"names in OUT (rename it, or name the values with --class-names / --group-names)")
    return name
