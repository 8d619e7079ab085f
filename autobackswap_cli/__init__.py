"""autobackswap: offline dataset augmentation by automated background swapping (AutoBackSwap)."""

try:
    from importlib.metadata import version

    __version__ = version("autobackswap-cli")
except Exception:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
