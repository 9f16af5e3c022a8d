"""Shards: glob pattern intersection, the rules of the shards section, choosing a shard."""

from __future__ import annotations

import fnmatch
import itertools
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import config, shards
from collector.errors import ConfigError

# -- glob intersection ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "example"),
    [
        ("BTC*", "*USDT", "BTCUSDT"),
        ("BTC*", "ETH*", None),
        ("*USDT", "*BTC", None),
        ("BTCUSDT", "BTCUSDT", "BTCUSDT"),
        ("BTCUSDT", "BTC*", "BTCUSDT"),
        ("BTCUSDT", "ETH*", None),
        ("*", "*", ""),
        ("*", "", ""),
        ("?", "", None),
        ("??", "?", None),
        ("a*b", "*c", None),
        ("a*b*c", "*b*", "abc"),
        ("AB*", "*BA*", "ABA"),
        ("A*A", "A", None),
        ("A*A", "AA", "AA"),
        # classes intersect as sets
        ("[A-C]*", "[C-E]*", "C"),
        ("[A-C]*", "[D-F]*", None),
        ("[ABC]", "[!ABC]", None),
        ("[!A-Y]", "[X-Z]", "Z"),
        ("[!AB]", "[!A-Z]", "0"),
        ("BTC[0-9]*", "BTC[!0-9]*", None),
        ("BTC[0-9]*", "*[5]", "BTC5"),
        ("?[!U]*", "*USDT", "USDT"),
        ("[!U]*", "*USDT", "AUSDT"),
        # fnmatch's corner cases of bracket expressions
        ("[]]", "]", "]"),
        ("[!]]", "]", None),
        ("[a-]", "-", "-"),
        ("[z-a]", "?", None),  # an empty range matches nothing
        ("[!z-a]", "q", "q"),  # and its negation any character
        ("[abc", "[abc", "[abc"),  # never closed: a literal '['
        ("[^a]", "^", "^"),  # '^' does not negate in fnmatch
        ("[\\]", "\\", "\\"),
        ("a[*]", "a*", "a*"),
        # case-sensitive, as JobSettings.wants
        ("btc*", "BTC*", None),
    ],
)
def test_common_match_table(first: str, second: str, example: str | None) -> None:
    assert shards.common_match(first, second) == example
    assert shards.common_match(second, first) == example
    if example is not None:
        assert fnmatch.fnmatchcase(example, first) and fnmatch.fnmatchcase(example, second)


def test_common_match_of_three_patterns_and_of_none() -> None:
    assert shards.common_match("BTC*", "*USDT", "*C*") == "BTCUSDT"
    assert shards.common_match("BTC*", "*USDT", "ETH*") is None
    assert shards.common_match("*", "*", "?*") == "A"
    assert shards.common_match() == ""


def test_long_patterns_are_decided_quickly() -> None:
    # A naive backtracking search is exponential here; the search over positions is not.
    first, second = "*A" * 30 + "B", "*A" * 30 + "C"
    assert shards.common_match(first, second) is None
    assert shards.common_match("*A" * 30, "A" * 30) == "A" * 30


# Token-built patterns over a three-character world: A, B and one character standing for
# every other (Z), so that brute force over {A, B, Z} strings decides intersection exactly.
TOKENS = ["A", "B", "*", "?", "[AB]", "[!A]", "[A-B]", "[!AB]", "[B-Z]", "Z"]
token_patterns = st.lists(st.sampled_from(TOKENS), max_size=4).map("".join)


def _strings(alphabet: str, up_to: int) -> list[str]:
    return [
        "".join(chars)
        for length in range(up_to + 1)
        for chars in itertools.product(alphabet, repeat=length)
    ]


ABZ_STRINGS = _strings("ABZ", 8)


def _matcher(pattern: str) -> Any:
    return re.compile(fnmatch.translate(pattern)).match


def _max_length(pattern: str) -> int:
    return sum(1 for token in shards.parse(pattern) if token != shards.STAR)


