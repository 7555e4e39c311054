"""Progress lines of long steps: rate-limited, with counts, rate and time left; quiet for short steps."""

import logging
import time

import pytest

from papersim.progress import Heartbeat, Progress, duration, rate, track, working_on


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.INFO, logger="papersim.progress")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "papersim.progress"]


def test_lines_come_at_most_every_interval_with_counts_rate_and_time_left(lines):
    clock = FakeClock()
    with Progress("encoding corpus", total=98_000, unit="papers", interval=5, clock=clock) as progress:
        for _ in range(100):  # 100 batches of 128 papers, one every 0.5 s
            clock.now += 0.5
            progress.advance(128)
            if progress.count >= 12_800:
                break
    # a line at 5 s, 10 s, ... 50 s, and the final one
    assert len(lines()) == 11
    assert lines()[0] == "encoding corpus 1,280/98,000 papers (256/s, ~6m18s left)"
    assert lines()[-2] == "encoding corpus 12,800/98,000 papers (256/s, ~5m33s left)"
    assert lines()[-1] == "encoding corpus 12,800/98,000 papers done in 50s (256/s)"


def test_a_short_step_writes_nothing(lines):
    clock = FakeClock()
    with Progress("encoding", total=300, unit="texts", interval=5, clock=clock) as progress:
        for _ in range(3):
            clock.now += 1.0
            progress.advance(100)
    assert lines() == []


def test_short_steps_one_after_another_speak_once_the_process_has_been_quiet_for_the_interval(lines):
    clock = FakeClock()
    for step in ("cranfield documents", "cranfield queries", "test_split documents"):  # 4 s each: none "long"
        with working_on(step), Progress("encoding", total=4, unit="batches", interval=5, clock=clock) as progress:
            for _ in range(4):
                clock.now += 1
                progress.advance()
    # 5 s after the last line (none yet: the first step's start), whichever step is running speaks
    assert lines() == ["cranfield queries: encoding 1/4 batches (1.0/s, ~3s left)",
                       "test_split documents: encoding 2/4 batches (1.0/s, ~2s left)"]


def test_a_failed_step_writes_no_final_line(lines):
    clock = FakeClock()
    with pytest.raises(RuntimeError):
        with Progress("encoding", total=10, interval=5, clock=clock) as progress:
            clock.now += 6
            progress.advance(1)
            raise RuntimeError("disk full")
    assert lines() == ["encoding 1/10 items (6.0s each, ~54s left)"]


def test_slow_steps_unknown_totals_resumed_counts_and_unlike_costs(lines):
    clock = FakeClock()
    progress = Progress("training", total=60, unit="steps", interval=5, clock=clock, start=20)
    clock.now += 6
    progress.advance(2)  # 2 steps in 6 s, 38 left
    progress.detail = "loss 0.934"
    clock.now += 6
    progress.advance(2)
    unknown = Progress("bm25: indexing", unit="texts", interval=5, clock=clock)
    clock.now += 5
    unknown.advance(10_000)
    unlike = Progress("choosing how similar papers are answered", 17, "settings tried", 5, clock, eta=False)
    clock.now += 38  # the first setting encodes; the last ones only fuse: no time left to promise
    unlike.advance()
    clock.now += 40
    unlike.advance(16)
    unlike.done()
    assert lines() == ["training 22/60 steps (3.0s each, ~1m54s left)",
                       "training 24/60 steps (3.0s each, ~1m48s left; loss 0.934)",
                       "bm25: indexing 10,000 texts (2,000/s, 5s so far)",
                       "choosing how similar papers are answered 1/17 settings tried (38s so far)",
                       "choosing how similar papers are answered 17/17 settings tried done in 1m18s"]


