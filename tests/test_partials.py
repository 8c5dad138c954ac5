"""The agreement rule for partial text, on scripted hypotheses."""

from __future__ import annotations

from livewhisper.live.agreement import Agreement, HypWord, align_after, key


def hyp(text: str) -> list[HypWord]:
    return [HypWord(w, i * 0.4, i * 0.4 + 0.3) for i, w in enumerate(text.split())]


def test_key_ignores_case_punctuation_and_accents() -> None:
    assert key("Country,") == key("country") == "country"
    assert key("Présentement") == "presentement"
    assert key("...") == ""


def test_two_agreeing_hypotheses_commit_their_common_prefix() -> None:
    a = Agreement()
    assert a.update(hyp("and so my")) == []  # one hypothesis commits nothing
    assert a.text == "and so my"
    newly = a.update(hyp("And so, my fellow"))
    assert [w.text for w in newly] == ["And", "so,", "my"]
    assert a.committed_text == "And so, my" and a.text == "And so, my fellow"


def test_committed_words_never_change() -> None:
    a = Agreement()
    a.update(hyp("ask not what"))
    a.update(hyp("ask not what your"))
    assert a.committed_text == "ask not what"
    # The model changes its mind about a committed word: the committed text stays.
    a.update(hyp("ask knot what your country"))
    assert a.committed_text.startswith("ask not what")
    a.update(hyp("ask knot what your country can"))
    assert a.committed_text == "ask not what your country"
    assert a.text == "ask not what your country can"


def test_disagreement_commits_nothing_more() -> None:
    a = Agreement()
    a.update(hyp("the cat"))
    a.update(hyp("the cat sat"))
    assert a.committed_text == "the cat"
    assert a.update(hyp("the cat sad on")) == []
    assert a.update(hyp("the cat sat on the")) == []  # "sad" and "sat" differ
    assert [w.text for w in a.update(hyp("the cat sat on the mat"))] == ["sat", "on", "the"]


def test_align_after_finds_the_end_of_a_changed_prefix() -> None:
    assert align_after(["a", "b"], ["a", "b", "c"]) == 2
    assert align_after(["ask", "not", "what"], ["ask", "knot", "what", "your"]) == 3
    assert align_after(["one", "two", "three"], ["one", "three", "four"]) == 2
    assert align_after([], ["x"]) == 0


def test_cut_hands_over_a_piece_and_keeps_the_rest() -> None:
    a = Agreement()
    a.update(hyp("one two three four"))
    a.update(hyp("one two three four five"))
    piece = a.cut(2)
    assert [w.text for w in piece] == ["one", "two"]
    assert a.committed_text == "three four"


def test_the_last_word_waits_unless_the_audio_ended_in_silence() -> None:
    a = Agreement()
    a.update(hyp("ask not what your count"))
    assert [w.text for w in a.update(hyp("ask not what your count"))] == [
        "ask",
        "not",
        "what",
        "your",
    ]
    assert a.text == "ask not what your count"  # cut off mid-word: still in the tail
    assert [w.text for w in a.update(hyp("ask not what your count"), complete=True)] == ["count"]


def test_timed_hypotheses_retime_the_committed_words_they_repeat() -> None:
    a = Agreement()
    crude = [HypWord(w, 1.0, 3.0) for w in "Mr. John Dashwood".split()]  # segment times
    a.update(crude, complete=True)
    a.update(crude, complete=True)
    assert [(w.start, w.end) for w in a.committed] == [(1.0, 3.0)] * 3
    timed = [
        HypWord(w, 1.0 + i * 0.5, 1.4 + i * 0.5)
        for i, w in enumerate("mr john dashwood had then".split())
    ]
    a.update(timed, timed=True)
    assert a.committed_text == "Mr. John Dashwood"  # the words as shown stay...
    assert [(w.start, w.end) for w in a.committed] == [(1.0, 1.4), (1.5, 1.9), (2.0, 2.4)]
    # ...and a hypothesis that changed them says nothing of their times.
    a.update([HypWord("Mr.", 9, 9), HypWord("Jon", 9, 9), *timed[2:]], timed=True)
    assert a.committed[1].start == 1.5


def test_words_ending_near_the_end_of_the_audio_wait() -> None:
    a = Agreement()
    # Two passes whose audio ends at 2.0 s both hear "voice" of "voicemail" end there.
    words = [HypWord("check", 0.2, 0.6), HypWord("voice", 1.4, 1.95), HypWord("mail", 2.0, 2.0)]
    a.update(words, timed=True, horizon=1.7)
    a.update(words, timed=True, horizon=1.7)
    assert a.committed_text == "check"
    # Heard whole by a later pass, it is committed.
    later = [HypWord("check", 0.2, 0.6), HypWord("voicemail", 1.4, 2.3), HypWord("is", 2.4, 2.6)]
    a.update(later, timed=True, horizon=2.8)
    a.update([*later, HypWord("full", 2.7, 3.0)], timed=True, horizon=2.9)
    assert a.committed_text == "check voicemail is"
