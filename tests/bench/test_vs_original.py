"""bench/vs_original.py: the report's arithmetic and tables from synthetic runs, and one real run of
our side on the small net (8 images)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import vs_original  # noqa: E402


def run(wall, rss=100.0, load=1.0, **extra):
    return dict(wall_s=wall, cpu_s=wall * 2, peak_rss_mb=rss, load_before=load, load_after=load + 0.5, **extra)


def synthetic_report():
    args = argparse.Namespace(images=16, repeats=3, snapshot="/tmp/x/original_magic_init", original="ORIG",
                              command="python bench/vs_original.py --original ORIG", settle=20.0)
    profile = {"passes": {"forward": 3, "backward": 2}}
    raw = {"vs": {"small5/kmeans": {"original": [run(10, 900), run(30, 2000), run(20, 1000)],
                                    "ours": [run(4, 300, load=3), run(6, 350), run(5, 320)]},
                  "small5/gaussian": {"original": [], "ours": [run(2), run(3), run(1)]}},
           "passes": {"small5": {"fb_pass": [{"fb_pass_s": 0.5}, {"fb_pass_s": 0.4}],
                                 "configs": {"gaussian + both": [run(3, after_startup_s=1.2, **profile),
                                                                 run(3, after_startup_s=0.8, **profile)]}}},
           "scaling": {"40": [run(7, 800)], "1280": [run(90, 990)]},
           "corpus": {"vgg__VGG_ILSVRC_19_layers_deploy": [dict(run(78, 4986), images=16, rc=0)]},
           "spread": {"small5/kmeans": {"original": 1.5, "ours": 1.125}, "small5/gaussian": {"ours": None}}}
    return vs_original.build_report(args, raw, "2026-12-01 04:00", ([1.0, 2.0, 3.0], [1.5, 2.5, 3.5]))


def test_report_takes_medians_largest_peaks_and_the_wall_time_ratio():
    report = synthetic_report()
    kmeans, gaussian = report["vs"]
    assert (kmeans["net"], kmeans["init"]) == ("small5", "kmeans")
    assert kmeans["original"]["wall_s"] == 20 and kmeans["ours"]["wall_s"] == 5
    assert kmeans["ratio"] == pytest.approx(4.0)
    assert kmeans["original"]["peak_rss_mb"] == 2000 and kmeans["ours"]["peak_rss_mb"] == 350
    assert "original" not in gaussian and "ratio" not in gaussian           # ours only
    passes = report["passes"]["small5"]
    assert passes["fb_pass_s"] == 0.4                                         # the best pass
    assert passes["gaussian_both_per_pass"] == pytest.approx(1.0 / 0.4)      # median after start-up / pass
    assert [r["images"] for r in report["scaling"]] == [40, 1280]
    assert report["corpus"][0]["peak_rss_mb"] == 4986
    assert report["settle_s"] == 20.0
    json.dumps(report)


def test_vs_alternates_which_side_runs_first_and_settles_before_each_run(monkeypatch):
    calls = []
    monkeypatch.setattr(vs_original, "measured", lambda argv: calls.append(argv[0]) or run(1))
    monkeypatch.setattr(vs_original.time, "sleep", lambda s: calls.append(("sleep", s)))
    monkeypatch.setattr(vs_original, "original_argv", lambda *a: ["original"])
    monkeypatch.setattr(vs_original, "ours_argv", lambda *a: ["ours"])
    monkeypatch.setattr(vs_original, "log", lambda *a: None)
    args = argparse.Namespace(nets=["small5"], snapshot="S", inputdim={"small5": "P"}, photos="D", images=16,
                              settle=5.0, work=type("W", (), {"host": vs_original.Path("/w"), "chroot": str})())
    raw = {}
    for repeat in (0, 1):
        vs_original.run_vs(args, "LIST", repeat, raw)
    per_init = [c for c in calls if c != ("sleep", 5.0)]
    assert per_init == ["original", "ours"] * len(vs_original.INITS) + ["ours", "original"] * len(vs_original.INITS)
    assert calls.count(("sleep", 5.0)) == len(per_init)            # one settle before every timed run
    assert len(raw["small5/kmeans"]["original"]) == len(raw["small5/kmeans"]["ours"]) == 2


def test_markdown_has_every_part_and_the_ratio_column():
    text = vs_original.markdown(synthetic_report())
    assert "at the start 1.00/2.00/3.00, at the end 1.50/2.50/3.50" in text
    assert "    python bench/vs_original.py --original ORIG" in text
    assert "| small5 | kmeans | 20.0 | 5.0 | 4.00 | 40.0 | 10.0 | 2000 | 350 | 1.50x | 1.12x | 1.0-3.5 |" in text
    assert "| small5 | gaussian | - | 2.0 | - | - | 4.0 | - | 100 | - | - | 1.0-1.5 |" in text
    assert "| small5 | gaussian + both | 3 | 2 | 1.00 | 0.40 | 2.50 |" in text
    assert "within 2.5 forward+backward passes: small5 2.50 (yes)" in text
    assert "| 1280 | 90.0 | 180.0 | 990 | 1.0-1.5 |" in text
    assert "| vgg__VGG_ILSVRC_19_layers_deploy | 16 | 0 | 78.0 | 156.0 | 4986 | 1.0-1.5 |" in text
    tables = [block.splitlines() for block in text.split("\n\n") if block.startswith("|")]
    assert len(tables) == 4
    for table in tables:                                  # every row has the header's number of cells
        assert {line.count("|") for line in table} == {table[0].count("|")}


def test_original_sees_the_net_with_input_dim(tmp_path):
    from google.protobuf import text_format
    from magic_init.proto import caffe_pb2
    work = argparse.Namespace(host=tmp_path, chroot=lambda path: "/tmp/w/" + Path(path).name)
    inside = vs_original.inputdim_prototxt(vs_original.NETS["small5"], work)
    assert inside == "/tmp/w/small5_inputdim.prototxt"
    text = (tmp_path / "small5_inputdim.prototxt").read_text()
    assert 'input: "data"' in text and "Input" not in text
    assert [int(line.split()[1]) for line in text.splitlines() if line.startswith("input_dim")] == [16, 3, 64, 64]
    net = text_format.Merge(text, caffe_pb2.NetParameter())
    assert list(net.input) == ["data"] and net.layer[0].name == "conv1"
    assert [layer.name for layer in net.layer][-1] == "fc5"


def test_original_command_reads_the_whole_sample_in_batches_of_16():
    argv = vs_original.original_argv("/snap", "/p.prototxt", "/o.caffemodel", "/tmp/photos/*.jpg", 40, "gaussian")
    assert argv[argv.index("original"):] == ["original", "/snap", "/p.prototxt", "/o.caffemodel", "0", "-z", "-cs",
                                             "-t", "elwise", "-d", "/tmp/photos/*.jpg", "-bs", "16", "-nit", "3", "-q"]


@pytest.mark.slow
def test_ours_on_the_small_net(caffe_env, tmp_path):
    report = vs_original.main(["--no-original", "--nets", "small5", "--images", "8", "--repeats", "1",
                               "--parts", "vs,passes", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "vs_original.json").read_text())
    assert written == json.loads(json.dumps(report))
    assert {"machine", "started", "load_average_start", "load_average_end", "command", "vs", "passes"} <= set(written)
    assert [(r["net"], r["init"]) for r in written["vs"]] == [("small5", "kmeans"), ("small5", "gaussian")]
    for row in written["vs"]:
        assert row["ours"]["wall_s"] > 0 and row["ours"]["peak_rss_mb"] > 0 and "original" not in row
        assert {"argv", "load_before", "load_after"} <= set(row["ours"]["runs"][0])
        assert 1 <= row["spread"]["ours"] < 10 and "original" not in row["spread"]   # the model written, measured
    configs = written["passes"]["small5"]["configs"]
    assert configs["gaussian + Alg. 1"]["passes"] == {"forward": 1, "backward": 0}
    assert configs["gaussian + both"]["passes"]["backward"] > 0
    assert written["passes"]["small5"]["gaussian_both_per_pass"] > 0
    assert "| small5 | kmeans | - |" in (tmp_path / "vs_original.md").read_text()


def test_resnet_152_is_made_from_the_corpus_resnet_101(tmp_path, monkeypatch):
    corpus = REPO.parent / "shared" / "realnets"
    if not (corpus / "resnet__ResNet-101-deploy.prototxt").exists():
        pytest.skip("no real-nets folder at %s" % corpus)
    monkeypatch.setattr(vs_original, "OUT", tmp_path)
    path = vs_original.corpus_path(corpus, "resnet__ResNet-152-deploy")
    assert path.parent == tmp_path and path.read_text().count('type: "Convolution"') == 155
    assert vs_original.corpus_path(corpus, "resnet__ResNet-50-deploy") == corpus / "resnet__ResNet-50-deploy.prototxt"
