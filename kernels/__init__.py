"""Hand-written @triton.jit templates that trident's codegen instantiates."""
from trident.compiler import config as _config  # noqa: F401  (sets TRITON_INTERPRET before triton loads)