@settings(max_examples=300, deadline=None)
@given(token_patterns, token_patterns)
def test_common_match_agrees_with_brute_force(first: str, second: str) -> None:
    # A shortest common string never needs more characters than the two patterns have
    # non-star tokens, so strings of up to 8 characters settle it.
    assert _max_length(first) + _max_length(second) <= 8
    first_matches, second_matches = _matcher(first), _matcher(second)
    common = [s for s in ABZ_STRINGS if first_matches(s) and second_matches(s)]
    example = shards.common_match(first, second)
    if not common:
        assert example is None
    else:
        assert example is not None
        assert fnmatch.fnmatchcase(example, first) and fnmatch.fnmatchcase(example, second)
        assert len(example) == len(common[0])  # ABZ_STRINGS is ordered by length


# Raw pattern text, brackets and all, over characters that bracket expressions treat
# specially; strings over those characters and their neighbours (membership in a bracket
# expression changes only at a written character or just after it).
RAW = "ab-!^]["
raw_patterns = st.text(alphabet=RAW + "*?", max_size=7)
NEIGHBOURS = sorted({c for x in RAW for c in (x, chr(ord(x) + 1))} | {"\x00", "Z"})


@settings(max_examples=400, deadline=None)
@given(raw_patterns, st.text(alphabet="".join(NEIGHBOURS), max_size=6))
def test_parsing_means_what_fnmatch_means(pattern: str, text: str) -> None:
    matched = shards.common_match(pattern, shards.literal(text)) is not None
    assert matched == fnmatch.fnmatchcase(text, pattern)


@settings(max_examples=300, deadline=None)
@given(raw_patterns, raw_patterns)
def test_common_match_on_raw_patterns_is_sound_and_finds_short_ones(
    first: str, second: str
) -> None:
    example = shards.common_match(first, second)
    if example is not None:
        assert fnmatch.fnmatchcase(example, first) and fnmatch.fnmatchcase(example, second)
    first_matches, second_matches = _matcher(first), _matcher(second)
    short = [s for s in _strings_cached(3) if first_matches(s) and second_matches(s)]
    if short:
        assert example is not None and len(example) <= len(short[0])


_CACHE: dict[int, list[str]] = {}


def _strings_cached(up_to: int) -> list[str]:
    if up_to not in _CACHE:
        _CACHE[up_to] = _strings("".join(NEIGHBOURS), up_to)
    return _CACHE[up_to]


@given(st.text(max_size=8))
def test_literal_matches_only_its_text(text: str) -> None:
    pattern = shards.literal(text)
    assert fnmatch.fnmatchcase(text, pattern)
    assert not fnmatch.fnmatchcase(text + "x", pattern)
    assert shards.common_match(pattern) == text


# -- the rules of the shards section -------------------------------------------------------

JOBS: dict[str, Any] = {
    "trades": {"every": "10s"},
    "depth": {"every": "10s", "limit": 5},
    "instruments": {"every": "5m"},
    "funding_rate": {"every": "5m", "markets": ["contract"]},
}


def settings_for(
    shards_section: Any, jobs: dict[str, Any] | None = None, **overrides: Any
) -> config.Settings:
    raw = {"jobs": JOBS if jobs is None else jobs, "shards": shards_section}
    return config.from_mapping(raw, source="shards.yaml", environ={}, overrides=overrides)


def refused(shards_section: Any, jobs: dict[str, Any] | None = None, **overrides: Any) -> str:
    with pytest.raises(ConfigError) as info:
        settings_for(shards_section, jobs, **overrides)
    assert "shards.yaml" in str(info.value)
    return str(info.value)


def test_overlapping_patterns_are_refused_with_an_example() -> None:
    message = refused(
        {
            "spot": {"markets": ["spot"], "symbols": ["BTC*"]},
            "spot2": {"markets": ["spot"], "symbols": "*USDT", "jobs": ["trades"]},
        }
    )
    assert (
        "shards: spot and spot2 both collect trades for spot symbols matching BTC* and "
        "*USDT (e.g. BTCUSDT)"
    ) in message


