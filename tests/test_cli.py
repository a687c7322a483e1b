import json

from kernelattn.cli import main


def test_kernels_job_writes_table_json_and_png(tmp_path, capsys):
    assert main(["kernels", "--n", "60", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| triweight | adaptive | entmax43 |" in out
    rows = json.loads((tmp_path / "results.json").read_text())
    assert len(rows) == 8 and all(r["rmse"] < 0.5 for r in rows)
    assert (tmp_path / "kernels.png").stat().st_size > 10_000


def test_bad_input_exits_2_with_one_line(capsys):
    assert main(["kernels", "--n", "0", "--out", "/tmp/x"]) == 2
    assert "error" in capsys.readouterr().err
