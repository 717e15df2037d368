"""weight_guard: the checks every model read or written goes through (properties, no model files)."""
import numpy as np
import pytest

from magic_init.errors import ModelFileError
from magic_init.weight_guard import blob_label, check_finite, check_no_zero_affine, nonfinite_count


def test_nonfinite_count_counts_nan_and_both_infinities_and_ignores_integers():
    assert nonfinite_count(np.array([0.0, np.nan, np.inf, -np.inf, 1.0])) == 3
    assert nonfinite_count(np.arange(5)) == 0


def test_check_finite_names_the_first_bad_blob_with_its_role():
    weights = {"conv1": [np.ones(3), np.zeros(2)], "fc": [np.ones(2), np.array([np.nan, 1.0]), np.array([np.inf])]}
    with pytest.raises(ModelFileError, match=r"^m.caffemodel: layer 'fc' blob 1 \(bias\) has 1 non-finite value"):
        check_finite(weights, "m.caffemodel")
    assert blob_label("x", 2) == "layer 'x' blob 2 (blob 2)"
    with pytest.raises(ModelFileError, match=r"'k' has 2 non-finite value\(s\) \(NaN or Inf\) because$"):
        check_finite({"k": [np.array([np.nan, np.nan])]}, "src", label=lambda n, i: "'%s'" % n, cause=" because")
    check_finite({"ok": [np.ones(4)]}, "src")


def test_an_all_zero_affine_weight_is_refused_unless_allowed():
    weights = {"conv1": ("Convolution", np.ones((2, 2))), "fc": ("InnerProduct", np.zeros((3, 2)))}
    with pytest.raises(ModelFileError, match=r"refusing to write o: layer 'fc' \(InnerProduct\) has all-zero"):
        check_no_zero_affine("o", weights)
    check_no_zero_affine("o", weights, allowed={"fc"})
