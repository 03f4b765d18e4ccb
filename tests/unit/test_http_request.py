"""Chat completion requests as MoA queries: model names, body fields, messages; the bind checks."""

from __future__ import annotations

from typing import Any

import pytest

from dmoa_p2p.config import ConfigError, NodeConfig, is_loopback, parse_http_bind
from dmoa_p2p.http import ApiError, MoaSettings, flatten_messages, parse_chat_request, parse_model

LOCAL = "smollm2"


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "dmoa", "messages": [{"role": "user", "content": "Why?"}], **fields}


def refused(data: Any, status: int = 400) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_chat_request(data, LOCAL)
    assert caught.value.status == status
    return caught.value


def test_model_names_stand_for_moa_configurations() -> None:
    assert parse_model("dmoa", LOCAL) == MoaSettings(1, 2, "augmented", "moa")
    assert parse_model(
        "dmoa:layers=2,proposers=3,strategy=raw,aggregator=dmoa-paper", LOCAL
    ) == MoaSettings(2, 3, "raw", "dmoa-paper")
    assert parse_model("dmoa:M=0,k=0", LOCAL) == MoaSettings(0, 0)
    assert parse_model("dmoa:", LOCAL) == MoaSettings()
    assert parse_model(LOCAL, LOCAL) == MoaSettings(0, 0, "local", "moa")


@pytest.mark.parametrize(
    ("name", "status", "words"),
    [
        ("gpt-4o", 404, "does not exist"),
        ("dmoax", 404, "does not exist"),
        ("dmoa:depth=2", 400, "not KEY=VALUE"),
        ("dmoa:layers", 400, "not KEY=VALUE"),
        ("dmoa:layers=two", 400, "model.layers must be an integer"),
        ("dmoa:layers=99", 400, "from 0 to 16"),
        ("dmoa:strategy=psychic", 400, "no strategy plugin named 'psychic'"),
    ],
)
def test_bad_model_names_say_what_is_wrong(name: str, status: int, words: str) -> None:
    with pytest.raises(ApiError, match=words) as caught:
        parse_model(name, LOCAL)
    assert caught.value.status == status
    assert caught.value.param is not None and caught.value.param.startswith("model")


def test_a_request_becomes_a_query() -> None:
    chat = parse_chat_request(
        body(max_tokens=32, temperature=0.0, seed=7, stream=True,
             stream_options={"include_usage": True}, include_trace=True),
        LOCAL,
    )
    query = chat.query
    assert (query.prompt, query.layers, query.proposers) == ("Why?", 1, 2)
    assert (query.params.max_tokens, query.params.temperature, query.params.seed) == (32, 0.0, 7)
    assert chat.stream and chat.include_usage and chat.include_trace
    assert not parse_chat_request(body(), LOCAL).include_usage


def test_body_fields_override_the_model_name() -> None:
    chat = parse_chat_request(
        body(model="dmoa:layers=2", dmoa={"proposers": 1, "aggregator": "longest",
                                          "layer_timeout_s": 5}),
        LOCAL,
    )
    assert (chat.query.layers, chat.query.proposers, chat.query.aggregator) == (2, 1, "longest")
    assert chat.query.layer_timeout_s == 5.0
    assert parse_chat_request(body(max_completion_tokens=9), LOCAL).query.params.max_tokens == 9


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ([], None),
        ({"messages": []}, "model"),
        (body(messages=[]), "messages"),
        (body(messages=[{"role": "assistant", "content": "hi"}]), "messages"),
        (body(messages=[{"role": "tool", "content": "x"}]), "messages[0].role"),
        (body(messages=[{"role": "user", "content": "  "}]), "messages[0]"),
        (body(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
         "messages[0].content"),
        (body(temperature=3), "temperature"),
        (body(max_tokens=0), "max_tokens"),
        (body(n=2), "n"),
        (body(stream="yes"), "stream"),
        (body(dmoa={"layers": -1}), "dmoa.layers"),
        (body(dmoa={"layer_timeout_s": 0}), "dmoa.layer_timeout_s"),
        (body(dmoa=[1]), "dmoa"),
    ],
)
def test_bad_requests_name_the_parameter(data: Any, param: str | None) -> None:
    error = refused(data)
    assert error.param == param
    assert error.body()["error"]["type"] == "invalid_request_error"


