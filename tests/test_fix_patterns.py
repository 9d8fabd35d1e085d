"""A namespace or kind with a trailing newline is refused: ``$`` alone matches before one."""

import pytest

from ledger import format as fmt


@pytest.mark.parametrize("bad", ["edge-1\n", "edge-1\n\n", "", "-edge", "a b"])
def test_namespace_with_a_trailing_newline_is_refused(bad):
    with pytest.raises(ValueError):
        fmt.check_namespace(bad)


def test_kind_with_a_trailing_newline_is_refused():
    assert fmt.check_kind("conn.anomaly")
    assert not fmt.check_kind("conn.anomaly\n")
