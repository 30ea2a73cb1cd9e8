"""The command line: JSON shape, and bad input -> one line on stderr, exit code 2, no traceback."""

import json
import sys

import pytest

from datarights.cli import main


def run(monkeypatch, capsys, *args):
    capsys.readouterr()  # only this command's output is returned
    monkeypatch.setattr(sys, "argv", ["datarights", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_world_info_json(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "world", "info", "--json", "--preset", "tiny", "--n", "300")
    assert code == 0
    vocab = json.loads(out)
    assert set(vocab) >= {"objects", "categories", "styles", "characters", "memorized", "compositions", "owners",
                          "photographers", "signature_components", "world_version"}
    assert sum(o["images"] for o in vocab["owners"]) == 300
    assert all(set(p["signature"]) == {"grade", "mark", "ground", "side"} for p in vocab["photographers"])


def test_world_make(monkeypatch, capsys, tmp_path):
    code, _, _ = run(monkeypatch, capsys, "world", "make", tmp_path / "w", "--preset", "tiny", "--n", "40")
    assert code == 0 and len((tmp_path / "w" / "metadata.jsonl").read_text().splitlines()) == 40
    code, _, err = run(monkeypatch, capsys, "world", "make", tmp_path / "w", "--preset", "tiny", "--n", "40")
    assert code == 2 and "already exists" in err


@pytest.mark.parametrize("args, message", [
    (["generate", "a red face", "--model", "/nonexistent/model"], "does not exist"),
    (["generate", "   "], "prompt is empty"),
    (["generate", "a red face", "--n", "0"], "--n must be at least 1"),
    (["eval-model", "--n", "0"], "--n must be at least 1"),
    (["world", "make", "/tmp/x", "--n", "0"], "n images must be a whole number from 1 to"),
    (["train", "--data", "/nonexistent/data", "--out", "/tmp/never"], "does not exist"),
    (["evaluate", "lds", "--subsets", "2"], "at least 3 subset models"),
    (["evaluate", "lds", "--alpha", "1.5"], "alpha must be in (0, 1)"),
    (["evaluate", "custom", "--kinds", "scene"], "kinds must be among object, style"),
    (["evaluate", "owners", "--methods", "caption,abu-fast:rerank"], "write its options as field=value"),
    # numbers past what any job could use: refused while parsing, never an overflow deep inside
    (["generate", "a red face", "--n", "99999999999999999999"], "'--n': Input should be less than or equal to 1000000"),
    (["generate", "a red face", "--seed", "99999999999999999999"], "'--seed': Input should be less than or equal to 9223"),
    (["generate", "a red face", "--seed", "-5"], "'--seed': Input should be greater than or equal to 0"),
    (["eval-model", "--n", "99999999999999999999"], "'--n': Input should be less than or equal to 1000000"),
    (["world", "make", "/tmp/x", "--n", "99999999999999999999"], "'--n': Input should be less than or equal to 1000000"),
    (["world", "make", "/tmp/x", "--seed", "-3"], "'--seed': Input should be greater than or equal to 0"),
    (["train", "--steps", "1000001", "--out", "/tmp/never"], "'--steps': Input should be less than or equal to 1000000"),
    (["serve", "--port", "70000"], "'--port': Input should be less than or equal to 65535"),
])
def test_bad_input_exits_2_with_one_line(monkeypatch, capsys, args, message):
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_sampling_steps_beyond_the_noise_schedule_are_refused(monkeypatch, capsys, tmp_path):
    code, _, err = run(monkeypatch, capsys, "generate", "a red face", "--n", "1", "--steps", "1001",
                       "--out", tmp_path / "g.png")
    assert code == 2 and "sampling steps must be between 1 and 1000" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g.png").exists()


def test_wrong_model_folder_and_dataset(monkeypatch, capsys, tmp_path):
    (tmp_path / "notamodel").mkdir()
    code, _, err = run(monkeypatch, capsys, "generate", "a tree", "--model", tmp_path / "notamodel")
    assert code == 2 and "model_index.json" in err
    (tmp_path / "data").mkdir()
    code, _, err = run(monkeypatch, capsys, "train", "--data", tmp_path / "data", "--out", tmp_path / "m")
    assert code == 2 and "no metadata.jsonl" in err and not (tmp_path / "m").exists()


def test_erase_and_audit_bad_input(monkeypatch, capsys, tmp_path):
    code, _, err = run(monkeypatch, capsys, "erase", "--target", "face", "--anchor", "face", "--out", tmp_path / "e",
                       "--method", "uce")
    assert code == 2 and "same" in err and not (tmp_path / "e").exists()
    code, _, err = run(monkeypatch, capsys, "erase", "--target", "face", "--anchor", "fish", "--out", tmp_path / "e",
                       "--method", "nope")
    assert code == 2 and "unknown erase method" in err
    code, _, err = run(monkeypatch, capsys, "audit", "--model", tmp_path / "missing", "--target", "face", "--anchor", "x")
    assert code == 2 and "does not exist" in err
    (tmp_path / "orphan").mkdir()
    (tmp_path / "orphan" / "model_index.json").write_text(
        '{"_class_name": "DatarightsEditedModel", "base": "%s"}' % (tmp_path / "gone"))
    code, _, err = run(monkeypatch, capsys, "audit", "--model", tmp_path / "orphan", "--target", "grumpy face",
                       "--anchor", "face")
    assert code == 2 and "base model" in err and "missing" in err


def test_attribute_json_and_report(monkeypatch, capsys, tmp_path, tiny_world, tiny_trained):
    from PIL import Image
    Image.new("RGBA", (20, 20), (200, 30, 30, 255)).save(tmp_path / "q.png")  # other size and mode: converted
    code, out, err = run(monkeypatch, capsys, "attribute", tmp_path / "q.png", "--prompt", "a red face",
                         "--model", tiny_trained, "--data", tiny_world, "--method", "pixel", "--top", "3",
                         "--cache", tmp_path / "c", "--json", "--report", tmp_path / "r")
    assert code == 0, err
    assert "converting to RGB" in err and "resizing" in err
    res = json.loads(out)
    assert len(res["top"]) == 3 and {"file", "owner", "score"} <= set(res["top"][0])
    assert abs(sum(o["share"] for o in res["owners"]) - 1) < 1e-6
    assert res["method"] == "pixel" and res["temperature"] > 0
    assert "Owner shares" in (tmp_path / "r" / "index.html").read_text()
    code, out, err = run(monkeypatch, capsys, "attribute", tmp_path / "q.png", "--prompt", "a red face",
                         "--model", tiny_trained, "--data", tiny_world, "--method", "abu-fast", "--rerank", "2",
                         "--cache", tmp_path / "c", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["method"] == "abu-fast" and res["config"]["rerank"] == 2 and res["reranked"] == 2


def test_attribute_bad_input(monkeypatch, capsys, tmp_path, tiny_world, tiny_trained):
    from PIL import Image
    Image.new("RGB", (16, 16)).save(tmp_path / "q.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    common = ["--model", tiny_trained, "--data", tiny_world, "--cache", tmp_path / "c"]
    for args, message in [
        ([tmp_path / "q.png", "--prompt", "  "], "prompt is empty"),
        ([tmp_path / "missing.png", "--prompt", "a face"], "does not exist"),
        ([tmp_path / "broken.png", "--prompt", "a face", "--method", "pixel"], "not a readable image"),
        ([tmp_path / "q.png", "--prompt", "a face", "--method", "magic"], "unknown attribution method"),
        ([tmp_path / "q.png", "--prompt", "a face", "--method", "pixel", "--top", "65"], "larger than the training set"),
        ([tmp_path / "q.png", "--prompt", "a face", "--method", "pixel", "--temperature", "0"], "--temperature"),
        ([tmp_path / "q.png", "--prompt", "a face", "--method", "trak", "--rerank", "5"], "does not apply to trak"),
        ([tmp_path / "q.png", "--prompt", "a face", "--method", "abu-fast", "--rerank", "0"], "--rerank must be at least 1"),
        ([tmp_path / "q.png", "--prompt", "a face", "--method", "abu-fast", "--rerank", "10" * 12],
         "--rerank 101010101010101010101010 is larger than the training set"),
    ]:
        code, _, err = run(monkeypatch, capsys, "attribute", *args, *common)
        assert code == 2 and message in err, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_evaluate_lds_prints_intervals(monkeypatch, capsys, tmp_path):
    # the whole command on a 64-image world with 2 training steps: every row names its interval
    args = ["evaluate", "lds", "--methods", "pixel", "--subsets", "3", "--queries", "1", "--world-images", "64",
            "--world-preset", "tiny", "--train-steps", "2", "--competence", "0", "--run", tmp_path / "run"]
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all("LDS" in line and "[no interval]" in line for line in lines)  # one query
    assert "pixel" in lines[0] and "minus random" in lines[0] and "random" in lines[1]
    assert "concept oracle" in lines[2] and "minus random" in lines[2]    # the positive control
    code, out, _ = run(monkeypatch, capsys, *args, "--json")
    rows = json.loads(out)["summary"]
    assert code == 0 and {r["method"] for r in rows} == {"pixel", "concept oracle", "random"}
