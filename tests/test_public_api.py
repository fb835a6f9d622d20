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
