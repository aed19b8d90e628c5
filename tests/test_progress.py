"""Long jobs show their progress where their output goes to a log, not only on a terminal."""
import io

from train.progress import progress_bar


def test_a_log_gets_a_few_plain_lines_not_nothing():
    log = io.StringIO()  # not a terminal, as under nohup or in CI
    assert list(progress_bar(range(500), "eval", file=log)) == list(range(500))
    text = log.getvalue()
    assert "eval" in text and "500/500" in text
    # one line at the start and one at the end: the once-a-minute interval holds the rest back
    updates = [u for u in text.replace("\r", "\n").splitlines() if u.strip()]
    assert len(updates) <= 3, updates
    assert text.isascii()


def test_keyword_arguments_reach_tqdm():
    log = io.StringIO()
    for _ in progress_bar(range(3), "view bank", file=log, initial=7, total=10):
        pass
    assert "10/10" in log.getvalue()
