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


def test_list_options_take_commas_everywhere_and_spaces_too():
    from kernelattn.cli import build_parser

    parser = build_parser()
    hb = parser.parse_args(["hopfield-bench", "--mappings", "softmax,sparsemax", "--memories", "10,25", "50",
                            "--betas", "1", "--mil-mappings", "softmax,entmax15+learn"])
    assert hb.mappings == ["softmax", "sparsemax"] and hb.memories == [10, 25, 50] and hb.betas == [1.0]
    assert hb.mil_mappings == ["softmax", "entmax15+learn"] and hb.mil_bag_size == [10, 30]
    rp = parser.parse_args(["reproduce", "--tasks", "copy,lm", "--methods", "softmax", "sparsemax", "--seeds", "0,1"])
    assert rp.tasks == ["copy", "lm"] and rp.methods == ["softmax", "sparsemax"] and rp.seeds == [0, 1]


def test_bad_list_item_is_one_line_exit_2(capsys):
    assert main(["hopfield-bench", "--memories", "10,ten"]) == 2
    err = capsys.readouterr().err
    assert "--memories" in err and len(err.strip().splitlines()) == 1


def test_reproduce_help_states_the_presets_real_default_tasks(capsys):
    from kernelattn.experiments.presets import PRESETS

    assert main(["reproduce", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for name, preset in PRESETS.items():
        assert f"{name}: {','.join(preset.default_tasks)}" in text
