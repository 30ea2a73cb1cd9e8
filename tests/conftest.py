"""Shared fixtures: tiny models built from config in code, a tiny world; nothing is downloaded."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Two cores in all: under pytest-xdist (`-n 2`) each worker, and every process it starts, gets one thread,
# so that the workers never oversubscribe the machine (torch slows many times over when they do).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(max(1, 2 // _WORKERS))
torch.set_num_threads(max(1, min(2, torch.get_num_threads()) // _WORKERS))

TINY_UNET = dict(block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=4)


SLOW = {
    # What the default suite leaves to the second stage (`pytest -m slow`, which .ci/run runs right after
    # it): end-to-end runs of failure modes that spawn processes, browsers or crowds, each 5-40 s, whose
    # parts the default suite checks in-process ...
    "test_browser.py::test_owner_checks_opts_out_admin_processes_owner_verifies",
    "test_safety.py::test_kill_9_during_attribution_prepare_then_rerun",
    "test_safety.py::test_kill_9_during_erase_then_rerun",
    "test_safety.py::test_two_processes_build_the_default_world_once",
    "test_web.py::test_kill_9_of_the_worker_during_process_leaves_the_job_failed_and_resumable",
    "test_ledger.py::test_kill_9_during_process_leaves_a_failed_job_and_a_rerun_finishes",
    "test_payments.py::test_an_owners_page_answers_while_an_abu_attribution_runs",
    "test_hostile.py::test_fuzz_every_http_route",
    "test_hostile.py::test_fuzz_the_ledger_commands",
    "test_hostile.py::test_an_owners_page_answers_while_50_lookups_run",
    "test_hostile.py::test_two_processors_on_one_pending_optout_make_one_job_and_one_certificate",
    "test_runtime.py::test_training_under_accelerate_launch_with_two_processes",
    "test_store.py::test_ray_workers_make_the_single_process_rows",
    # the planted-signal harnesses of the evaluations and the judge's blend training (12-25 s each)
    "test_evaluate.py::test_counterfactual_harness_finds_a_planted_owner_and_not_a_shuffled_one",
    "test_evaluate.py::test_lds_harness_finds_a_planted_owner_and_not_another_one",
    "test_judge.py::test_training_on_blends_stops_the_style_head_naming_a_third_artist",
    # the shipped model's paid generation from its shipped state and its shipped artifacts (each loads the
    # 5,000-image default world, 9-22 s), the leave-out harness end to end and the demo's skipped service
    # step (9 s each), the owner evaluation end to end and `evaluate lds` through the CLI (10 s, 6 s;
    # their harnesses are checked in the default stage): the default stage stays near 5 minutes on 2 cores
    "test_shipped.py::test_paid_generations_of_the_shipped_model_use_its_shipped_state",
    "test_shipped.py::test_shipped_attribution_artifacts_are_found",
    "test_provenance.py::test_leaveout_fine_tunes_every_model_from_a_warm_start_that_never_saw_the_runs_owners",
    "test_evaluate.py::test_counterfactual_fine_tunes_the_base_and_every_retraining_from_one_warm_start",
    "test_demo.py::test_service_step_is_skipped_for_a_model_not_trained_on_the_default_world",
    "test_provenance.py::test_owner_evaluation_end_to_end_with_copies",
    "test_cli.py::test_evaluate_lds_prints_intervals",
    # the ledger processing a large-world opt-out with a judge trained for it (19 s; the default stage
    # checks the resolution and every refusal), and P4D against each erase method's edit (4-5 s each):
    # the default stage keeps it on the tiny world model's edits of four kinds (a trained cross-attention
    # edit, MACE's LoRA, UCE's closed form, a retrained whole UNet) and P4D's contract on both backends
    "test_ledger.py::test_a_large_world_optout_is_processed_with_a_judge_of_that_world",
    *(f"test_attack.py::test_p4d_runs_against_every_erase_method[sd-{m}]"
      for m in ("ca", "esd", "fmn", "ga", "mace", "retrain", "stereo", "uce")),
    *(f"test_attack.py::test_p4d_runs_against_every_erase_method[world-{m}]" for m in ("esd", "fmn", "ga", "stereo")),
    # gradient ascent with its defaults on the shipped model is not called erased (13 s; the default stage
    # keeps the other broken-model control: a model that emits noise is 'model broken on target')
    "test_audit.py::test_gradient_ascent_does_not_pass_as_erasure",
    # ... and the PostgreSQL runs of the heaviest erase-audit-certify workflows (their SQLite runs stay,
    # and so does every lighter test on PostgreSQL: the store's semantics are checked on both backends).
    "test_web.py::test_the_admin_processes_in_the_background_and_the_owner_follows[postgresql]",
    "test_web.py::test_pages_render_for_owner_and_admin[postgresql]",
    "test_ledger.py::test_batch_processing_erases_every_pending_request_in_one_edit[postgresql]",
    "test_rules.py::test_erasures_accumulate_and_every_earlier_one_is_re_audited[postgresql]",
    "test_payments.py::test_a_queued_payment_sent_twice_is_one_job_and_one_event[postgresql]",
}


@pytest.hookimpl(tryfirst=True)  # marked before `-m` deselects
def pytest_collection_modifyitems(config, items):
    found = set()
    for item in items:
        key = item.nodeid.split("tests/", 1)[-1]
        if key in SLOW:
            item.add_marker(pytest.mark.slow)
            found.add(key)
    whole = not config.getoption("keyword") and all(os.path.isdir(a) for a in config.args)
    if whole and found != SLOW:  # a renamed test must not drop out of both stages unnoticed
        raise pytest.UsageError(f"tests/conftest.py SLOW names tests that do not exist: {sorted(SLOW - found)}")


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Tests never read or write the user's ~/.cache/datarights."""
    old = os.environ.get("DATARIGHTS_CACHE")
    os.environ["DATARIGHTS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    os.environ.pop("DATARIGHTS_CACHE") if old is None else os.environ.__setitem__("DATARIGHTS_CACHE", old)


@pytest.fixture(autouse=True)
def own_folder(tmp_path_factory, monkeypatch):
    """Every test runs in a fresh empty folder of its own, so a command's default outputs (grid.png,
    datarights-ledger.db, runs/...) never meet a user's files in the checkout, nor another test's."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    from datarights.world import WorldConfig, make_world_folder

    return make_world_folder(tmp_path_factory.mktemp("w") / "world", WorldConfig(preset="tiny", seed=3))


@pytest.fixture(scope="session")
def tiny_trained(tiny_world, tmp_path_factory):
    """A tiny model folder that records its training recipe (retrain and the CLI tests need one)."""
    from datarights.train import TrainConfig, train

    out = tmp_path_factory.mktemp("m") / "tiny"
    train(TrainConfig(steps=2, batch_size=4, warmup=1, unet_config=TINY_UNET), tiny_world, out, progress=False)
    return out


@pytest.fixture()
def tiny_model():
    from datarights.models import build_world_model

    return build_world_model(TINY_UNET, seed=0).eval()


@pytest.fixture(scope="session")
def tiny_sd_folder(tmp_path_factory):
    """A tiny StableDiffusionPipeline folder whose tokenizer knows the world's words."""
    from datarights.testing import build_tiny_sd
    return build_tiny_sd(tmp_path_factory.mktemp("sd"))


@pytest.fixture(scope="session")
def tiny_sd_trained(tiny_sd_folder, tiny_world, tmp_path_factory):
    """The tiny SD pipeline fine-tuned 2 steps on the tiny world: an SD folder that records its recipe."""
    from datarights.train import TrainConfig, train

    out = tmp_path_factory.mktemp("sdm") / "tiny-sd"
    train(TrainConfig(steps=2, batch_size=4, warmup=1), tiny_world, out, init_from=tiny_sd_folder, progress=False)
    return out


@pytest.fixture(params=["world", "sd"])
def backend_folder(request):
    """A tiny model folder of each backend that records its training recipe (contract tables run on both)."""
    return request.getfixturevalue("tiny_trained" if request.param == "world" else "tiny_sd_trained")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(db, **popen):
    """`datarights serve --ledger db` in its own process on a free loopback port, once it answers;
    returns (process, base URL)."""
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    popen = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **popen}
    srv = subprocess.Popen([sys.executable, "-c", "from datarights.cli import main; main()", "serve", "--ledger", str(db),
                            "--port", str(port)], **popen)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            httpx.get(url + "/", timeout=1)
            return srv, url
        except httpx.HTTPError:
            time.sleep(0.1)
    srv.kill()
    raise RuntimeError("the server did not start")