def test_conversations_are_flattened_into_one_prompt() -> None:
    assert flatten_messages([{"role": "user", "content": "Hi"}]) == "Hi"
    prompt = flatten_messages(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another?"},
        ]
    )
    assert prompt == (
        "Be brief.\n\nConversation so far:\n\nUser: Name a colour.\n\nAssistant: Blue."
        "\n\nUser: Another?"
    )
    assert flatten_messages(
        [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    ) == "Be brief.\n\nHi"


def test_http_binds_are_parsed_and_exposure_needs_a_key(tmp_path: Any) -> None:
    assert parse_http_bind("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_http_bind("[::1]:0") == ("::1", 0)
    assert parse_http_bind("8080") == ("127.0.0.1", 8080)
    for bad in ("", ":8080", "127.0.0.1:", "127.0.0.1:http", "host:70000"):
        with pytest.raises(ConfigError, match="not HOST:PORT"):
            parse_http_bind(bad)
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    with pytest.raises(ConfigError, match="set an API key"):
        NodeConfig(data_dir=tmp_path, http="0.0.0.0:8080")
    with pytest.raises(ConfigError, match="set an API key"):
        NodeConfig.from_mapping({"data_dir": str(tmp_path), "http": "0.0.0.0:8080"})
    exposed = NodeConfig(data_dir=tmp_path, http="0.0.0.0:8080", http_api_key="secret")
    assert "secret" not in repr(exposed)


def test_stop_is_a_string_or_up_to_four() -> None:
    def stop_of(value: Any) -> tuple[str, ...]:
        return parse_chat_request(body(stop=value), LOCAL).query.params.stop

    assert stop_of(None) == ()
    assert stop_of("\n\n") == ("\n\n",)
    assert stop_of(["User:", "###", "a", "b"]) == ("User:", "###", "a", "b")
    for value, param in (
        (["a"] * 5, "stop"),
        ([], "stop"),
        (7, "stop"),
        ("", "stop"),
        (["ok", ""], "stop[1]"),
        (["ok", 3], "stop[1]"),
        ("x" * 257, "stop"),
    ):
        assert refused(body(stop=value)).param == param


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tools", [{"type": "function", "function": {"name": "lookup"}}]),
        ("tool_choice", "required"),
        ("tool_choice", {"type": "function", "function": {"name": "lookup"}}),
        ("functions", [{"name": "lookup"}]),
        ("function_call", {"name": "lookup"}),
        ("response_format", {"type": "json_object"}),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x"}}),
        ("logprobs", True),
        ("logprobs", 1),
        ("top_logprobs", 3),
        ("n", 2),
        ("n", True),
        ("logit_bias", {"50256": -100}),
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1),
        ("top_p", 0.9),
        ("modalities", ["text", "audio"]),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("prediction", {"type": "content", "content": "..."}),
        ("web_search_options", {}),
    ],
)
def test_fields_the_node_cannot_honour_are_refused_by_name(field: str, value: Any) -> None:
    error = refused(body(**{field: value}))
    assert (error.param, error.code) == (field, "unsupported_parameter")
    assert error.message.startswith(f"{field} = ") and "cannot be honoured" in error.message


@pytest.mark.parametrize("field", ["top_k", "min_p", "temprature", "repeat_penalty"])
def test_unknown_fields_are_refused_as_openai_does(field: str) -> None:
    error = refused(body(**{field: 1}))
    assert (error.param, error.code) == (field, "unknown_parameter")
    assert "unrecognized request field" in error.message


def test_fields_that_ask_for_nothing_are_accepted() -> None:
    harmless = {
        "user": "alice",
        "metadata": {"run": "7"},
        "store": False,
        "service_tier": "auto",
        "parallel_tool_calls": True,
        "stream_options": {"include_usage": False},
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "top_p": 1,
        "tools": [],
        "tool_choice": "none",
        "function_call": "auto",
        "response_format": {"type": "text"},
        "logprobs": False,
        "top_logprobs": 0,
        "logit_bias": {},
        "modalities": ["text"],
        "n": 1,
        "audio": None,  # null is absent
        "seed": None,
    }
    chat = parse_chat_request(body(**harmless), LOCAL)
    assert chat.query == parse_chat_request(body(), LOCAL).query


def test_unknown_moa_settings_are_refused() -> None:
    assert refused(body(dmoa={"layerz": 2})).param == "dmoa.layerz"