def test_disjoint_symbols_markets_or_jobs_do_not_overlap() -> None:
    by_symbols = {
        "btc": {"symbols": ["BTC*"], "jobs": ["trades", "depth"]},
        "eth": {"symbols": ["ETH*", "[!B]*USDC"], "jobs": ["trades", "depth"]},
        "meta": {"jobs": ["instruments", "funding_rate"]},
    }
    assert settings_for(by_symbols).shards.keys() == {"btc", "eth", "meta"}
    by_markets = {"spot": {"markets": ["spot"]}, "derivatives": {"markets": ["option", "contract"]}}
    assert settings_for(by_markets).unsharded() == []
    by_jobs = {"a": {"jobs": ["trades", "depth"]}, "b": {"jobs": ["instruments", "funding_rate"]}}
    assert settings_for(by_jobs).unsharded() == []


def test_all_overlaps_everything() -> None:
    message = refused({"a": {"jobs": ["trades"]}, "b": {"jobs": ["depth", "trades"]}})
    assert "a and b both collect trades for all spot symbols" in message
    message = refused({"a": {"jobs": ["trades"]}, "b": {"jobs": ["trades"], "symbols": "X?"}})
    assert "a and b both collect trades for spot symbols matching X? (e.g. XA)" in message


def test_a_jobs_own_symbols_narrow_what_shards_share() -> None:
    jobs = {**JOBS, "trades": {"every": "10s", "symbols": ["ETH*"]}}
    two = {
        "a": {"jobs": ["trades"], "symbols": ["BTC*", "*BTC"]},
        "b": {"jobs": ["trades"], "symbols": ["*USDT"]},
        "rest": {"jobs": ["depth", "instruments", "funding_rate"]},
    }
    # BTC* and *USDT meet, but not within the job's ETH*; *BTC and *USDT never meet.
    assert settings_for(two, jobs).shard is None
    jobs["trades"]["symbols"] = ["ETH*", "BTC*"]
    assert "(e.g. BTCUSDT)" in refused(two, jobs)


def test_a_symbol_is_never_empty() -> None:
    # A job whose only pattern is "" selects the empty string alone, which is no symbol:
    # two shards running it on one market share nothing.
    everything = [shards.Share(name, "trades", ("spot",), "all") for name in ("a", "b")]
    assert shards.overlaps(everything, {"trades": ("",)}) == []
    assert len(shards.overlaps(everything, {"trades": "all"})) == 1
    jobs = {"trades": {"every": "10s", "symbols": [""]}}
    assert settings_for({"a": {}, "b": {}}, jobs).shards.keys() == {"a", "b"}


def test_instruments_are_whole_markets_whatever_the_symbols() -> None:
    message = refused({"btc": {"symbols": ["BTC*"]}, "eth": {"symbols": ["ETH*"]}})
    assert "btc and eth both collect instruments for spot" in message
    assert "every symbol of a market" in message


def test_disabled_jobs_do_not_overlap_and_every_overlap_is_counted() -> None:
    jobs = {
        "trades": {"every": "10s", "enabled": False},
        "depth": {"every": "10s", "limit": 5, "enabled": False},
    }
    assert settings_for({"a": {}, "b": {}}, jobs).shards.keys() == {"a", "b"}
    message = refused({"a": {}, "b": {}})
    assert "and 9 more overlap(s)" in message  # 3 + 3 + 3 markets, 1 contract: 10 in all


