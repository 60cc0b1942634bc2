"""Where a trained reproduction model errs: teacher-forced loss per kind of token on remainders rows.

    python -m multiverse.demo.diagnose --model runs/repro/multiverse --rows runs/repro/heldout.jsonl --limit 60
    python -m multiverse.demo.diagnose --model runs/repro/autoregressive --twin --rows ... --limit 60

Each row is encoded as training encodes it (the Multiverse trace, or with --twin its sequential twin), run through
the model once with the training masks and positions, and every target token is put in one kind:

- forced: `<Path> LABEL :` and `<Conclusion>`, which the engine writes itself (SPEC §5); sibling paths share the
  context of their `<Path>`, so its label cannot be predicted and this loss does not fall to 0;
- copy: the definition a path (or a line of the twin) restates from the question, up to its ':';
- step: the subtractions; value: the name and value after ', so'; total: the sum after the block;
- other: tags, outlines and the answer.

Each kind reports tokens, mean loss and argmax errors. Besides, `repeated` splits the target tokens by whether the
same 6 tokens (5 before it and itself) already occur where the predicting token can attend: the twin sees its
earlier paths, so part of its text repeats in view and can be copied; a Multiverse path cannot see its siblings.
`copy_by_path` splits the copy tokens by the label of the path they are in ("-": outside every path), so a model
that restates one path's operand badly (e.g. every path 4 of a wide block) shows it. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads when a model is scored: a bad flag or path comes back at once
    import torch

GRAM = 6  # tokens matched by `repeated`: five of context and the target


def kind_of(text: str, target: str, forced: bool) -> str:
    """Kind of the target token `target` that follows `text` (the decoded assistant turn before it)."""
    if forced:
        return "forced"
    if target.startswith("<") and target.endswith(">") or "<Goal>" in text and "<Path>" not in text:
        return "other"  # a tag, or inside the first goal (its outlines)
    seg = re.split(r"<Path>|\n|</Parallel>", text)[-1]  # the current path, line, or text after a block
    if "Total:" in seg:
        return "total"
    if ", so" in seg:
        return "value"
    body = re.sub(r"^\d+(\.\d+)*: ", "", seg)  # a Multiverse path's label (forced) is not part of it
    if ":" not in body and body.strip():
        return "copy"
    return "step" if "-" in body or "+" in body else "other"


def _seen(ids: list[int], visible: torch.Tensor, i: int, first: int) -> bool:
    """Does ids[i-GRAM+1 .. i] occur, ending at a position the predictor of token i can attend (before i-1)?"""
    gram = ids[i - GRAM + 1:i + 1]
    return any(ids[j - GRAM + 1:j + 1] == gram for j in visible.nonzero().flatten().tolist()
               if first + GRAM - 1 <= j < i - 1)


def path_label(text: str) -> str:
    """Label of the innermost path open at the end of `text` ("-" when none is open)."""
    depth_labels: list[str] = []
    for m in re.finditer(r"<Path>([\d.]+):|</Path>", text):
        if m.group(1):
            depth_labels.append(m.group(1))
        elif depth_labels:
            depth_labels.pop()
    return depth_labels[-1] if depth_labels else "-"


def _score(model: Any, tokenizer: Any, batch: dict[str, Any], forced: set[int], ignore: int,
           kinds: dict[str, list[float]], repeated: dict[str, list[float]], by_path: dict[str, list[int]]) -> None:
    """Add one encoded row's target tokens to the per-kind, repeated/fresh and copy-per-path sums."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       attention_mask=batch["attention_mask"]).logits[0]
    logp = torch.log_softmax(logits.float(), -1)  # [L, V]; row i predicts token i + 1
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    mask = batch["attention_mask"][0, 0]  # [L, L], True = may attend
    first = next(i for i, t in enumerate(labels) if t != ignore)  # the assistant turn starts here
    pieces = [tokenizer.decode([t]) for t in ids]
    for i in range(first, len(ids)):
        if labels[i] == ignore:
            continue
        loss = -logp[i - 1, ids[i]].item()
        text = "".join(pieces[first:i])
        kind, wrong = kind_of(text, pieces[i], i in forced), int(logp[i - 1].argmax().item() != ids[i])
        k = kinds[kind]
        k[0] += 1
        k[1] += loss
        k[2] += wrong
        if kind == "copy":
            p = by_path[path_label(text)]
            p[0] += 1
            p[1] += wrong
        r = repeated["repeated" if i >= first + GRAM and _seen(ids, mask[i - 1], i, first) else "fresh"]
        r[0] += 1
        r[1] += loss


def diagnose(model: Any, tokenizer: Any, rows: list[dict[str, Any]], twin: bool) -> dict[str, Any]:
    from multiverse.attention import layout
    from training.collator import CollatorConfig, MultiverseCollator
    from training.config import DataConfig, PromptConfig
    from training.data import multiverse_examples
    from training.encoding import IGNORE, encode_example

    cfg = DataConfig(prompt=PromptConfig(multiverse_suffix="", autoregressive_suffix=""))
    collate = MultiverseCollator(tokenizer, CollatorConfig(pad_id=tokenizer.pad_token_id or 0, parallel=not twin))
    kinds: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0])  # tokens, loss sum, argmax errors
    repeated: dict[str, list[float]] = {"fresh": [0, 0.0], "repeated": [0, 0.0]}  # tokens, loss sum (both reported)
    by_path: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # path label -> copy tokens, argmax errors
    for ex in multiverse_examples(rows, "rows", cfg, twin):
        batch = collate([encode_example(ex, tokenizer, cfg)])
        forced = set() if twin else set(layout(batch["input_ids"][0], tokenizer).forced)
        _score(model, tokenizer, batch, forced, IGNORE, kinds, repeated, by_path)
    return {
        "rows": len(rows),
        "kinds": {k: {"tokens": v[0], "loss": round(v[1] / v[0], 5), "wrong": v[2]} for k, v in sorted(kinds.items())},
        "repeated": {k: {"tokens": v[0], "loss": round(v[1] / v[0], 5) if v[0] else None} for k, v in repeated.items()},
        "copy_by_path": {k: {"tokens": v[0], "wrong": v[1]} for k, v in sorted(by_path.items())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m multiverse.demo.diagnose", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--twin", action="store_true", help="encode the sequential twins (the autoregressive model)")
    parser.add_argument("--rows", help="a .jsonl of remainders rows (default: the held-out split)")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    args = parser.parse_args(argv)
    from multiverse.cli import run_module

    return run_module("demo.diagnose", lambda: _run(args), args.debug)


def _run(args: argparse.Namespace) -> None:
    from multiverse.errors import UsageError, check_model_path

    check_model_path(args.model)  # a missing model: one line, exit 2
    if args.rows and not os.path.isfile(args.rows):
        raise UsageError(f"--rows {args.rows}: no such file")
    if args.limit < 1:
        raise UsageError(f"--limit {args.limit}: must be >= 1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.rows:
        with open(args.rows, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()][: args.limit]
    else:
        from multiverse.demo.remainders import held_out_rows

        rows = held_out_rows(args.limit)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    report = diagnose(model, AutoTokenizer.from_pretrained(args.model), rows, args.twin)
    print(json.dumps({"model": args.model, "twin": args.twin, **report}))


if __name__ == "__main__":
    sys.exit(main())
