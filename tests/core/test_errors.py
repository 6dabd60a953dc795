"""One error hierarchy: every class has an exit code and an HTTP status, and every exit code
has one meaning (issue 10, item 6)."""

import mlvc.errors as errors
from mlvc.errors import EXIT_CODES, MlvcError, error_classes


def test_every_error_has_an_exit_code_and_an_http_status():
    for cls in error_classes():
        assert isinstance(cls.exit_code, int) and cls.exit_code in EXIT_CODES, cls
        assert 400 <= cls.http_status <= 599, cls


def test_every_exit_code_has_exactly_one_owner_that_says_what_it_means():
    owners: dict[int, list[str]] = {}
    for cls in error_classes():
        if "meaning" in vars(cls):
            owners.setdefault(cls.exit_code, []).append(cls.__name__)
    assert {code: len(names) for code, names in owners.items() if len(names) > 1} == {}
    used = {cls.exit_code for cls in error_classes()}
    assert used == set(owners), "a class uses an exit code no class explains"
    assert set(EXIT_CODES) == used | {0, 130}


def test_every_error_class_lives_in_mlvc_errors():
    """Strays (a class defined next to the code that raises it) cannot join the table."""
    for cls in error_classes():
        assert cls.__module__ == "mlvc.errors", cls
        assert getattr(errors, cls.__name__) is cls


def test_gc_and_the_index_no_longer_share_a_code():
    assert errors.GcBusy.exit_code != errors.IndexBusy.exit_code
    assert errors.FsckFailed.exit_code == 9


def test_models_errors_are_the_same_classes():
    from mlvc.models import errors as model_errors

    assert model_errors.UnknownModel is errors.UnknownModel
    assert issubclass(model_errors.SignatureError, MlvcError)