def test_unknown_jobs_markets_and_jobs_without_an_entry_are_refused() -> None:
    assert "shards.a.jobs: unknown job trade; jobs are named after datasets" in refused(
        {"a": {"jobs": ["trade"]}}
    )
    assert "shards.a.jobs: klines has no entry under jobs" in refused({"a": {"jobs": ["klines"]}})
    assert "shards.a.markets[0]: Input should be 'spot', 'option' or 'contract'" in refused(
        {"a": {"markets": ["futures"]}}
    )
    assert "shards.a.markets: expected at least one" in refused({"a": {"markets": []}})
    assert "shards.a.jobs: expected all or a list of job names" in refused({"a": {"jobs": []}})
    assert "shards.a.symbols: a symbol or pattern cannot be empty" in refused(
        {"a": {"symbols": ["BTC*", ""]}}
    )
    assert "shards.a.colour: unknown key" in refused({"a": {"colour": "red"}})


def test_a_job_the_shard_cannot_run_on_its_markets_is_refused() -> None:
    message = refused({"a": {"jobs": ["funding_rate"], "markets": ["spot"]}})
    assert "shards.a.jobs: funding_rate runs on contract, and the shard collects spot only" in (
        message
    )
    jobs = {"funding_rate": {"every": "5m", "markets": ["contract"]}}
    assert "shards.a: collects nothing" in refused({"a": {"markets": ["spot"]}}, jobs)


@pytest.mark.parametrize("name", ["Spot", "all", "-x", "a.b", "a/b", "x" * 41, "", "é"])
def test_shard_names_become_file_names(name: str) -> None:
    assert f"shards.{name}: a shard name is 1 to 40 lowercase" in refused({name: {}}, {})


@pytest.mark.parametrize("name", ["spot", "spot-2", "a_b", "0", "x" * 40])
def test_good_shard_names(name: str) -> None:
    assert list(settings_for({name: {}}).shards) == [name]


def test_the_first_shard_compacts_unless_one_says_so() -> None:
    two = {"spot": {"markets": ["spot"]}, "rest": {"markets": ["option", "contract"]}}
    assert settings_for(two).compacting_shard == "spot"
    assert settings_for(two, shard="spot").compacts
    assert not settings_for(two, shard="rest").compacts
    two["rest"]["compact"] = True
    assert settings_for(two).compacting_shard == "rest"
    assert not settings_for(two, shard="spot").compacts
    assert settings_for(two, shard="rest").compacts
    two["spot"]["compact"] = True
    assert "shards: spot and rest say compact: true; exactly one shard compacts" in refused(two)


def test_without_shards_one_daemon_does_everything() -> None:
    for section in (None, {}):
        plain = settings_for(section)
        assert plain.shards == {} and plain.shard is None and plain.shard_name == "all"
        assert plain.compacts and plain.compacting_shard is None and plain.unsharded() == []


def test_unsharded_lists_enabled_jobs_and_markets_nobody_collects() -> None:
    jobs = {**JOBS, "depth": {"every": "10s", "limit": 5, "enabled": False}}
    partial = {
        "spot": {"markets": ["spot"]},
        "futures": {"markets": ["contract"], "jobs": ["trades"]},
    }
    expected = [
        ("trades", "option"),
        ("instruments", "option"),
        ("instruments", "contract"),
        ("funding_rate", "contract"),
    ]
    assert settings_for(partial, jobs).unsharded() == expected
    # A shard's settings report the same gaps, for the daemon's warning.
    assert settings_for(partial, jobs, shard="futures").unsharded() == expected


# -- choosing a shard ----------------------------------------------------------------------

TWO_SPOT = {
    "btc": {"markets": ["spot", "contract"], "symbols": ["BTC*"], "jobs": ["trades", "depth"]},
    "other": {"markets": ["spot"], "symbols": ["ETH*", "JEX*"], "jobs": ["trades"]},
    "meta": {"jobs": ["instruments", "funding_rate"], "compact": True},
}


