"""`flexsfc bench --quick` end to end: every section runs (or says why it skips) and writes its files.

Real namespaces, veths, eBPF and traffic tools; no numeric assertions (performance is for the
benchmark itself, on a quiet machine). Also a few fast checks of the harness that need no root.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from flexsfc.bench import harness
from flexsfc.bench.context import BenchContext, read_json
from flexsfc.bench.sections import resources

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.timeout(480)
def test_bench_quick_writes_results_for_every_section(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "flexsfc"), "bench", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=460,  # the multinode section adds ~40 s
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    index = read_json(out / "index.json")
    assert set(index["sections"]) == set(harness.SECTION_NAMES)
    assert index["command"] and index["machine"]["kernel"]
    assert "commit" in index["source"]  # None outside a git checkout
    for name, entry in index["sections"].items():
        assert entry["status"] in ("ok", "skipped"), f"{name}: {entry.get('reason')}"
        # The suite's set-up installs every tool a section needs: as root, a skip is a bug.
        assert entry["status"] == "ok" or os.geteuid() != 0, f"{name} skipped: {entry.get('reason')}"
        if entry["status"] == "skipped":
            assert entry["reason"], name
            continue
        result = json.loads((out / entry["json"]).read_text())
        assert result["section"] == name
        assert result["command"] == index["command"]
        assert result["machine"]["nproc"] >= 1
        for plot in entry["plots"]:
            assert (out / plot).stat().st_size > 0
        if name == "traffic":  # the 64 B sender count was calibrated, and every UDP run says its loss
            data = result["data"]
            assert data["params"]["udp_senders"] == data["udp_sender_calibration"]["senders"] >= 1
            veth = data["samples"]["2pod"]["veth"]
            assert len(veth["udp_loss"]) == len(veth["udp_pps"])
        if name == "switched":  # every path carried traffic in every slot of every phase
            for phase in result["data"]["phases"].values():
                assert {slot["path"] for slot in phase["slots"]} == set(result["data"]["paths"])
                # no empty slot, no slot without a sample
                assert all(slot["value"] for slot in phase["slots"])
        if name == "path_cost":  # the samples found the cross-connection's program and hook
            over = result["data"]["over_veth"]["xc-peer"]
            assert over["program"] > 0 and over["tc_hook"] > 0
    # Every section removed what it created: bench pods, host links, pins.
    assert (
        not [ns for ns in os.listdir("/run/netns") if ns.startswith("fbench-")]
        if os.path.isdir("/run/netns")
        else True
    )
    pins = Path("/sys/fs/bpf/flexsfc")
    assert not [p.name for p in pins.iterdir() if p.name.startswith("bench-")] if pins.is_dir() else True
    # Figure 4 and the remap comparison need nothing but the repository: they always run.
    assert index["sections"]["resources"]["status"] == "ok"
    assert "fig4_resources.png" in index["sections"]["resources"]["plots"]


def test_resources_reads_the_manifests_requests() -> None:
    per_nf = resources.requested_millicpu(resources.DEFAULT_MANIFEST_DIR)
    assert per_nf == {"firewall": 200, "policer": 150, "gateway": 100}


def test_resources_rejects_a_container_without_cpu_request(tmp_path: Path) -> None:
    (tmp_path / "nf.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n"
        "    metadata: {labels: {flexsfc.io/network-function: x}}\n"
        "    spec: {containers: [{name: c, image: i}]}\n"
    )
    with pytest.raises(resources.ManifestError, match=r"resources\.requests\.cpu"):
        resources.requested_millicpu(tmp_path)


def test_unknown_section_is_a_usage_error(tmp_path: Path) -> None:
    from flexsfc.cli.bench import bench

    result = CliRunner().invoke(bench, ["--only", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "nope" in result.output


def test_skipped_sections_keep_the_run_going(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without root every section but `resources` skips with its reason; resources still runs."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    ctx = BenchContext(out_dir=tmp_path, quick=True, command="test", log=lambda line: None)
    index = harness.run(ctx, ("resources", "traffic"))
    assert index["sections"]["resources"]["status"] == "ok"
    assert index["sections"]["traffic"]["status"] == "skipped"
    assert "root" in index["sections"]["traffic"]["reason"]