def test_working_on_names_the_lines_of_the_block(lines):
    clock = FakeClock()

    def encode(texts):  # what the encoder does: it knows only that it encodes
        for _ in track(range(0, len(texts), 10), "encoding", total=len(texts), unit="texts", size=lambda _: 10,
                       interval=5, clock=clock):
            clock.now += 6

    with working_on("cranfield documents, trained encoder"):
        encode(["text"] * 20)
    encode(["text"] * 10)
    assert lines() == ["cranfield documents, trained encoder: encoding 10/20 texts (1.7/s, ~6s left)",
                       "cranfield documents, trained encoder: encoding 20/20 texts done in 12s (1.7/s)",
                       "encoding 10/10 texts done in 6s (1.7/s)"]  # the last count: the final line says it


def test_track_counts_an_item_once_the_caller_is_done_with_it(lines):
    clock = FakeClock()
    seen = []
    for item in track(["a", "b"], "scoring", unit="sets", interval=5, clock=clock):
        clock.now += 5  # the caller's work on the item
        seen.append(item)
    assert seen == ["a", "b"]
    assert lines() == ["scoring 1/2 sets (5.0s each, ~5s left)", "scoring 2/2 sets done in 10s (5.0s each)"]


def test_durations_and_rates_read_as_a_person_would_say_them():
    assert [duration(s) for s in (0.4, 59.6, 83, 3599, 7500)] == ["0s", "1m00s", "1m23s", "59m59s", "2h05m"]
    assert [rate(r) for r in (1020.4, 12.5, 3.44, 0.4, 0)] == ["1,020/s", "12/s", "3.4/s", "2.5s each", ""]


def test_a_heartbeat_speaks_while_an_opaque_call_runs_and_stops_after(lines):
    with Heartbeat("validating at step 60", interval=0.05):
        time.sleep(0.3)
    written = len(lines())
    assert written >= 2 and all(line.startswith("validating at step 60 (") for line in lines())
    time.sleep(0.15)
    assert len(lines()) == written  # stopped with the block
    with Heartbeat("loading the encoder", interval=5):
        pass
    assert len(lines()) == written  # a short call: nothing


def test_a_real_encoding_writes_progress_lines_named_by_its_caller(tiny_encoder, lines, monkeypatch):
    monkeypatch.setattr("papersim.progress.INTERVAL_S", 0.0)  # a line after every batch of 4
    texts = [f"paper {i} on wing flutter at supersonic speed" for i in range(300)]
    with working_on("cranfield documents, trained encoder"):
        vectors = tiny_encoder.encode(texts)
    assert vectors.shape == (300, 32)
    written = lines()
    assert len(written) == 75  # 74 batches, then the final line instead of the 75th count
    assert written[0].startswith("cranfield documents, trained encoder: encoding 4/300 texts (")
    assert written[-2].startswith("cranfield documents, trained encoder: encoding 296/300 texts (")
    assert written[-1].startswith("cranfield documents, trained encoder: encoding 300/300 texts done in ")
    assert all("left)" in line for line in written[:-1])


def test_a_ticking_progress_speaks_within_a_count_longer_than_the_interval(lines):
    progress = Progress("training", total=60, unit="steps", interval=0.05)
    progress.start_ticking()
    time.sleep(0.4)  # one slow step
    progress.advance()
    progress.done()
    written = lines()
    assert len(written) >= 3 and all(line.startswith("training 0/60 steps (") for line in written[:2])
    assert written[-1].startswith("training 1/60 steps done in ")
    time.sleep(0.1)
    assert len(lines()) == len(written)  # done() stopped the thread


def test_a_heartbeat_keeps_quiet_while_the_steps_inside_it_write_lines(lines):
    clock = FakeClock()
    heartbeat = Heartbeat("building the index", interval=5, clock=clock)  # beats by hand: no thread
    progress = Progress("encoding", total=100, unit="texts", interval=5, clock=clock)
    clock.now += 5
    progress.advance(10)
    heartbeat.beat()  # the encoding just spoke
    clock.now += 4
    heartbeat.beat()  # 4 s of quiet
    clock.now += 1
    heartbeat.beat()  # 5 s: the index's training, say, has been silent long enough
    assert lines() == ["encoding 10/100 texts (2.0/s, ~45s left)", "building the index (10s so far)"]
