import transferkit


def test_all_names_exist_and_are_public() -> None:
    for name in transferkit.__all__:
        assert hasattr(transferkit, name), name
        assert not name.startswith("_")
    assert sorted(transferkit.__all__) == transferkit.__all__


def test_every_error_is_a_transferkit_error() -> None:
    for name in ("ConfigError", "DataError", "ModelError", "RunDirError"):
        assert issubclass(getattr(transferkit, name), transferkit.TransferkitError)
