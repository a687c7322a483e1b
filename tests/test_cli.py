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


def test_train_overrides_may_follow_options(tmp_path):
    from kernelattn.training import load_checkpoint

    run = tmp_path / "r"
    argv = ["train", "model.n_layer=1", "model.n_embd=16", "--stop-at", "1", "data.n_stories=40", "data.seq_len=32",
            "model.block_size=32", "optim.batch_size=2", "optim.max_steps=3", "run.progress=false",
            "run.eval_batches=1", f"run.out_dir={run}"]
    assert main(argv) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["data"]["n_stories"] == 40 and saved["optim"]["max_steps"] == 3
    assert load_checkpoint(run / "ckpt.pt")["step"] == 1
    assert main(["train", "--resume", str(run), "--bogus"]) == 2
