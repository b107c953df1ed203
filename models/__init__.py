"""trident.models"""
from trident.compiler import config as _config  # noqa: F401
