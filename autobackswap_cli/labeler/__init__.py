"""``autobackswap label`` without an importer: a labelling page served by a small local server.

``store.LabelStore`` owns the selection, the grids and the saving; ``server`` answers
the page's requests and runs until Ctrl-C; ``static/`` is the page (plain JS, no build).
"""

from .server import serve
from .store import LabelStore

__all__ = ["LabelStore", "serve"]
