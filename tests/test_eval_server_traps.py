"""`--backend openai` against a scripted server on 127.0.0.1: requests flow up to --concurrency with no batch
barrier, the server's context length caps each request, and a server that strips the structure tags is warned of."""
from __future__ import annotations

import argparse
import json

from multiverse.evaluation import load_task
from multiverse.evaluation.cli import add_arguments, run
from tests.eval_support import EvalServer, user_text

QUESTIONS = load_task("remainders", limit=12)
SLOW = QUESTIONS[0].question


def _run(tmp_path, url: str, *argv: str) -> tuple[list[dict], dict]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "out"
    args = parser.parse_args(["--backend", "openai", "--url", url, "--tasks", "remainders", "--out", str(out),
                              "--no-progress", *argv])
    assert run(args) == 0
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    return records, json.loads((out / "summary.json").read_text())


def test_requests_flow_up_to_concurrency_without_a_batch_barrier(tmp_path) -> None:
    """--concurrency 4 with --batch-size 2: 4 requests in flight (not 2), and while the first (slow) request
    runs, the other 11 all finish: nothing waits for a batch's slowest."""
    def reply(body):
        return "Answer: 1", (4.0 if user_text(body) == SLOW else 0.05)  # 11 fast ones fit in 4 s under load

    with EvalServer(reply) as server:
        records, _ = _run(tmp_path, server.url, "--limit", "12", "--concurrency", "4", "--batch-size", "2")
    assert len(records) == 12
    assert server.max_in_flight == 4
    assert server.finished[-1] == SLOW  # the other 11 went past it
    assert max(server.in_flight_when_finished[:-1]) == 4  # the pool stayed full while work remained


def test_server_context_length_caps_the_budget(tmp_path) -> None:
    """The server says max_model_len 200: every request's max_tokens and critical budget fit 200 - prompt."""
    with EvalServer(lambda body: ("Answer: 1", 0.0), max_model_len=200) as server:
        records, summary = _run(tmp_path, server.url, "--limit", "2", "--max-new-tokens", "4096")
    assert summary["backend"]["context_length"] == 200 and "max_model_len" in summary["backend"]["context_source"]
    for body, r in zip(server.bodies, sorted(records, key=lambda r: r["id"])):
        assert body["max_tokens"] <= 200 - 40 and body["max_critical_tokens"] == body["max_tokens"]
    assert all(r["budget"]["max_new_tokens"] < 200 for r in records)
    assert any("4096" in w and "200" in w for w in summary["warnings"])


STRIPPED = ("1: A = 83 mod 5: 83-5=78-5=73, so A=3. 2: B = 58 mod 5: 58-5=53, so B=3. "
            "Total: A=3 B=3:6. Answer: 6")


def test_a_server_that_strips_the_structure_tags_is_warned_of(tmp_path) -> None:
    with EvalServer(lambda body: (STRIPPED, 0.0)) as server:
        records, summary = _run(tmp_path, server.url, "--limit", "3")
    assert all(r["forks"] == 0 for r in records)
    assert any("holds a structure tag" in w and "tiny-multiverse" in w for w in summary["warnings"])
    tagged = ("<Parallel><Goal><Outline>1: A</Outline><Outline>2: B</Outline></Goal><Path>1: A=3</Path>"
              "<Path>2: B=3</Path><Conclusion></Conclusion></Parallel> Answer: 6")
    with EvalServer(lambda body: (tagged, 0.0)) as server:
        records, summary = _run(tmp_path / "kept", server.url, "--limit", "3")
    assert all(r["forks"] == 1 for r in records) and summary["warnings"] == []
    with EvalServer(lambda body: (tagged, 0.0)) as server:
        _, summary = _run(tmp_path / "skipping", server.url, "--limit", "1", "--request-extra", "{}")
    assert any("skip special tokens" in w for w in summary["warnings"])
