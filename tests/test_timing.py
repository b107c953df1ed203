"""compiler/timing.py: the one timer (CPU paths here; the GPU paths where CUDA is present)."""
import pytest
import torch

from trident.compiler import timing

HAS_CUDA = torch.cuda.is_available()


def test_summarize_picks_median_and_tails():
    times = [float(t) for t in range(1, 101)]  # 1 .. 100 ms, shuffled order does not matter
    s = timing.summarize(times[::-1])
    assert (s["median_ms"], s["p90_ms"], s["p99_ms"]) == (51.0, 91.0, 100.0)
    assert timing.summarize([3.0]) == {"median_ms": 3.0, "p90_ms": 3.0, "p99_ms": 3.0}


def test_cpu_latencies_and_wall_clock_count_every_call():
    calls = []

    def work():
        calls.append(1)
        torch.randn(64, 64) @ torch.randn(64, 64)

    times = timing.latencies_ms(work, 5, warmup=2, on_gpu=False)
    assert len(times) == 5 and len(calls) == 7 and all(t > 0 for t in times)
    calls.clear()
    assert timing.wall_ms(work, 4) > 0 and len(calls) == 5  # one untimed call first


def test_a_failing_call_propagates():
    def broken():
        raise RuntimeError("config does not compile")

    with pytest.raises(RuntimeError, match="does not compile"):
        timing.wall_ms(broken, 3)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_timers_order_work_by_size_and_stop_early_past_the_cutoff():
    small = torch.empty(1 << 20, device="cuda", dtype=torch.float16)
    large = torch.empty(1 << 27, device="cuda", dtype=torch.float16)
    assert 0 < timing.kernel_ms(lambda: small.mul_(1.0)) < timing.kernel_ms(lambda: large.mul_(1.0))
    assert 0 < timing.cold_kernel_ms(lambda: small.mul_(1.0)) < timing.cold_kernel_ms(lambda: large.mul_(1.0))
    calls = []
    timing.kernel_ms(lambda: calls.append(large.mul_(1.0)), cutoff_ms=1e-6)
    assert len(calls) == 4  # one untimed call, then the three captured for the estimate
    ms, graph = timing.graph_ms(lambda: small.mul_(1.0), 10)
    assert ms > 0 and graph is not None
    assert timing.events_ms(lambda: small.mul_(1.0), 10) > 0
