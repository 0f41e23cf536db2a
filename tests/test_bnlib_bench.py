"""bench/run.py's memory measurement, targets and report (structure only: speed is never asserted)."""
from bench import run


def test_memory_rows_and_report_structure():
    memory = run.memory_rows([("tiny", (8, 4, 6, 6))], ["eager"])
    assert {m["impl"] for m in memory} == {run.TORCH, run.EAGER, run.NUMPY}
    for m in memory:
        assert m["peak_x"] > 0 and m["extra_x"] == m["peak_x"] - 2.0
    rows = [dict(case="tiny", shape=[8, 4, 6, 6], format="NCHW", phase=phase, impl=impl, median_ms=1.0,
                 ratio_to_torch=1.0, gbs=1.0, torch_backend="x") for impl in (run.TORCH, run.EAGER, run.NUMPY)
            for phase in ("forward", "forward+backward")]
    goals = run.targets(rows, memory)
    names = [g[0] for g in goals]
    assert any("within 1.2x" in n for n in names) and any("1.5x everywhere" in n for n in names)
    assert not any(n.startswith(run.TORCH) for n in names)
    sync = [dict(case="tiny", per_process_shape=[4, 4, 6, 6], local_ms=1.0, sync_ms=2.0, collectives_us=100.0,
                 bytes_exchanged=144, overhead=1.0)]
    meta = dict(machine="m", device="cpu", device_name="cpu", torch="t", numpy="n", torch_threads=2,
                bnlib_threads=2, omp_wait_policy="PASSIVE", date="d", reps=1, copy_gbs=10.0)
    text = run.markdown(meta, rows, memory, sync, goals)
    for heading in ("## Time", "## Peak memory", "## SyncBatchNorm", "## Targets"):
        assert heading in text
