"""structure="constrained" as one xgrammar EBNF grammar on token ids: the form SGLang's `ebnf` parameter takes.

It is the language of the hand-written automaton (engine/structure_mask.py); tests/test_structure_grammar.py checks
that xgrammar's GrammarMatcher allows exactly the tokens the automaton allows, at every position of fuzzed
traces. Tags are matched by id (`Token(296)`) and text is any other token (`ExcludeToken(<the 12 tags>, <eos>)`),
so a tag spelled in plain characters is text, as the engine sees it. In tag names (K = the next label: "1", "2"
at the top, "1.1", "1.2" inside path "1"; `max_paths` bounds k):

    text      ::= any token but a tag or EOS
    item      ::= text | block                           (block only where a fork may start: parallel, max_depth)
    root      ::= item* ( <Think> item* </Think> item* )?  (EOS ends it outside <Think> only)
    block     ::= <Parallel> <Goal> text* outline_1
    outline_k ::= <Outline> "K:" text* </Outline> ( outline_k+1 | </Goal> after_k )
    after_k   ::= path_1 ... path_k <Conclusion> text* </Conclusion> </Parallel>        (whole trace)
    path_K    ::= <Path> "K:" item* </Path>               (its blocks label their outlines "K.1", "K.2", ...)

Two forms of it: `trace_grammar` is a whole generation (paths inline, SPEC §2); `branch_grammar` is what ONE
branch writes from its automaton's state, which is what an SGLang call decodes: there `after_k` is only
`<Conclusion> text* </Conclusion> </Parallel>` (the paths are other branches' calls; the engine forces
`<Conclusion>` at the merge) and a path ends `item* </Path>?` (an EOS closes a path, as in the engine).
Labels are data, so a grammar counts outlines: with `max_paths=None` it unrolls UNBOUNDED_PATHS of them
(the automaton alone has no bound), and the whole-trace form unrolls nesting to `trace_depth` when
`max_depth=None`.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from engine.structure_mask import Phase, StructureGuard
from multiverse.attention.scanner import StructureRules
from multiverse.tags import StructureVocab

UNBOUNDED_PATHS = 32  # outlines per block a grammar unrolls when max_paths is None


class _Writer:
    """Builds the rules of one grammar; `inline` = whole trace (paths inside their block) or one branch."""

    def __init__(self, vocab: StructureVocab, eos_ids: Iterable[int], rules: StructureRules, inline: bool,
                 max_paths: int | None = None, max_depth: int | None = None) -> None:
        self.vocab, self.t, self.inline = vocab, vocab.tags, inline
        self.parallel = rules.parallel
        self.paths = max_paths or rules.max_paths or UNBOUNDED_PATHS
        self.depth = max_depth if max_depth is not None else rules.max_depth
        banned = sorted(set(self.t.all()) | set(eos_ids))
        self.rules: dict[str, str] = {"text": f"ExcludeToken({', '.join(map(str, banned))})"}

    # ------------------------------------------------------------------ pieces
    def tok(self, *ids: int) -> str:
        return " ".join(f"Token({i})" for i in ids)

    def label_ids(self, name: str) -> str:
        return self.tok(*self.vocab.encode(f"{name}:"))

    @staticmethod
    def key(label: str) -> str:
        return label.replace(".", "_") if label else "r"

    @staticmethod
    def name(label: str, k: int) -> str:
        return f"{label}.{k}" if label else str(k)

    def may_fork(self, label: str) -> bool:
        depth = label.count(".") + 1 if label else 0  # blocks enclosing a branch: the root 0, path "1.2" 2
        return self.parallel and (self.depth is None or depth + 1 <= self.depth)

    def add(self, name: str, body: str) -> str:
        self.rules.setdefault(name, body)
        return name

    # ------------------------------------------------------------------ rules
    def item(self, label: str) -> str:
        """One unit of a branch's text: a token, or a whole block where a fork may start."""
        if not self.may_fork(label):
            return "text"
        name = f"item_{self.key(label)}"
        if name not in self.rules:
            self.rules[name] = ""  # reserved first: the block below refers back to items of nested paths
            self.rules[name] = f"text | {self.block(label)}"
        return name

    def block(self, label: str) -> str:
        t = self.t
        return self.add(f"block_{self.key(label)}", f"{self.tok(t.parallel_open, t.goal_open)} text* {self.outline(label, 1)}")

    def outline(self, label: str, k: int) -> str:
        """Outline k (its forced label, text, `</Outline>`), then what may follow k outlines."""
        name = f"o_{self.key(label)}_{k}"
        if name not in self.rules:
            self.rules[name] = ""
            body = f"{self.tok(self.t.outline_open)} {self.label_ids(self.name(label, k))} text* {self.tok(self.t.outline_close)}"
            self.rules[name] = f"{body} {self.goal(label, k)}"
        return name

    def goal(self, label: str, k: int) -> str:
        """After k outlines: another outline (within max_paths) or `</Goal>` and the rest of the block."""
        ways = [self.outline(label, k + 1)] if k < self.paths else []
        ways.append(f"{self.tok(self.t.goal_close)} {self.after(label, k)}")
        return self.add(f"g_{self.key(label)}_{k}", " | ".join(f"({w})" for w in ways))

    def after(self, label: str, k: int) -> str:
        t = self.t
        end = self.add("conclusion", f"{self.tok(t.conclusion_open)} text* {self.tok(t.conclusion_close, t.parallel_close)}")
        if not self.inline:
            return end
        paths = " ".join(self.path(self.name(label, i)) for i in range(1, k + 1))
        return self.add(f"a_{self.key(label)}_{k}", f"{paths} {end}")

    def path(self, label: str) -> str:
        t = self.t
        body = f"{self.tok(t.path_open)} {self.label_ids(label)} {self.item(label)}* {self.tok(t.path_close)}"
        return self.add(f"p_{self.key(label)}", body)

    def root_text(self, think: int) -> str:
        """The root's text from its <Think> state: 0 before <Think>, 1 inside, 2 after </Think>."""
        item, t = self.item(""), self.t
        self.add("r2", f"{item}*")
        self.add("r1", f"{item}* {self.tok(t.think_close)} r2")
        self.add("r0", f"{item}* ({self.tok(t.think_open)} r1)?")
        return f"r{think}"

    def path_text(self, label: str) -> str:
        """A path branch's own text; `</Path>` (or an EOS, which the engine turns into it) ends it."""
        return self.add(f"pt_{self.key(label)}", f"{self.item(label)}* {self.tok(self.t.path_close)}?")


