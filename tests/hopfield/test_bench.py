"""Smoke test of the hopfield-bench job at tiny sizes (the real run is not a test)."""

import argparse
import json

import pytest
import torch

pytest.importorskip("sklearn")

from kernelattn.hopfield import bench  # noqa: E402


def _args(tmp_path, *extra):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(["--out", str(tmp_path), "--memories", "5", "12", "--betas", "1", "--seeds", "1",
                              "--n-iter", "3", "--mappings", "softmax", "sparsemax", "--mil-mappings", "softmax",
                              "normmax:2+learn", "--mil-seeds", "1", "--mil-bags", "6", "--mil-epochs", "1",
                              "--mil-bag-size", "2", "4", "--recall-memories", "4", "6", "--recall-betas", "1",
                              "--recall-seeds", "1", "--recall-n-iter", "2", *extra])


def test_bench_writes_table_json_and_png(tmp_path, capsys):
    threads = torch.get_num_threads()
    assert bench.run(_args(tmp_path)) == 0
    assert torch.get_num_threads() == threads  # restored
    out = capsys.readouterr().out
    assert "| sparsemax |" in out and "Multiple-instance learning" in out
    assert "| constrained sparsemax |" in out and "| seq. 2-subsets + sparsemax |" in out and "| DAM poly:10 |" in out
    res = json.loads((tmp_path / "results.json").read_text())
    assert len(res["retrieval"]) == 2 * 2 and len(res["mil"]) == 2
    assert all(0 <= r["success"] <= 1 for r in res["retrieval"])
    assert len(res["free_recall"]) == 2 * 4 and len(res["sequential_recall"]) == 2 * 3
    assert all(0 < r["unique"] <= 1 for r in res["free_recall"])
    assert len(res["dam"]) == 2 * (4 + 2)
    assert (tmp_path / "hopfield_bench.png").stat().st_size > 5_000
    assert (tmp_path / "hopfield_bench.md").read_text().startswith("**Retrieval")


@pytest.mark.parametrize("bad", [["--memories", "1"], ["--mappings", "relumax"], ["--seeds", "0"],
                                 ["--mil-bag-size", "5", "2"], ["--dam", "gauss"], ["--recall-memories", "1"]])
def test_bad_input_exits_2(tmp_path, capsys, bad):
    assert bench.run(_args(tmp_path, *bad)) == 2
    assert "error" in capsys.readouterr().err
