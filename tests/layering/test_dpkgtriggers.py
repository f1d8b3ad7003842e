"""Which trigger activations strata hands to ``dpkg-trigger``, checked against the real one.

:func:`layering.dpkgtriggers.needed_activations` leaves out the calls that would not
change ``triggers/Unincorp``: the file the real ``dpkg-trigger`` writes from the whole
sequence and from the kept calls must be byte for byte the same, whatever the
maintainer scripts left in it before.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layering.dpkgtriggers import Activation, needed_activations
from tests.util import require_tool

ACTIVATIONS = st.builds(Activation, st.sampled_from(["ldconfig", "T", "/usr/share/man"]),
                        st.sampled_from(["foo", "bar", "baz"]), st.booleans())


def _unincorp(admin: Path, before: str, calls: list[Activation]) -> str:
    """``triggers/Unincorp`` after the real ``dpkg-trigger`` made ``calls``."""
    subprocess.run(["rm", "-rf", admin], check=True)
    (admin / "triggers").mkdir(parents=True)
    (admin / "status").touch()
    (admin / "triggers/Unincorp").write_text(before)
    for a in calls:
        subprocess.run(["dpkg-trigger", f"--admindir={admin}", f"--by-package={a.by}",
                        *(["--no-await"] if a.noawait else []), a.name], check=True)
    return (admin / "triggers/Unincorp").read_text()


def test_libraries_activating_ldconfig_make_one_call() -> None:
    libs = [Activation("ldconfig", f"lib{i}:amd64", True) for i in range(24)]
    assert needed_activations(libs) == libs[:1]


@pytest.mark.parametrize("before", ["", "T foo\n", "T - bar\nldconfig baz\n"])
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(ACTIVATIONS, max_size=8))
def test_left_out_calls_leave_unincorp_as_dpkg_trigger_writes_it(
        tmp_path: Path, before: str, calls: list[Activation]) -> None:
    require_tool("dpkg-trigger")
    kept = needed_activations(calls)
    assert _unincorp(tmp_path / "all", before, calls) == \
        _unincorp(tmp_path / "kept", before, kept)
