"""The public API of vipann 0.1 keeps working after the package was layered.

``tests/data/public_api_0.1.json`` records, for every public module of vipann 0.1, the names it
exported; each must still resolve, through the same import path. Paths that moved warn once with a
FutureWarning naming the new place.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import vipann

SURFACE = json.loads((Path(__file__).parent / "data" / "public_api_0.1.json").read_text())
MOVED = {
    "vipann.cards": "vipann.zoo.cards",
    "vipann.ensemble": "vipann.inference.ensemble",
    "vipann.factory": "vipann.zoo.factory",
    "vipann.frontend": "vipann.models.frontend",
    "vipann.labels": "vipann.datasets.labels",
    "vipann.plots": "vipann.evaluation.plots",
    "vipann.profile": "vipann.models.profile",
    "vipann.sampling": "vipann.inference.predict",
    "vipann.sed": "vipann.tagging.sed",
    "vipann.serialization": "vipann.zoo.serialization",
}


@pytest.mark.parametrize("module", sorted(SURFACE))
def test_every_0_1_name_still_resolves(module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        mod = importlib.import_module(module)
    missing = [name for name in SURFACE[module] if not hasattr(mod, name)]
    assert missing == [], f"{module} lost {missing}"


def test_advertised_subpackages_are_in_all():
    for name in ("metrics", "uncertainty", "convert", "layers", "calibration"):
        assert name in vipann.__all__
        assert isinstance(getattr(vipann, name), type(vipann))
    for name in vipann.__all__:
        assert hasattr(vipann, name), name


def test_vipann_convert_is_the_zoo_converter_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import vipann.convert as convert
        from vipann.convert import from_panns_checkpoint, moped
    from vipann.zoo import convert as real

    assert convert is real and from_panns_checkpoint is real.from_panns_checkpoint and moped is real.moped


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_moved_modules_warn_and_give_the_same_objects(old, new):
    # A fresh interpreter: the warning is issued on the first import only.
    code = (
        "import warnings, importlib\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        f"    old = importlib.import_module({old!r})\n"
        f"new = importlib.import_module({new!r})\n"
        "assert any(issubclass(w.category, FutureWarning) and "
        f"{new!r} in str(w.message) for w in seen), [str(w.message) for w in seen]\n"
        "names = [n for n in getattr(new, '__all__', []) if hasattr(new, n)]\n"
        "assert names and all(getattr(old, n) is getattr(new, n) for n in names)\n"
        "import vipann\n"
        f"assert getattr(vipann, {old.rpartition('.')[2]!r}) is old\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_importing_vipann_stays_light():
    code = (
        "import sys, vipann\n"
        "heavy = [m for m in ('pandas', 'soundfile', 'soxr', 'matplotlib', 'huggingface_hub', 'vipann.recipes',"
        " 'vipann.train', 'vipann.cli', 'vipann.demo') if m in sys.modules]\n"
        "assert heavy == [], heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vipann.nope  # noqa: B018