def test_a_shard_gets_its_jobs_markets_and_symbols() -> None:
    whole = settings_for(TWO_SPOT)
    btc = settings_for(TWO_SPOT, shard="btc")
    assert btc.shard == "btc" and btc.shard_name == "btc" and not btc.compacts
    assert list(btc.jobs) == ["trades", "depth"]
    assert btc.jobs["trades"].markets == ("spot", "contract")
    assert btc.jobs["trades"].wants("BTCUSDT") and not btc.jobs["trades"].wants("ETHUSDT")
    assert btc.jobs["trades"].every == whole.jobs["trades"].every
    assert btc.jobs["depth"].limit == 5
    other = settings_for(TWO_SPOT, shard="other")
    assert list(other.jobs) == ["trades"] and other.jobs["trades"].markets == ("spot",)
    assert other.jobs["trades"].wants("JEXUSDT") and not other.jobs["trades"].wants("BTCUSDT")
    meta = settings_for(TWO_SPOT, shard="meta")
    assert meta.compacts and list(meta.jobs) == ["instruments", "funding_rate"]
    assert meta.jobs["funding_rate"].markets == ("contract",)
    # The whole file's settings are unchanged, and still list every shard.
    assert whole.jobs["trades"].wants("ANYTHING") and whole.jobs["trades"].markets == (
        "spot",
        "option",
        "contract",
    )
    assert btc.shards == whole.shards


def test_a_job_left_without_markets_is_removed() -> None:
    jobs = {"trades": {"every": "10s", "markets": ["spot"]}, "funding_rate": JOBS["funding_rate"]}
    shards_section = {"spot": {"markets": ["spot"]}, "futures": {"markets": ["contract"]}}
    assert list(settings_for(shards_section, jobs, shard="futures").jobs) == ["funding_rate"]
    assert list(settings_for(shards_section, jobs, shard="spot").jobs) == ["trades"]


def test_wants_honours_the_job_and_the_shard() -> None:
    jobs = {"trades": {"every": "10s", "symbols": ["*USDT", "*BTC"]}}
    chosen = settings_for({"btc": {"symbols": ["BTC*"]}}, jobs, shard="btc").jobs["trades"]
    assert chosen.wants("BTCUSDT")
    assert not chosen.wants("ETHUSDT")  # the shard says no
    assert not chosen.wants("BTCETH")  # the job says no
    assert chosen.wants("BTCBTC")  # both say yes


def test_choosing_an_unknown_shard_or_one_without_a_section_is_refused() -> None:
    message = refused(TWO_SPOT, shard="eth")
    assert "no shard named 'eth'; the shards are btc, other, meta" in message
    assert "--shard btc: the file has no shards section" in refused(None, shard="btc")
    whole = settings_for(TWO_SPOT)
    assert whole.for_shard("btc") == settings_for(TWO_SPOT, shard="btc")
    with pytest.raises(ConfigError, match="already shard btc's"):
        whole.for_shard("btc").for_shard("meta")


