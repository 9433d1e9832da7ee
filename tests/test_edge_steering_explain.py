"""explain: text from the reasons carried in a plan."""

from __future__ import annotations

from edge.health.state import HealthState
from edge.plan import Plan
from edge.steering.explain import explain_answer_set, explain_diff, explain_plan
from edge.steering.planner import plan
from tests import builders as b

S = HealthState
SVC = "www.example.hk"


def plans() -> tuple[Plan, Plan]:
    links = [b.link("cn2", index=10), b.link("pccw", index=20),
             b.link("ntt", priority=2, index=30)]
    cfg = b.make_config(links, [b.one_pool_per_link(links, failover_threshold=0.6)])
    up = plan(cfg, b.snapshot({"cn2": S.UP, "pccw": S.UP, "ntt": S.UP}), version=1, now=1.0)
    down = plan(cfg, b.snapshot({"cn2": S.DOWN, "pccw": S.UP, "ntt": S.UP}), version=2,
                now=2.0)
    return up, down


def test_answer_set_text_lists_answers_and_reasons() -> None:
    _, down = plans()
    a = down.get(SVC, "default")
    assert a is not None
    text = explain_answer_set(a)
    lines = text.splitlines()
    assert lines[0] == f"{SVC} [default]: tier 2, ttl 15, max 2 answers (failing over)"
    assert "203.0.113.30" in lines[1] and "link ntt" in lines[1]
    assert "    - [link.down] link cn2 is down: not served" in lines
    assert any(line.startswith("    - [tier.skipped] tier 1 skipped: healthy capacity 50% < "
                               "threshold 60%") for line in lines)
    for r in a.reasons:                      # every reason the plan carries is shown
        assert f"[{r.code}] {r.detail}" in text


def test_plan_text_has_every_answer_set() -> None:
    up, _ = plans()
    text = explain_plan(up)
    assert text.startswith(f"plan v1 (checksum {up.checksum()}, inputs {up.inputs_digest}, "
                           "1 answer sets)")
    assert f"{SVC} [default]: tier 1, ttl 60" in text


def test_diff_text() -> None:
    up, down = plans()
    text = explain_diff(up.diff(down))
    assert text.splitlines()[0] == f"~ {SVC} [default]:"
    assert "    tier 1 -> 2" in text and "    ttl 60 -> 15" in text
    assert "answers 203.0.113.10@100, 203.0.113.20@100 -> 203.0.113.30@100" in text
    assert "[tier.skipped]" in text
    assert explain_diff(up.diff(up)) == "no changes"
    added = explain_diff(Plan().diff(up))
    assert added.startswith(f"+ {SVC} [default]: new") and "[tier.selected]" in added
    assert explain_diff(up.diff(Plan())).startswith(f"- {SVC} [default]: removed (was ")
