"""LaunchConfig: how one kernel is launched, from tuning to launch.

The templates' heuristics return one (trident.kernels), the autotuner searches over them
(compiler/autotune), the plan stores one per kernel (ir/plan.py) and the runtime launches with it:
`launch(*tensors, config=cfg.to_dict())` passes the block sizes as the kernel's constexprs and
num_warps / num_stages to Triton.
"""
from __future__ import annotations

from dataclasses import dataclass

LAUNCH_OPTIONS = ("num_warps", "num_stages")  # Triton launch options; every other key is a constexpr


@dataclass(frozen=True, eq=False)
class LaunchConfig:
    """Constexpr block sizes (`params`, in the order the kernel's CONFIG lists them) plus
    num_warps and num_stages (None: Triton's default). Frozen and hashable; two configs are equal
    when they launch the same way, whatever the order of their params (a config read back from
    JSON with sorted keys equals the one written). `cfg.BLOCK_M` reads a param. A tiled template's
    PERSISTENT param is its programs per SM (0: one program per tile)."""
    params: tuple[tuple[str, int], ...]
    num_warps: int = 4
    num_stages: int | None = None

    def _key(self) -> tuple:
        return tuple(sorted(self.params)), self.num_warps, self.num_stages

    def __eq__(self, other) -> bool:
        return isinstance(other, LaunchConfig) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @classmethod
    def of(cls, num_warps: int = 4, num_stages: int | None = None, **params: int) -> "LaunchConfig":
        return cls(tuple(params.items()), num_warps, num_stages)

    @classmethod
    def from_dict(cls, launch: dict) -> "LaunchConfig":
        params = {k: int(v) for k, v in launch.items() if k not in LAUNCH_OPTIONS}
        stages = launch.get("num_stages")
        return cls.of(int(launch.get("num_warps", 4)), None if stages is None else int(stages),
                      **params)

    def to_dict(self) -> dict:
        """The keyword arguments of `kernel[grid](...)`: params, num_warps, num_stages."""
        out = dict(self.params)
        out["num_warps"] = self.num_warps
        if self.num_stages is not None:
            out["num_stages"] = self.num_stages
        return out

    def __getattr__(self, name: str) -> int:
        for key, value in self.__dict__.get("params", ()):
            if key == name:
                return value
        raise AttributeError(f"launch config {self} has no {name}")

    def __getitem__(self, name: str) -> int:
        return dict(self.params)[name]

    def get(self, name: str, default=None):
        return dict(self.params).get(name, default)

    def replace(self, **changes) -> "LaunchConfig":
        launch = self.to_dict()
        launch.update(changes)
        return LaunchConfig.from_dict(launch)

    def __str__(self) -> str:
        p = dict(self.params)
        if {"BLOCK_M", "BLOCK_N", "BLOCK_K"} <= p.keys():
            text = f"{p['BLOCK_M']}x{p['BLOCK_N']}x{p['BLOCK_K']} g{p.get('GROUP_M', 1)}"
            text += f" p{p['PERSISTENT']}" if p.get("PERSISTENT") else ""
            text += " tma" if p.get("TMA") else ""
            text += " blas" if p.get("BLAS") else ""
            text += " split" if p.get("SPLIT_EPILOGUE") else ""
            text += " ws" if p.get("WS") else ""
            text += " coalesced" if p.get("WS_COALESCED") else ""
        else:
            text = " ".join(f"{k.replace('BLOCK_', '')}={v}" for k, v in p.items())
        text += f" w{self.num_warps}"
        return text + (f" s{self.num_stages}" if self.num_stages is not None else "")


__all__ = ["LAUNCH_OPTIONS", "LaunchConfig"]
