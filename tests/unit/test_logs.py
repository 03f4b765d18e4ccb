"""Logging: what the default output says and hides, one line per record, the log file."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmoa_p2p import logs
from dmoa_p2p.logs import EVENTS, LogFileError, claim_libp2p_logger, configure_logging

LONG = "a message longer than any terminal " * 8


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Leave the loggers as they were, as pytest's caplog expects them."""
    names = ("dmoa_p2p", EVENTS, "libp2p", "libp2p.network.auto_connector")
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level) for n in names}
    propagate = {n: logging.getLogger(n).propagate for n in names}
    libp2p_level = logs._libp2p_level
    yield
    for handler in logs._installed:
        handler.close()
    logs._installed.clear()
    logs._libp2p_level = libp2p_level
    for name, (handlers, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers = handlers
        logger.setLevel(level)
        logger.propagate = propagate[name]


def emit_everything() -> None:
    logging.getLogger(EVENTS).info("joined the swarm: 3 peers")
    logging.getLogger("dmoa_p2p.node").info("an ordinary detail")
    logging.getLogger("dmoa_p2p.node").warning("something is wrong")
    logging.getLogger("libp2p.pubsub.gossipsub").warning("GRAFT flood detected")
    logging.getLogger("libp2p.pubsub.gossipsub").error("a libp2p error")
    # py-libp2p sets this one to INFO itself, whatever its parent's level
    chatty = logging.getLogger("libp2p.network.auto_connector")
    chatty.setLevel(logging.INFO)
    chatty.info("AUTO_CONNECTOR_STATE")


def test_default_output_has_the_events_and_warnings_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(0)
    emit_everything()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"\d\d:\d\d:\d\d joined the swarm: 3 peers", lines[0])
    assert re.fullmatch(r"\d\d:\d\d:\d\d warning: something is wrong", lines[1])


def test_quiet_output_has_the_warnings_only(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(-1)  # -q
    emit_everything()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"\d\d:\d\d:\d\d warning: something is wrong", lines[0])


def test_verbose_output_is_one_plain_line_per_record_however_long(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(1)
    logging.getLogger("dmoa_p2p.node").info(LONG + "\nsecond line")
    emit_everything()
    lines = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO    dmoa_p2p.node: .{280,}\\nsecond line", lines[0])
    assert any(line.endswith("libp2p.pubsub.gossipsub: a libp2p error") for line in lines)
    assert not any("GRAFT" in line or "AUTO_CONNECTOR" in line for line in lines)  # below ERROR


def test_an_exception_is_one_line_below_vv_and_a_traceback_with_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for verbosity, lines in ((1, 1), (2, 4)):
        configure_logging(verbosity)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("dmoa_p2p.x").exception("it failed")
        err = capsys.readouterr().err
        assert "it failed (RuntimeError: boom)" in err or "RuntimeError: boom" in err
        assert len(err.splitlines()) >= lines
        assert (len(err.splitlines()) == 1) == (verbosity == 1)


def test_the_log_file_gets_every_record_at_the_chosen_verbosity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "logs" / "node.log"
    configure_logging(1, path)
    emit_everything()
    configure_logging(1, path)  # appends; the first handler is closed
    logging.getLogger(EVENTS).info("model loaded")
    lines = path.read_text().splitlines()
    assert [re.sub(r"^\S+ \S+ [A-Z]+ +", "", line) for line in lines] == [
        "dmoa_p2p.events: joined the swarm: 3 peers",
        "dmoa_p2p.node: an ordinary detail",
        "dmoa_p2p.node: something is wrong",
        "libp2p.pubsub.gossipsub: a libp2p error",
        "dmoa_p2p.events: model loaded",
    ]
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", line) for line in lines)
    assert len(capsys.readouterr().err.splitlines()) == 5


def test_an_unwritable_log_file_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(LogFileError, match=f"cannot write the log file {tmp_path}"):
        configure_logging(0, tmp_path)  # a directory


def test_claiming_back_the_logger_that_importing_libp2p_reset(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(0)
    libp2p = logging.getLogger("libp2p")
    libp2p.handlers.clear()  # what libp2p's setup_logging() does on import
    libp2p.setLevel(logging.WARNING)
    claim_libp2p_logger()
    libp2p.warning("GRAFT flood detected")
    assert capsys.readouterr().err == ""


def test_a_real_libp2p_import_after_configuring_prints_nothing() -> None:
    script = (
        "import logging\n"
        "from dmoa_p2p.logs import configure_logging\n"
        "configure_logging(0)\n"
        "import dmoa_p2p.overlay._libp2p\n"
        "logging.getLogger('libp2p.pubsub.gossipsub').warning('GRAFT flood detected')\n"
        "logging.getLogger('dmoa_p2p.events').info('joined')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stderr.strip().endswith(" joined")
    assert "GRAFT" not in done.stderr