def trace_grammar(vocab: StructureVocab, eos_ids: Iterable[int], rules: StructureRules = StructureRules(),
                  max_paths: int | None = None, trace_depth: int = 2) -> str:
    """The EBNF of a whole generation under structure="constrained" (paths inline, as SPEC §2 writes them).
    `max_paths`/`trace_depth` bound what `rules` leaves unbounded (the grammar grows as paths**depth)."""
    depth = rules.max_depth if rules.max_depth is not None else trace_depth
    w = _Writer(vocab, eos_ids, rules, inline=True, max_paths=max_paths, max_depth=depth)
    w.rules["root"] = w.root_text(0)
    return _rooted(w)


def branch_grammar(guard: StructureGuard) -> str:
    """The EBNF of what the branch `guard` follows may still write, from the guard's current state (the `ebnf`
    of one SGLang call on that branch's visible ids)."""
    w = _Writer(guard.vocab, guard.eos_ids, guard.rules, inline=False)
    label, t, phase, k = guard.label, guard.vocab.tags, guard.phase, guard.outlines
    rest = w.path_text(label) if label else w.root_text(guard.think)
    if phase is Phase.TEXT:
        start = rest
    elif phase is Phase.OPENED:
        start = f"{w.tok(t.goal_open)} text* {w.outline(label, 1)} {rest}"
    elif phase is Phase.GOAL:
        start = f"text* {w.outline(label, 1)} {rest}" if k == 0 else f"{w.goal(label, k)} {rest}"
    elif phase in (Phase.LABEL, Phase.OUTLINE):
        forced = w.tok(*guard.forced) if phase is Phase.LABEL else ""
        start = f"{forced} text* {w.tok(t.outline_close)} {w.goal(label, k)} {rest}"
    elif phase is Phase.CONCLUSION:
        start = f"text* {w.tok(t.conclusion_close, t.parallel_close)} {rest}"
    elif phase is Phase.CLOSE:
        start = f"{w.tok(t.parallel_close)} {rest}"
    else:  # WAIT: the branch's next token is forced by the engine (a fork's prefix or the merge's <Conclusion>)
        raise ValueError(f"branch {label or 'root'!r} waits for a forced token; it has no grammar to sample from")
    w.rules["root"] = " ".join(start.split())
    return _rooted(w)


def _rooted(w: _Writer) -> str:
    """The rules with `root` first (xgrammar's default start symbol)."""
    ordered = {"root": w.rules.pop("root"), **w.rules}
    return "\n".join(f"{name} ::= {body}" for name, body in ordered.items()) + "\n"


def readable(grammar: str, vocab: StructureVocab, tokenizer: object) -> str:
    """The grammar with tag ids written as their tags and label tokens as text (for documentation)."""
    names = {i: tokenizer.convert_ids_to_tokens(i) for i in vocab.tags.all()}  # type: ignore[attr-defined]

    def show(m: re.Match) -> str:
        i = int(m.group(1))
        return names.get(i) or repr(tokenizer.decode([i]))  # type: ignore[attr-defined]

    grammar = re.sub(r"ExcludeToken\([^)]*\)", "<any token but a tag or EOS>", grammar)
    return re.sub(r"Token\((\d+)\)", show, grammar)


def main(argv: list[str] | None = None) -> None:
    """`python -m engine.grammar [--model DIR] [--max-paths N] [--max-depth D] [--ids]`: print the whole-trace grammar
    of a model's tokenizer (the shipped model by default), with tags written out unless --ids."""
    import argparse

    from transformers import AutoTokenizer, GenerationConfig

    from engine.driver import eos_ids
    from multiverse.demo import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="python -m engine.grammar", description=main.__doc__)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--max-paths", type=int, default=3)
    parser.add_argument("--max-depth", type=int, default=2)
    parser.add_argument("--ids", action="store_true", help="the grammar as xgrammar/SGLang take it (token ids)")
    args = parser.parse_args(argv)
    tok = AutoTokenizer.from_pretrained(args.model)
    try:
        eos = eos_ids(tok, GenerationConfig.from_pretrained(args.model))
    except OSError:  # no generation_config.json: the tokenizer's eos alone
        eos = eos_ids(tok)
    vocab = StructureVocab.from_tokenizer(tok)
    grammar = trace_grammar(vocab, eos, StructureRules(max_paths=args.max_paths, max_depth=args.max_depth))
    print(grammar if args.ids else readable(grammar, vocab, tok), end="")


if __name__ == "__main__":
    main()
