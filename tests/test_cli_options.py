"""CLI option wiring: Algorithm 2's --rounds/--rate, nothing-to-do usage errors, stats --load, no bars off a tty."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "models" / "tiny.prototxt"
IMAGES = REPO / "examples" / "images" / "list.txt"
BAR_MARKS = ("it/s", "s/it", "%|", "\r", "█")
SMALL = ("--data", IMAGES, "--num-images", 8, "--batch-size", 4, "--backend", "torch")


def run_cli(*args):
    """`python -m magic_init ARGS` in a fresh process; its stderr is a pipe, not a terminal."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "magic_init", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


def test_cli_defaults_for_rounds_and_rate_are_the_api_defaults():
    from magic_init.algorithm import initialize, rescale
    from magic_init.choices import INIT_KINDS, RATE_DEFINITIONS
    from magic_init.cli import init_command

    options = {p.name: p for p in init_command.params}
    assert tuple(options["rate"].type.choices) == RATE_DEFINITIONS      # one list, read by both
    assert tuple(options["init"].type.choices) == INIT_KINDS
    for api in (initialize, rescale):
        defaults = inspect.signature(api).parameters
        assert options["rounds"].default == defaults["rounds"].default
        assert options["rate"].default == defaults["rate"].default
    # every option the API shares with the CLI has the same default (the CLI's --tol is relative,
    # the API's a log distance; --memory-limit is max_patch_mb)
    defaults = inspect.signature(initialize).parameters
    renamed = {"memory_limit": "max_patch_mb"}
    shared = [name for name in options if renamed.get(name, name) in defaults and name != "tol"]
    assert len(shared) >= 12, shared
    for name in shared:
        assert options[name].default == defaults[renamed.get(name, name)].default, name
    import math
    assert math.log1p(options["tol"].default) == pytest.approx(defaults["tol"].default)


@pytest.mark.parametrize("flags", [("--load", "FULL", "--no-between-layer"),
                                   ("--no-within-layer", "--no-between-layer")])
def test_nothing_to_do_is_a_usage_error(tmp_path, flags):
    """A --load model that provides every layer with --no-between-layer leaves nothing to do."""
    if "FULL" in flags:
        full = tmp_path / "full.caffemodel"
        assert run_cli(TINY, full, *SMALL, "--no-between-layer").returncode == 0
        flags = [str(full) if f == "FULL" else f for f in flags]
    result = run_cli(TINY, tmp_path / "out.caffemodel", "--data", IMAGES, *flags)
    assert result.returncode == 2, result.stderr
    assert "nothing to do" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.caffemodel").exists()


def test_bad_rate_and_rounds_are_usage_errors(tmp_path):
    assert run_cli(TINY, tmp_path / "o.caffemodel", "--rate", "bogus", *SMALL).returncode == 2
    assert run_cli(TINY, tmp_path / "o.caffemodel", "--rounds", 0, *SMALL).returncode == 2


def test_init_with_rounds_and_rate_then_stats_with_load_and_no_bars_off_a_terminal(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "tiny.caffemodel"
    result = run_cli(TINY, out, "--rounds", 1, "--rate", "eq4", *SMALL)
    assert result.returncode == 0, result.stderr
    assert out.exists()
    assert "Algorithm 2" not in result.stderr and not any(m in result.stderr for m in BAR_MARKS), result.stderr
    stats = run_cli("stats", TINY, "--load", out, *SMALL)
    assert stats.returncode == 0, stats.stderr
    assert "conv1" in stats.stdout and "change-rate spread" in stats.stdout
    assert not any(m in stats.stderr for m in BAR_MARKS), stats.stderr
    rescaled = run_cli(TINY, tmp_path / "rescaled.caffemodel", "--load", out, "-q", *SMALL)
    assert rescaled.returncode == 0 and rescaled.stderr == "", rescaled.stderr


def run_cli_on_a_terminal(*args):
    """Run the CLI with stderr on a pseudo-terminal; returns (exit code, what it wrote to stderr)."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    # a fresh pty is 0 x 0, and tqdm draws nothing 0 columns wide: make it 24 x 100
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "magic_init", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closes when the process exits
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(timeout=600), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_bars_on_a_terminal_unless_quiet(tmp_path):
    pytest.importorskip("torch")
    code, err = run_cli_on_a_terminal(TINY, tmp_path / "a.caffemodel", *SMALL)
    assert code == 0, err
    for label in ("loading sample", "Algorithm 1", "Algorithm 2, round 1/2"):
        assert label in err, err[-2000:]
    code, err = run_cli_on_a_terminal(TINY, tmp_path / "b.caffemodel", "--quiet", *SMALL)
    assert code == 0, err
    assert not any(m in err for m in BAR_MARKS + ("Algorithm",)), err


def test_fast_mode_runs_one_round_with_fewer_patches(tmp_path):
    out = tmp_path / "fast.caffemodel"
    result = run_cli(TINY, out, "--init", "kmeans", "--fast", "-v", *SMALL)
    assert result.returncode == 0, result.stderr
    assert "over 1 measurement round(s)" in result.stderr
    assert out.exists()


@pytest.mark.parametrize("flags, patches, rank", [((), 5000, 2.0), (("--max-patches", 300, "--whitening-rank", 1), 300, 1.0),
                                                  (("--max-patches", 300, "--fast"), 300, 2.0),
                                                  (("--fast",), 2000, 2.0)])
def test_max_patches_and_whitening_rank_reach_every_data_driven_layer(tmp_path, monkeypatch, flags, patches, rank):
    """--max-patches caps the patches each layer's k-means sees (--fast: at most 2000 of them),
    --whitening-rank is the rank k-means whitens at."""
    pytest.importorskip("torch")
    from magic_init import cli
    from magic_init.algorithm import weight_init

    seen, real = [], weight_init.data_driven_or_reason

    def recording(kind, group_patches, m, rng, eps, rank=weight_init.WHITENING_RANK):
        seen.append((len(group_patches), rank))
        return real(kind, group_patches, m, rng, eps, rank)
    monkeypatch.setattr(weight_init, "data_driven_or_reason", recording)
    try:
        cli.main([str(TINY), str(tmp_path / "out.caffemodel"), "--init", "kmeans", "-q", *map(str, SMALL + flags)])
    except SystemExit as error:
        pytest.fail("exited with %s" % error.code)
    assert seen and set(seen) == {(patches, rank)}
