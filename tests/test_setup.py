"""Installing magic_init (issue 12): the Debian mirror the real-Caffe chroot is built from, the
bundled models and images, the package metadata, the wheel and sdist, PyTorch's build choice, and
README.md's first command run by a fresh non-root user in a fresh clone (slow; CI only)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CAFFE_ENV = REPO / "scripts" / "caffe-env"

try:  # Python 3.11+
    import tomllib
except ImportError:  # pragma: no cover
    tomllib = None


# --- the Debian mirror (scripts/caffe-env mirror) -------------------------------------------------
# Sample apt configurations; every URI is on one reserved test host (RFC 2606 `.example`).

DEBIAN_DEB822 = """\
Types: deb
# http://mirror.example/snapshot/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""

# Security archive first, deb-src and a disabled stanza before the mirror, URIs on continuation lines.
TRICKY_DEB822 = """\
Types: deb
URIs: http://mirror.example/debian-security
Suites: trixie-security
Components: main

Types: deb-src
URIs: http://mirror.example/src/debian
Suites: trixie

Enabled: no
Types: deb
URIs: http://mirror.example/disabled/debian
Suites: trixie

types: deb deb-src
uris:
 https://mirror.example/tricky/debian/
 http://mirror.example/second/debian
suites: trixie trixie-updates
components: main
"""

UBUNTU_DEB822 = """\
Types: deb
URIs: http://mirror.example/ubuntu/
Suites: noble noble-updates noble-backports
Components: main restricted universe multiverse

Types: deb
URIs: http://mirror.example/ubuntu-security/
Suites: noble-security
Components: main restricted universe multiverse
"""

SOURCES_LIST = """\
# deb http://mirror.example/commented/debian bookworm main
deb-src http://mirror.example/src/debian bookworm main
deb http://mirror.example/debian-security bullseye-security main
deb http://mirror.example/debian-security buster/updates main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example:3142/debian/ bookworm main contrib # apt-cacher
deb http://mirror.example/later/debian bookworm main
"""

UBUNTU_LIST = "deb http://mirror.example/ubuntu jammy main universe\n"


def _mirror(*files, env=None):
    environ = {k: v for k, v in os.environ.items() if k != "MAGIC_INIT_DEBIAN_MIRROR"}
    environ.update(env or {})
    return subprocess.run(["bash", str(CAFFE_ENV), "mirror", *map(str, files)], capture_output=True, text=True,
                          env=environ, timeout=60)


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name, text, expected", [
    ("debian.sources", DEBIAN_DEB822, "http://mirror.example/debian"),
    ("tricky.sources", TRICKY_DEB822, "https://mirror.example/tricky/debian"),
    ("sources.list", SOURCES_LIST, "http://mirror.example:3142/debian"),
])
def test_mirror_is_the_first_debian_archive_of_the_apt_sources(tmp_path, name, text, expected):
    proc = _mirror(_write(tmp_path, name, text))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected


def test_mirror_skips_ubuntu_sources_and_takes_the_next_debian_one(tmp_path):
    ubuntu = _write(tmp_path, "ubuntu.sources", UBUNTU_DEB822)
    debian = _write(tmp_path, "debian.sources", DEBIAN_DEB822)
    proc = _mirror(tmp_path / "missing.list", ubuntu, debian)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "http://mirror.example/debian"


def test_mirror_on_ubuntu_is_a_one_line_error_naming_the_override(tmp_path):
    proc = _mirror(_write(tmp_path, "ubuntu.sources", UBUNTU_DEB822), _write(tmp_path, "u.list", UBUNTU_LIST))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "MAGIC_INIT_DEBIAN_MIRROR" in proc.stderr and "no Debian mirror" in proc.stderr


