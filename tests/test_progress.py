"""Long work shows progress: a line every few seconds when the stream is not a terminal."""

import io

from vtok.progress import Progress, progress_bar


def test_off_a_terminal_progress_prints_periodic_lines_and_a_last_one():
    stream = io.StringIO()
    progress = Progress(4, "encode", unit="file", every_s=0.0, stream=stream)
    for _ in range(4):
        progress.update(1)
    progress.set_postfix(loss="0.1")
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "encode: 1/4 file (25%)" and lines[-1] == "encode: 4/4 file (100%), loss=0.1"


def test_disabled_progress_and_slow_updates_print_nothing_until_the_end():
    quiet = io.StringIO()
    p = Progress(3, "bench", stream=quiet, enabled=False)
    p.update(3)
    p.close()
    assert quiet.getvalue() == ""
    stream = io.StringIO()
    p = Progress(3, "eval", stream=stream, every_s=3600)
    p.update(1)
    assert stream.getvalue() == ""
    p.close()
    assert stream.getvalue() == "eval: 1/3 it (33%)\n"


def test_progress_bar_yields_every_item():
    assert list(progress_bar([1, 2, 3], "x", every_s=3600)) == [1, 2, 3]


def test_the_closing_line_is_not_printed_twice():
    import io

    from vtok.progress import Progress

    stream = io.StringIO()
    p = Progress(3, "work", stream=stream, every_s=0.0)
    for _ in range(3):
        p.update(1)
    p.close()
    lines = stream.getvalue().splitlines()
    assert lines[-1] == "work: 3/3 it (100%)" and lines.count("work: 3/3 it (100%)") == 1
