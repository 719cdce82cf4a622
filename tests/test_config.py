"""Configuration: the plans table as data, and the environment read once."""

from __future__ import annotations

from decimal import Decimal

import pytest

from enrichment.config import Settings, load_plans


def test_plans_match_the_design_table():
    plans = load_plans()
    expected = {  # plan: (queue, rps, rpm, max_tokens, max_searches, included, overage)
        "core": ("core", 0.5, 30, 1500, 2, 250, "0.12"),
        "pro": ("pro", 1.0, 90, 2500, 4, 2500, "0.08"),
        "elite": ("elite", 3.0, 200, 3500, 6, 12000, "0.05"),
        "starter": ("core", 1.0, 60, None, None, 1000, "0.09"),
        "growth": ("pro", 2.0, 120, None, None, 5000, "0.06"),
        "scale": ("elite", 5.0, 300, None, None, 20000, "0.04"),
    }
    for name, (queue, rps, rpm, tokens, searches, included, overage) in expected.items():
        p = plans[name]
        assert (p.queue, p.rps, p.rpm, p.max_tokens, p.max_searches, p.included) == (
            queue, rps, rpm, tokens, searches, included)
        assert p.overage_usd == Decimal(overage)
    assert plans.queue_weights == {"elite": 3, "pro": 2, "core": 1}
    assert plans.queues == ["elite", "pro", "core"]


@pytest.mark.parametrize(("plan", "burst", "cap"), [
    ("core", 1, 375), ("pro", 30, 3750), ("elite", 20, 18000), ("scale", 5, 30000),
])
def test_burst_and_hard_cap(plan, burst, cap):
    p = load_plans()[plan]
    assert p.burst == burst and p.hard_cap == cap


def test_env_is_read_with_defaults_and_overrides():
    s = Settings.from_env({})
    assert s.database_url == "postgresql:///enrichment"
    assert s.broker_url == s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.perplexity_rps == pytest.approx(1.6) and s.social_links_rps == pytest.approx(8.0)
    s = Settings.from_env({"REDIS_URL": "redis://h:1/2", "CELERY_BROKER_URL": "amqp://x",
                           "SOCIAL_LINKS_PLAN_RPS": "20", "PERPLEXITY_API_BASE": "http://s/"})
    assert s.broker_url == "amqp://x" and s.redis_url == "redis://h:1/2"
    assert s.social_links_rps == pytest.approx(16.0)
    assert s.perplexity_api_base == "http://s"


@pytest.mark.parametrize("env", [{"PERPLEXITY_API_STYLE": "rest"},
                                 {"PROVIDER_SAFETY_FACTOR": "1.5"}])
def test_bad_settings_fail_loudly(env):
    with pytest.raises(ValueError):
        Settings.from_env(env)


def test_plans_file_can_be_replaced(tmp_path):
    f = tmp_path / "plans.toml"
    f.write_text('[queues]\nfast = 2\nslow = 1\n[plans.solo]\nqueue = "slow"\nrps = 2\n'
                 'rpm = 60\nincluded = 10\noverage_usd = "1.50"\n')
    plans = Settings.from_env({"PLANS_FILE": str(f)}).plans
    assert plans.names == ["solo"] and plans["solo"].overage_usd == Decimal("1.50")
    f.write_text('[queues]\nfast = 1\n[plans.x]\nqueue = "nope"\nrps = 1\nrpm = 1\n'
                 'included = 1\noverage_usd = "1"\n')
    with pytest.raises(ValueError, match="unknown queue"):
        load_plans(f)