def test_mirror_override_wins(tmp_path):
    proc = _mirror(_write(tmp_path, "ubuntu.sources", UBUNTU_DEB822),
                   env={"MAGIC_INIT_DEBIAN_MIRROR": "http://mirror.example/override/debian/"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "http://mirror.example/override/debian"


def test_mirror_reads_this_machines_apt_configuration():
    """Without FILEs it reads /etc/apt (here a Debian machine): a URL, never a built-in host."""
    files = [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) \
        + sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    expected = _mirror(*[f for f in files if f.exists()])
    proc = _mirror()
    assert proc.returncode == expected.returncode
    assert proc.stdout == expected.stdout
    code = [line for line in CAFFE_ENV.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not any("://" in line for line in code), "caffe-env names a mirror host in its code"


# --- bundled models and images (magic_init.resources) ---------------------------------------------

def test_resources_map_bundled_names_from_any_directory(tmp_path, monkeypatch):
    from magic_init import resources

    monkeypatch.chdir(tmp_path)
    for name in ("models/tiny.prototxt", "examples/images/list.txt", "./models/caffenet.prototxt",
                 "examples/images/chelsea cat.jpg"):
        found = resources.resolve(name)
        assert found != name and os.path.isabs(found), name
        assert Path(found).read_bytes() == (REPO / name).read_bytes()
    for name in ("models/none.prototxt", "tiny.prototxt", "../models/tiny.prototxt", "/models/tiny.prototxt",
                 "models/", "models", "examples/README.md", "prototxt", "-", ""):
        assert resources.resolve(name) == name, name
    assert resources.resolve(None) is None
    assert resources.bundled("models/tiny.prototxt") == resources.resolve("models/tiny.prototxt")


def test_resources_a_file_in_the_current_directory_wins(tmp_path, monkeypatch):
    from magic_init import resources

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.prototxt").write_text("name: 'mine'\n")
    assert resources.resolve("models/tiny.prototxt") == "models/tiny.prototxt"


def test_resources_resolve_argv_maps_inputs_not_outputs(tmp_path, monkeypatch):
    from magic_init import resources

    monkeypatch.chdir(tmp_path)
    tiny = resources.bundled("models/tiny.prototxt")
    images = resources.bundled("examples/images/list.txt")
    argv = ["stats", "models/tiny.prototxt", "--data", "examples/images/list.txt", "--json",
            "models/tiny.prototxt", "--plot=models/tiny.prototxt", "--load=models/tiny.prototxt", "-v"]
    assert resources.resolve_argv(argv) == [
        "stats", tiny, "--data", images, "--json", "models/tiny.prototxt", "--plot=models/tiny.prototxt",
        "--load=" + tiny, "-v"]


def test_every_bundled_file_is_reachable():
    from magic_init import resources

    shipped = sorted(REPO.glob("models/*.prototxt")) + sorted(p for p in (REPO / "examples" / "images").iterdir())
    assert len(shipped) > 10
    for path in shipped:
        name = path.relative_to(REPO).as_posix()
        assert resources.bundled(name) is not None, name


# --- package metadata (pyproject.toml) ------------------------------------------------------------

@pytest.fixture(scope="module")
def pyproject():
    if tomllib is None:
        pytest.skip("tomllib needs Python 3.11")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_pyproject_lists_every_subpackage(pyproject):
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "magic_init").rglob("__init__.py")}
    assert on_disk <= listed, "add to [tool.setuptools] packages: %s" % sorted(on_disk - listed)


def test_pyproject_dependencies_have_lower_bounds_and_match_the_imports(pyproject):
    project = pyproject["project"]
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    for req in reqs:
        if req.startswith("magic_init["):
            continue
        assert ">=" in req or "==" in req, "no lower bound: %s" % req
    assert project["license"] == "BSD-2-Clause"
    assert "BSD 2-Clause" in (REPO / "LICENSE").read_text()
    assert not any("scikit-learn" in r or "sklearn" in r for r in reqs)
    used = subprocess.run(["grep", "-rlE", r"^\s*(import|from)\s+sklearn", str(REPO / "magic_init")],
                          capture_output=True, text=True).stdout
    assert used == "", "magic_init imports scikit-learn again: declare it in pyproject.toml"
    names = {re.split(r"[<>=\[;]", r)[0].strip().lower() for r in project["dependencies"]}
    assert names == {"numpy", "protobuf", "click", "pillow", "tqdm"}
    assert project["scripts"]["magic_init"] == "magic_init.entry:main"
    assert not (REPO / "setup.py").exists()


# --- the wheel and the sdist ------------------------------------------------------------------------

def _tree_copy(dest):
    """The working tree as git sees it (tracked and untracked, not ignored), copied to dest."""
    files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """sdist from a copy of the tree, then the wheel from the unpacked sdist (so the sdist suffices)."""
    try:
        import setuptools
    except ImportError:
        pytest.skip("setuptools not installed")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("building needs setuptools >= 77 (pyproject.toml's build-system)")
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout")
    base = tmp_path_factory.mktemp("pkg")
    tree = base / "tree"
    tree.mkdir()
    _tree_copy(tree)
    dist = base / "dist"
    subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
                    "print(b.build_sdist(sys.argv[1]))", str(dist)], cwd=tree, check=True, capture_output=True)
    sdist = next(dist.glob("*.tar.gz"))
    with tarfile.open(sdist) as tar:
        tar.extractall(base / "unpacked")
    source = next((base / "unpacked").iterdir())
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(dist), str(source)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"sdist": sdist, "wheel": next(dist.glob("*.whl")), "source": source, "base": base}


