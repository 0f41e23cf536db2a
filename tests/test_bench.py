"""bench/ runs end to end and writes its results (structure only: speed is never asserted)."""
import json

from bench.run import main


def test_bench_quick_writes_json_and_markdown(tmp_path):
    main(["--device", "cpu", "--quick", "--reps", "1", "--out", str(tmp_path)])
    (js,) = tmp_path.glob("*-quick.json")
    data = json.loads(js.read_text())
    assert data["meta"]["copy_gbs"] > 0
    impls = {r["impl"] for r in data["rows"]}
    assert impls == {"torch kernel", "bnlib torch", "bnlib numpy"}
    for r in data["rows"]:
        assert r["median_ms"] > 0 and r["ratio_to_torch"] > 0 and r["phase"] in ("forward", "forward+backward")
        if r["impl"] == "torch kernel":
            assert "batch_norm" in r["torch_backend"]
    assert "| case |" in js.with_suffix(".md").read_text()
