"""The READMEs stay true: the core snippet runs, no machine paths, CI runs the README's test command, install pins."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def block_after(heading: str, lang: str) -> str:
    """The first ```lang block after a heading of README.md."""
    rest = README[README.index(heading):]
    return re.search(rf"```{lang}\n(.*?)```", rest, re.S).group(1)


def run_snippet(code: str, script: Path, cwd: Path) -> subprocess.CompletedProcess:
    """A README block run as printed, in a fresh interpreter importing this checkout, offline, one thread."""
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_the_core_snippet_runs_as_written(tmp_path):
    proc = run_snippet(block_after("## The core", "python"), tmp_path / "snippet.py", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tokens, critical, rows = proc.stdout.split(maxsplit=2)
    assert int(tokens) > int(critical) > 0  # a parallel trace: its critical path is shorter than its length


def test_the_api_snippet_runs_as_written_and_answers(tmp_path):
    """The README's Python API block, as printed, on the default model: generate, stream and submit all answer 7."""
    proc = run_snippet(block_after("From Python:", "python"), tmp_path / "api.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, dop, streamed, submitted = proc.stdout.splitlines()
    assert first == streamed == submitted == "Answer: 7"
    assert float(dop) > 1.5  # it forked: one path per remainder


def test_every_python_block_of_the_readme_is_run_above():
    starts = [m.start() for m in re.finditer(r"```python\n", README)]
    tested = [README.index(h) for h in ("## The core", "From Python:")]
    assert len(starts) == len(tested), "a new ```python block in README.md: run it in a test here"
    assert all(a < b for a, b in zip(tested, starts))  # the blocks block_after() finds are those two


def test_no_machine_paths_in_the_readmes():
    for readme in ROOT.glob("**/README.md"):
        text = readme.read_text(encoding="utf-8")
        assert not re.search(r"(?<![.\w])/(work|home|root|Users)/", text), readme  # relative paths only: a clone has no machine layout


def test_ci_runs_the_readme_commands_in_a_fresh_clone():
    first, second = block_after("# multiverse", "bash").splitlines()[:2]
    assert "multiverse generate" in first and "python -m pytest" in second
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert first in ci and second in ci
    assert "git clone" in ci and "mktemp -d" in ci and "-m venv" in ci  # a temporary folder: nothing beside the clone


def test_install_section_matches_the_pin():
    pin = re.search(r"^torch==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    install = README[README.index("## Install"):README.index("## Layout")]
    assert f"pip install torch=={pin} --index-url https://download.pytorch.org/whl/cpu" in install
    assert f"`torch=={pin}`" in install


def test_ci_script_is_valid_bash_and_installs_the_cpu_build_like_the_readme():
    run = ROOT / ".ci" / "run"
    assert subprocess.run(["bash", "-n", str(run)]).returncode == 0
    assert "--index-url https://download.pytorch.org/whl/cpu" in run.read_text(encoding="utf-8")


def test_version_matches_pyproject():
    import tomllib

    import multiverse

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert multiverse.__version__ == project["version"]
    assert any(d.startswith("pydantic") for d in project["dependencies"])  # the typed config layer needs it
