import uuid

from dbqueue.utils.ids import new_ids


def test_new_ids_are_distinct_version_4_uuids_in_canonical_text() -> None:
    ids = new_ids(2000)
    assert len(set(ids)) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_new_ids_of_nothing_is_empty() -> None:
    assert new_ids(0) == []
