"""One `multiverse eval` run from resolved settings: build backends, run, summarise, write.

summary.json records what the numbers came from: the settings, package versions, the model's sha256, the data
(each task's file sha256 or hub revision, and the sha256 of the problems asked), the harness's git commit, and
every warning printed during the run (context caps, structure tags a server stripped)."""
from __future__ import annotations

import os
import sys
import time
from typing import Any

from rich.console import Console

from multiverse.evaluation.backends import Backend, make_backend
from multiverse.evaluation.protocol import EvalConfig, baseline_protocol
from multiverse.evaluation.provenance import harness_commit, model_fingerprint, versions, write_json
from multiverse.evaluation.records import RecordFile
from multiverse.evaluation.tasks import Problem


class Session:
    def __init__(self, settings: dict[str, Any], out_dir: str, progress: bool, api_key: str = "EMPTY") -> None:
        self.s, self.out, self.progress, self.api_key = settings, out_dir, progress, api_key
        self.config = EvalConfig(**settings["protocol"])
        self._baseline: Backend | None = None  # built on first use
        self.console = Console(width=None if sys.stdout.isatty() else 160)
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        """Printed (stderr) and kept for summary.json."""
        if message not in self.warnings:
            self.warnings.append(message)
            Console(stderr=True, width=self.console.width).print(f"warning: {message}", markup=False, highlight=False)

    def backend(self, model: str, url: str | None, parallel: bool = True) -> Backend:
        s = self.s
        if s["backend"] == "openai":
            from multiverse.tokens import load_tagged_tokenizer

            tok = load_tagged_tokenizer(s["tokenizer"] or model)
            return make_backend("openai", url=url, tokenizer=tok, served_model=s["served_model"], api_key=self.api_key,
                                concurrency=s["concurrency"], max_retries=s["max_retries"], extra_body=s["request_extra"],
                                model_dir=s["tokenizer"] or model)
        kv = {k: s.get(k) for k in ("num_pages", "kv_memory_fraction") if s.get(k) is not None}
        return make_backend(s["backend"], model=model, device=s["device"], url=url, parallel=parallel,
                            client=s.get("sglang"), **kv)  # client None in an older run's config: its defaults

    def run(self, problems: list[tuple[str, Problem]] | None = None, data: dict[str, Any] | None = None) -> int:
        if problems is None:  # the CLI loads them before the output folder exists
            from multiverse.evaluation.sources import load_problems

            problems, data = load_problems(self.s)
        model = self.backend(self.s["model"], self.s["url"])
        summary: dict[str, Any] = {
            "settings": self.s,
            "versions": versions(),
            "harness": harness_commit(),
            "model": model_fingerprint(self.s["model"]),
            "data": data,
            "backend": model.describe(),
        }
        if self.s["budgets"]:
            summary["budget_sweep"] = self.sweep(model, problems)
        elif self.s.get("sweep"):
            summary["control_sweep"] = self.control_sweep(model, problems)
        else:
            summary["tasks"] = self.evaluate(model, problems, self.config)
            if self.s["baseline_model"]:
                summary["baseline_tasks"] = self.evaluate(self.baseline(), problems, self.baseline_config(), "baseline")
        if self.s["compare_sequential"]:
            summary["speed"] = self.speed(model, problems)
        summary["warnings"] = self.warnings
        summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        path = os.path.join(self.out, "summary.json")
        write_json(path, summary)
        self.console.print(f"wrote {path}")
        return 0

    def baseline(self) -> Backend:
        """The --baseline-model backend (without forks unless --baseline-forks); built once."""
        if self._baseline is None:
            forks = bool(self.s.get("baseline_forks"))
            self._baseline = self.backend(self.s["baseline_model"], self.s["baseline_url"], parallel=forks)
        return self._baseline

    def baseline_config(self) -> EvalConfig:
        return baseline_protocol(self.config, self.s["baseline_suffix"])

    def evaluate(
        self, backend: Backend, problems: list[tuple[str, Problem]], config: EvalConfig, label: str = ""
    ) -> dict[str, Any]:
        """Records under OUT (the baseline's under OUT/baseline); summaries with the run's wall time per question
        (at --batch-size: decoded together, so this is throughput, not a request's latency)."""
        from multiverse.evaluation.report import print_table, summarise
        from multiverse.evaluation.runner import run_samples

        records = RecordFile(os.path.join(self.out, label, "records.jsonl"))
        start, before = time.perf_counter(), len(records.records)
        done = run_samples(backend, problems, config, records, desc=label or "eval", progress=self.progress, warn=self.warn)
        self.check_tags(backend, done, label)
        wall, decoded = time.perf_counter() - start, len(records.records) - before
        summaries = summarise(done, config.samples)
        for s in summaries.values():  # a resumed run times only what it decoded now
            s["run_wall_per_sample_s"] = wall / decoded if decoded else None
        title = f"multiverse eval: {label} ({_name(self.s['baseline_model'])})" if label else "multiverse eval"
        print_table(summaries, config.samples, self.console, title=title)
        for task, s in summaries.items():
            e = s.get("entropy")
            if e and e["auroc_path_entropy"] is not None:
                stop = e["early_stop"][-1]
                self.console.print(f"{task}: AUROC of path entropy vs wrong answer {e['auroc_path_entropy']:.3f} ({e['samples']} "
                                   f"samples); an entropy stop at h={stop['threshold']:.3g} saves {stop['saved_fraction']:.1%} of "
                                   f"the tokens and loses {stop['stopped_correct']} right answers")
        return summaries

    def check_tags(self, backend: Backend, records: list[dict[str, Any]], label: str) -> None:
        """A server backend's outputs of a Multiverse model without their structure tags: warned, never silent."""
        if backend.name != "openai":
            return
        from multiverse.evaluation.tagcheck import stripped_tags

        model = self.s["baseline_model"] if label == "baseline" else self.s["tokenizer"] or self.s["model"]
        for message in stripped_tags(records, model, getattr(backend, "extra_body", None)):
            self.warn(message)

    def sweep(self, model: Backend, problems: list[tuple[str, Problem]]) -> dict[str, Any]:
        from multiverse.evaluation.sweep import Arm, budget_sweep, plot, table

        arms = [Arm("model", model, self.config, _name(self.s["model"]))]
        if self.s["baseline_model"]:
            arms.append(Arm("baseline", self.baseline(), self.baseline_config(), _name(self.s["baseline_model"])))
        rows = budget_sweep(arms, problems, self.s["budgets"], self.s["budget_kind"], self.out, self.progress,
                            self.warn)
        text = table(rows)
        with open(os.path.join(self.out, "budget_sweep.md"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        pngs = plot(rows, self.out)
        self.console.print(text, markup=False, highlight=False)
        for p in pngs:
            self.console.print(f"wrote {p}")
        write_json(os.path.join(self.out, "budget_sweep.json"), rows)
        return {"rows": rows, "plots": pngs}

    def control_sweep(self, model: Backend, problems: list[tuple[str, Problem]]) -> dict[str, Any]:
        from multiverse.evaluation import control_sweep as cs

        rows = cs.control_sweep(model, problems, self.config, self.s["sweep"], self.out, self.progress)
        text = cs.table(rows)
        with open(os.path.join(self.out, "control_sweep.md"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        png = cs.plot(rows, self.out)
        self.console.print(text, markup=False, highlight=False)
        self.console.print(f"wrote {png}")
        write_json(os.path.join(self.out, "control_sweep.json"), rows)
        return {"rows": rows, "plot": png}

    def speed(self, backend: Backend, problems: list[tuple[str, Problem]]) -> dict[str, Any]:
        from multiverse.evaluation.speed import compare_sequential, print_speed

        chosen = problems[: self.s["speed_questions"]]
        path = os.path.join(self.out, "speed.jsonl")
        if os.path.exists(path):
            os.remove(path)  # timings are remeasured whole: a resumed run times every pair again
        if self.s["baseline_model"]:  # the twin, prompted as it was trained
            sequential, seq_config = self.baseline(), self.baseline_config()
        else:  # the same model with forks off: a ratio, never called a speedup over a baseline
            sequential, seq_config = backend.sequential(), self.config
        result = compare_sequential(backend, sequential, chosen, self.config, self.s["speed_rounds"], path,
                                    self.progress, sequential_config=seq_config, batch_size=self.s["speed_batch_size"],
                                    baseline=bool(self.s["baseline_model"]))
        self.console.print(print_speed(result), markup=False, highlight=False)
        return result


def _name(model: str) -> str:
    return os.path.basename(os.path.normpath(model))
