"""The version of vipann (one place; ``vipann.__version__`` and saved configs read it)."""

__version__ = "0.1.0"