def test_wheel_carries_the_models_images_and_licence(built):
    names = set(zipfile.ZipFile(built["wheel"]).namelist())
    for path in list(REPO.glob("models/*.prototxt")) + list((REPO / "examples" / "images").iterdir()):
        assert "magic_init/" + path.relative_to(REPO).as_posix() in names, path
    assert "magic_init/resources.py" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "models/", "examples/")) for n in names)


def test_sdist_carries_what_its_tests_need(built):
    with tarfile.open(built["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for name in ("pyproject.toml", "LICENSE", "README.md", "pytest.ini", "Dockerfile", "tests/conftest.py",
                 "tests/test_setup.py", "models/tiny.prototxt", "examples/images/list.txt", "proto/caffe.proto",
                 "scripts/caffe-env", "scripts/setup.sh", "scripts/install-caffe-deps.sh", "bench/train_few_labels.py"):
        assert name in names, name
    assert not any("__pycache__" in n for n in names)


def test_installed_wheel_finds_its_models_from_any_directory(built, tmp_path):
    """The wheel in a fresh venv; its dependencies are this interpreter's (a .pth line to its
    site-packages, whose own .pth files, such as an editable magic_init, are not read): no download."""
    venv = built["base"] / "venv"
    if not venv.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              capture_output=True, text=True, check=True).stdout.strip()
        import sysconfig
        deps = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
        Path(site, "zz_test_dependencies.pth").write_text("\n".join(deps) + "\n")
        proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                               str(built["wheel"])], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
    py = str(venv / "bin" / "python")
    out = subprocess.run([py, "-c", "import magic_init, magic_init.resources as r; print(magic_init.__file__); "
                          "print(r.resolve('models/tiny.prototxt')); print(r.resolve('examples/images/list.txt'))"],
                         cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    package = Path(out[0]).parent
    assert package.parent.name == "site-packages" and venv in package.parents, out
    assert Path(out[1]) == package / "models" / "tiny.prototxt"
    assert Path(out[2]) == package / "examples" / "images" / "list.txt"
    help_ = subprocess.run([str(venv / "bin" / "magic_init"), "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert help_.returncode == 0 and "PROTOTXT" in help_.stdout, help_.stderr
    # the sdist's own tests import in that environment
    collect = subprocess.run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
                              "tests/test_setup.py"], cwd=built["source"], capture_output=True, text=True)
    assert collect.returncode == 0, collect.stdout[-3000:]


# --- PyTorch: which build (scripts/torch_plan.py) -------------------------------------------------

def _torch_plan(tmp_path, find_links=None, index=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1")
    if find_links:
        env["PIP_FIND_LINKS"] = str(find_links)
    argv = [sys.executable, str(REPO / "scripts" / "torch_plan.py"), "--version", "2.13.0"]
    if index:
        argv += ["--index", index]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


def test_torch_plan_reads_local_wheels_without_downloading(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "torch-2.13.0+cpu-py3-none-any.whl").write_bytes(b"x" * 3_000_000)
    (wheels / "torch-2.12.0+cpu-py3-none-any.whl").write_bytes(b"x")
    proc = _torch_plan(tmp_path, find_links=wheels)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["build=cpu", "version=2.13.0+cpu", "source=local", "size_mb=3", "extra=0",
                                   "extra_mb=0"]


def test_torch_plan_sees_a_cuda_build_on_an_index(tmp_path):
    index = tmp_path / "simple"
    (index / "torch").mkdir(parents=True)
    (index / "torch" / "index.html").write_text(
        '<a href="../../files/torch-2.13.0%2Bcu126-py3-none-any.whl">torch-2.13.0+cu126-py3-none-any.whl</a>\n'
        '<a href="../../files/torch-2.13.0-cp27-cp27m-win32.whl">torch-2.13.0-cp27-cp27m-win32.whl</a>\n')
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "torch-2.13.0+cu126-py3-none-any.whl").write_bytes(b"x" * 2_000_000)
    proc = _torch_plan(tmp_path, index=index.as_uri())
    assert proc.returncode == 0, proc.stderr
    fields = dict(f.split("=", 1) for f in proc.stdout.split())
    assert fields["build"] == "cuda" and fields["version"] == "2.13.0+cu126" and fields["source"] == "local"
    assert int(fields["extra"]) > 0 and fields["extra_mb"].startswith("~")


def test_torch_plan_without_a_wheel_fails_in_one_line(tmp_path):
    proc = _torch_plan(tmp_path, find_links=tmp_path)
    assert proc.returncode == 1
    assert "no torch 2.13.0 wheel" in proc.stderr


# --- scripts/setup.sh -------------------------------------------------------------------------------

def test_setup_script_never_installs_into_the_system_python():
    """Every pip call goes through the environment's python ("$py" -m pip)."""
    text = (REPO / "scripts" / "setup.sh").read_text()
    subprocess.run(["bash", "-n", str(REPO / "scripts" / "setup.sh")], check=True)
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert 'pip() { "$py" -m pip "$@"; }' in code
    calls = re.findall(r"\S+\s+-m\s+pip\b", code)
    assert set(calls) <= {'"$py" -m pip', '.venv/bin/python -m pip'}, calls  # the latter: --version check
    assert not re.search(r"\bpip3\b|--break-system-packages|--user\b", code)


def test_setup_script_usage_errors():
    proc = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "--bogus"], capture_output=True, text=True)
    assert proc.returncode == 1 and "unknown argument --bogus" in proc.stderr
    proc = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "virtual environment" in proc.stdout