def test_load_chooses_a_shard(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text(
        "jobs:\n  trades: {every: 10s}\n  instruments: {every: 5m}\n"
        "shards:\n  spot: {markets: [spot]}\n  rest: {markets: [option, contract]}\n"
    )
    chosen = config.load(path, environ={}, overrides={"shard": "rest"})
    assert chosen.shard == "rest" and chosen.jobs["trades"].markets == ("option", "contract")
    assert chosen.state_dir() == Path("data") / "_local" / "rest"
    with pytest.raises(ConfigError, match=r"schedules.yaml: shards: no shard named 'x'"):
        config.load(path, environ={}, overrides={"shard": "x"})


def test_shard_and_shard_symbols_cannot_be_set_in_a_file() -> None:
    message = refused(None, {"trades": {"every": "10s", "shard_symbols": ["BTC*"]}})
    assert "jobs.trades.shard_symbols: not a setting" in message
    with pytest.raises(ConfigError, match="shard: the shard is chosen on the command line"):
        config.from_mapping({"jobs": {}, "shard": "btc"}, source="shards.yaml", environ={})


# -- the whole pipeline, checked against brute force --------------------------------------

SYMBOL_PATTERNS = ["A*", "*B", "A?", "[AB]*", "[!A]*", "?", "B", "AB", "*A*"]
WORLD = ABZ_STRINGS[1:40]  # non-empty symbols of up to 3 characters over A, B, Z
shard_sections = st.dictionaries(
    st.sampled_from(["s1", "s2", "s3"]),
    st.fixed_dictionaries(
        {
            "markets": st.lists(
                st.sampled_from(["spot", "option", "contract"]), min_size=1, unique=True
            ),
            "symbols": st.one_of(
                st.just("all"), st.lists(st.sampled_from(SYMBOL_PATTERNS), min_size=1)
            ),
        }
    ),
    min_size=1,
)


@settings(max_examples=150, deadline=None)
@given(shard_sections)
def test_accepted_shards_never_collect_a_symbol_twice(section: dict[str, Any]) -> None:
    jobs = {"trades": {"every": "10s"}}
    try:
        whole = settings_for(section, jobs)
    except ConfigError as exc:
        # Refused: the two shards it names share the market, and want the example.
        message = str(exc)
        assert "both collect trades for" in message
        first, second = message.split("shards: ", 1)[1].split(" both")[0].split(" and ")
        words = message.split("collect trades for ", 1)[1].split(" ")
        market = words[1] if words[0] == "all" else words[0]
        example = message.split("(e.g. ")[1].split(")")[0] if "(e.g. " in message else "ANY"
        for name in (first, second):
            share = section[name]
            assert market in share["markets"]
            patterns = ["*"] if share["symbols"] == "all" else share["symbols"]
            assert any(fnmatch.fnmatchcase(example, p) for p in patterns)
        return
    chosen = [whole.for_shard(name).jobs.get("trades") for name in whole.shards]
    for market, symbol in itertools.product(("spot", "option", "contract"), WORLD):
        takers = [j for j in chosen if j is not None and market in j.markets and j.wants(symbol)]
        assert len(takers) <= 1, (market, symbol)


# -- one daemon per shard ------------------------------------------------------------------


def test_a_shard_running_on_another_host_is_refused_and_a_dead_one_taken_over(
    tmp_path: Path,
) -> None:
    """The local lock only guards one state dir: a shard already collecting elsewhere
    (its heartbeat in the archive is fresh) makes a second one refuse to start; once that
    heartbeat is stale (the host died), the shard starts."""
    import asyncio
    import datetime as dt
    import json

    from collector.collect.daemon import Daemon
    from collector.errors import ArchiveLockedError
    from collector.ops import runstate

    raw = {
        "storage": {"uri": str(tmp_path / "data")},
        "jobs": {"trades": {"every": "1s"}, "instruments": {"every": "1h"}},
        "shards": {"spot": {"markets": ["spot"]}, "rest": {"markets": ["option", "contract"]}},
    }
    settings = config.from_mapping(
        raw,
        source="<test>",
        environ={},
        overrides={"shard": "spot", "base_url": "http://127.0.0.1:9"},
    )
    state = tmp_path / "data" / runstate.state_file("spot")
    state.parent.mkdir(parents=True)

    def elsewhere(age_s: float) -> None:
        beat = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_s)
        started = beat - dt.timedelta(minutes=5)
        state.write_text(
            json.dumps(
                {
                    "format": runstate.FORMAT,
                    "shard": "spot",
                    "pid": 4242,
                    "host": "other-host\x1b[2J",
                    "version": "0.1.0",
                    "started_at": runstate.iso(started),
                    "heartbeat_at": runstate.iso(beat),
                    "stopped_at": None,
                    "phase": "collecting",
                    "jobs": {},
                }
            )
        )

    elsewhere(age_s=1)
    with pytest.raises(ArchiveLockedError, match="already running on host") as caught:
        asyncio.run(Daemon(settings).run(1, handle_signals=False))
    assert "\x1b" not in str(caught.value)  # the other host's name is shown escaped
    elsewhere(age_s=3600)
    asyncio.run(Daemon(settings).run(1, handle_signals=False))  # takes over
    after = runstate.load(tmp_path / "data", "spot")
    assert after is not None and after.host != "other-host\x1b[2J"
