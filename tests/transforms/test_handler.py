"""The handler's progress lines (the rest of the handler: tests/transforms/test_embed_texts.py)."""

from beam_e5.transforms.handler import progress_line


def test_progress_line_with_an_estimate():
    assert progress_line(1_200, 10_000, 1_250, 60_000, 30.0) == (
        "embedded 1,200 of ~10,000 documents read (12%), 1,250 windows, 60,000 tokens; "
        "40.0 docs/s, 2000 tokens/s, ETA 3m40s")


def test_progress_line_past_the_estimate_and_without_one():
    assert progress_line(120, 100, 120, 900, 10.0).endswith("(100%), 120 windows, 900 tokens; "
                                                            "12.0 docs/s, 90 tokens/s, ETA 0m00s")
    assert progress_line(5, 0, 7, 70, 2.0) == (
        "embedded 5 documents, 7 windows, 70 tokens; 2.5 docs/s, 35 tokens/s")