def _readme_commands():
    blocks = re.findall(r"```sh\n(.*?)\n```", (REPO / "README.md").read_text(), re.S)
    return blocks[0].strip(), blocks[1].strip()


def test_ci_runs_readmes_test_command_verbatim():
    first, second = _readme_commands()
    assert first.startswith("bash scripts/setup.sh && ") and "magic_init models/tiny.prototxt" in first
    assert second.startswith("bash scripts/setup.sh --caffe && ")
    assert second in (REPO / ".ci" / "run").read_text().splitlines()
    assert "MAGIC_INIT_SLOW_SETUP_TEST=1" in (REPO / ".ci" / "run").read_text()


# --- README.md's first command, as a fresh non-root user in a fresh clone (CI) ----------------------

def _slow_setup_wanted():
    return os.environ.get("MAGIC_INIT_SLOW_SETUP_TEST") == "1" or bool(os.environ.get("CI"))


def _pip_settings_for_the_user():
    """This machine's wheel folders and extra indexes, as pip here sees them (root's config is in
    root's home, which the user cannot read): the user gets the same packages, the CPU torch wheel
    from the disk included."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        key = key.rsplit(".", 1)[-1]
        if key in ("find-links", "extra-index-url", "index-url"):
            env["PIP_" + key.upper().replace("-", "_")] = value.strip().strip("'\"")
    return env


@pytest.mark.slow
@pytest.mark.skipif(not _slow_setup_wanted(), reason="set MAGIC_INIT_SLOW_SETUP_TEST=1 (CI does): makes a user, "
                                                     "installs a venv with PyTorch")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a user")
def test_readme_first_command_as_a_fresh_user_in_a_fresh_clone(tmp_path):
    user = "mi_setup_%d" % os.getpid()
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", user], check=True)
    home = Path("/home") / user
    try:
        clone = home / "magic_init"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        # The clone is the commit; CI runs on a commit, but locally bring the working tree's changes too.
        _tree_copy(clone)
        for name in subprocess.run(["git", "ls-files", "--deleted"], cwd=REPO, capture_output=True, text=True,
                                   check=True).stdout.split():
            (clone / name).unlink(missing_ok=True)
        subprocess.run(["chown", "-R", "%s:%s" % (user, user), str(home)], check=True)
        first, _ = _readme_commands()
        env = dict(_pip_settings_for_the_user(), HOME=str(home), USER=user, LOGNAME=user, LANG="C.UTF-8",
                   PATH="/usr/local/bin:/usr/bin:/bin", OMP_NUM_THREADS="1",
                   # a CUDA build is never fetched here: setup.sh fails instead
                   MAGIC_INIT_TORCH=os.environ.get("MAGIC_INIT_TORCH", "cpu"))
        script = "cd %s && %s\n" % (clone, first)
        script += "cd %s && .venv/bin/magic_init --help >/dev/null && echo HELP-OK\n" % clone
        proc = subprocess.run(["su", user, "-s", "/bin/bash", "-c",
                               "exec env -i %s bash -euo pipefail" % " ".join(
                                   "%s=%s" % (k, _shquote(v)) for k, v in env.items())],
                              input=script, capture_output=True, text=True, timeout=1800)
        log = proc.stdout[-4000:] + proc.stderr[-6000:]
        print("\n".join(line for line in proc.stderr.splitlines() if line.startswith("setup:")))  # -rP shows it
        assert proc.returncode == 0, log
        assert (clone / "out" / "tiny.caffemodel").stat().st_size > 0, log
        assert "HELP-OK" in proc.stdout, log
        assert "CUDA build" not in proc.stderr.replace("the CPU build", ""), log
        assert "pip will install torch 2.13.0+cpu" in proc.stderr, log
        site = next((clone / ".venv" / "lib").glob("python3*/site-packages"))
        assert any(site.glob("torch-2.13.0*.dist-info")), log
        assert not any(site.glob("nvidia*")), "a CUDA build was installed"
        assert (clone / ".venv").stat().st_uid == int(subprocess.run(["id", "-u", user], capture_output=True,
                                                                        text=True).stdout)
        # the example from another directory, with the bundled models and images (needs the cli hook)
        if "resources" in (REPO / "magic_init" / "cli.py").read_text():
            other = subprocess.run(["su", user, "-s", "/bin/bash", "-c", "exec env -i %s bash -euo pipefail" % " ".join(
                "%s=%s" % (k, _shquote(v)) for k, v in env.items())], timeout=900, capture_output=True, text=True,
                input="cd %s && %s/.venv/bin/magic_init models/tiny.prototxt t.caffemodel --data "
                      "examples/images/list.txt --init kmeans -q\n" % (home, clone))
            assert other.returncode == 0 and (home / "t.caffemodel").exists(), other.stderr[-3000:]
    finally:
        subprocess.run(["userdel", "-r", user], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def _shquote(value):
    return "'" + str(value).replace("'", "'\\''") + "'"
