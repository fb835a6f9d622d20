import transferkit


def test_all_names_exist_and_are_public() -> None:
    for name in transferkit.__all__:
        assert hasattr(transferkit, name), name
        assert not name.startswith("_")
    assert sorted(transferkit.__all__) == transferkit.__all__


def test_every_error_is_a_transferkit_error() -> None:
    for name in ("ConfigError", "DataError", "ModelError", "RunDirError"):
        assert issubclass(getattr(transferkit, name), transferkit.TransferkitError)


def test_the_scikit_learn_estimator_is_exported() -> None:
    from sklearn.base import is_classifier

    from transferkit.estimator import TransferClassifier

    assert transferkit.TransferClassifier is TransferClassifier and is_classifier(transferkit.TransferClassifier())


def test_the_cli_and_the_package_import_without_torch() -> None:
    """Start-up is a feature: `transferkit --help` must not pay for torch, torchmetrics or the model libraries."""
    import subprocess
    import sys

    code = ("import sys, transferkit, transferkit.cli; "
            "heavy = [m for m in ('torch', 'torchmetrics', 'transformers', 'timm', 'sklearn', 'matplotlib') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_lazy_names_are_listed_and_unknown_ones_raise() -> None:
    import pytest

    assert set(transferkit.__all__) <= set(dir(transferkit))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        transferkit.nope  # noqa: B018
