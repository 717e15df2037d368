"""`magic_init torch FACTORY OUT.pt`: a PyTorch model from a factory, initialized or rescaled, written atomically."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_cli import IMAGES, assert_clean_error, run_cli  # noqa: E402

FACTORY = '''
import torch
from torch import nn

def small():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))

def not_a_module():
    return 3
'''


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "factories.py").write_text(FACTORY)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((40, 3, 16, 16)).astype(np.float32))
    return tmp_path


def _state(path):
    return torch.load(path, weights_only=True)


def test_initializes_a_model_from_a_tensor_file(folder):
    result = run_cli("torch", "factories:small", "out.pt", "--data", "x.npy", "--num-images", 32, "-q", cwd=folder)
    assert result.returncode == 0, result.stderr
    state = _state(folder / "out.pt")
    assert set(state) == {"0.weight", "0.bias", "3.weight", "3.bias", "6.weight", "6.bias"}
    from importlib import util
    spec = util.spec_from_file_location("factories", folder / "factories.py")
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fresh = module.small()
    assert not torch.equal(fresh.state_dict()["0.weight"], state["0.weight"])
    fresh.load_state_dict(state)
    x = torch.from_numpy(np.load(folder / "x.npy"))
    with torch.no_grad():
        conv = fresh[0](x)
    assert abs(float(conv.mean()) - 0.1) < 0.05                 # Algorithm 1's β on the sample (then Algorithm 2)


def test_a_checkpoint_is_rescaled_keeping_the_function(folder):
    assert run_cli("torch", "factories:small", "a.pt", "--data", "x.npy", "-q", "--init", "gaussian",
                   "--no-between-layer", cwd=folder).returncode == 0
    state = _state(folder / "a.pt")
    state["0.weight"] *= 10                                     # one layer x10, the next /10: same function
    state["0.bias"] *= 10
    state["3.weight"] /= 10
    torch.save(state, folder / "skewed.pt")
    result = run_cli("torch", "factories:small", "b.pt", "--data", "x.npy", "--checkpoint", "skewed.pt", "-q",
                     cwd=folder)
    assert result.returncode == 0, result.stderr
    rescaled = _state(folder / "b.pt")
    ratio = float(rescaled["0.weight"].norm() / state["0.weight"].norm())
    assert ratio < 0.5                                          # the x10 layer was brought back down


def test_images_need_a_size(folder):
    assert_clean_error(run_cli("torch", "factories:small", "out.pt", "--data", IMAGES, cwd=folder), "--size")
    result = run_cli("torch", "factories:small", "out.pt", "--data", IMAGES, "--size", 16, "--num-images", 8, "-q",
                     cwd=folder)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("factory, needle", [
    ("factories", "expected package.module:callable"),
    ("nowhere:small", "cannot import nowhere"),
    ("factories:missing", "has no callable 'missing'"),
    ("factories:not_a_module", "returned int, not a torch.nn.Module"),
])
def test_a_bad_factory_is_one_line(folder, factory, needle):
    assert_clean_error(run_cli("torch", factory, "out.pt", "--data", "x.npy", cwd=folder), needle)
    assert not (folder / "out.pt").exists()


def test_a_checkpoint_that_does_not_fit_is_one_line_and_nothing_is_written(folder):
    torch.save({"0.weight": torch.zeros(2)}, folder / "bad.pt")
    (folder / "out.pt").write_bytes(b"keep")
    assert_clean_error(run_cli("torch", "factories:small", "out.pt", "--data", "x.npy", "--checkpoint", "bad.pt",
                               cwd=folder), "bad.pt: does not fit the model")
    assert (folder / "out.pt").read_bytes() == b"keep"


def test_output_over_the_checkpoint_needs_overwrite(folder):
    assert run_cli("torch", "factories:small", "a.pt", "--data", "x.npy", "-q", cwd=folder).returncode == 0
    assert_clean_error(run_cli("torch", "factories:small", "a.pt", "--data", "x.npy", "--checkpoint", "a.pt",
                               cwd=folder), "--overwrite")
    assert run_cli("torch", "factories:small", "a.pt", "--data", "x.npy", "--checkpoint", "a.pt", "--overwrite", "-q",
                   cwd=folder).returncode == 0


def test_a_non_finite_checkpoint_is_refused_by_name_and_nothing_is_written(folder):
    assert run_cli("torch", "factories:small", "a.pt", "--data", "x.npy", "-q", cwd=folder).returncode == 0
    state = _state(folder / "a.pt")
    state["3.bias"][2] = float("nan")
    torch.save(state, folder / "nan.pt")
    result = run_cli("torch", "factories:small", "out.pt", "--data", "x.npy", "--checkpoint", "nan.pt", cwd=folder)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert not (folder / "out.pt").exists()


def test_a_layer_the_checkpoint_holds_at_zero_may_stay_zero(folder):
    """Rescaling keeps the function, so a layer loaded all zero stays so and is written (Caffe path: same)."""
    assert run_cli("torch", "factories:small", "a.pt", "--data", "x.npy", "-q", cwd=folder).returncode == 0
    state = _state(folder / "a.pt")
    state["6.weight"].zero_()
    torch.save(state, folder / "zero.pt")
    result = run_cli("torch", "factories:small", "b.pt", "--data", "x.npy", "--checkpoint", "zero.pt", "-q",
                     cwd=folder)
    assert result.returncode == 0, result.stderr
    assert not _state(folder / "b.pt")["6.weight"].any()


def test_check_state_names_the_non_finite_entry_and_the_zero_layer():
    from magic_init.errors import ModelFileError
    from magic_init.torch_job import check_state

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    affine = {"conv": ("Conv2d", "0.weight")}
    check_state(model, affine, "out.pt")
    model[1].running_var[1] = float("inf")
    with pytest.raises(ModelFileError, match=r"refusing to write out.pt: '1.running_var' has 1 non-finite"):
        check_state(model, affine, "out.pt")
    model[1].running_var.fill_(1)
    with torch.no_grad():
        model[0].weight.zero_()
    with pytest.raises(ModelFileError, match=r"layer 'conv' \(Conv2d\) has all-zero weights"):
        check_state(model, affine, "out.pt")
    check_state(model, affine, "out.pt", allowed={"conv"})
    model.register_buffer("big", torch.tensor([1e300], dtype=torch.float64))    # finite, beyond float32
    check_state(model, affine, "out.pt", allowed={"conv"})