BACKENDS = ["sqlite", "postgresql"]
"""The ledger and web suites run on both (PostgreSQL: a server named by $DATARIGHTS_TEST_POSTGRES, an
admin URL such as postgresql://datarights:datarights@127.0.0.1/postgres; each test gets a database
of its own; .ci/run starts one and sets DATARIGHTS_REQUIRE_POSTGRES=1, so there a missing server fails)."""


@pytest.fixture(params=BACKENDS)
def ledger_location(request, tmp_path, monkeypatch):
    """Where a test's ledger lives: an SQLite file, or a fresh PostgreSQL database (dropped afterwards)."""
    if request.param == "sqlite":
        yield tmp_path / "l.db"
        return
    admin = os.environ.get("DATARIGHTS_TEST_POSTGRES")
    if not admin:
        if os.environ.get("DATARIGHTS_REQUIRE_POSTGRES") == "1":
            pytest.fail("a PostgreSQL server is required here: set DATARIGHTS_TEST_POSTGRES (see .ci/run)")
        pytest.skip("no PostgreSQL server (set DATARIGHTS_TEST_POSTGRES to an admin URL to run these)")
    import uuid

    psycopg = pytest.importorskip("psycopg")
    from sqlalchemy.engine import make_url

    name = f"dr_test_{uuid.uuid4().hex[:12]}"
    dsn = make_url(admin).set(drivername="postgresql")
    with psycopg.connect(dsn.render_as_string(hide_password=False), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    monkeypatch.setenv("DATARIGHTS_LEDGER_HOME", str(tmp_path / "home"))
    yield dsn.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(dsn.render_as_string(hide_password=False), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
