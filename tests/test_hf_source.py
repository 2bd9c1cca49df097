"""``-m hf:ORG/REPO:FILE|QUANT``: the Hugging Face cache used with no network, and downloads from
a loopback server that answers the way the Hub does (``HF_ENDPOINT``), stopped and resumed."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from hub_server import FakeHub

import llm_magic
from llm_magic import hf_source, model_sources, runtime
from llm_magic.errors import ConfigError, ModelNotFound
from llm_magic.hf_source import HFRef, choose, parse
from llm_magic.specs import resolve

from conftest import run, run_error
from tiny_gguf import CHATML_TEMPLATE, write_tiny_model

pytest.importorskip("huggingface_hub")

REPO = "tiny-org/Tiny-GGUF"


@pytest.fixture
def hf_env(tmp_path, monkeypatch):
    """An empty Hugging Face cache of this test's own, online, pointed at nothing yet."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: no network by accident
    hf_source._listings.clear()
    hf_source._failures.clear()
    yield cache
    hf_source._listings.clear()
    hf_source._failures.clear()


@pytest.fixture
def hub(hf_env, monkeypatch):
    server = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield server
    server.stop()


def put_in_cache(cache: Path, repo: str, files: dict[str, Path], commit: str = "c" * 40) -> Path:
    """The Hub cache layout: blobs/<etag>, snapshots/<commit>/<file> -> ../../blobs/<etag>, refs/main."""
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    for name, src in files.items():
        etag = hashlib.sha256(Path(src).read_bytes()).hexdigest()
        shutil.copyfile(src, root / "blobs" / etag)
        link = root / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(root / "blobs" / etag, link.parent))
    return root / "snapshots" / commit


# ---- names and picking the file ---------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["hf:", "hf:org", "hf:org/", "hf:/repo:Q4_K_M", "hf:a/b/c:Q4", "hf:org/re po", "hf:o/r@"]
)
def test_a_malformed_name_is_a_one_line_error(bad):
    with pytest.raises(ConfigError) as info:
        parse(bad)
    assert "\n" not in str(info.value) and "hf:ORG/REPO" in str(info.value)


FILES = [
    "README.md",
    "tiny-Q4_K_M.gguf",
    "tiny-Q4_K_S.gguf",
    "tiny-q8_0.gguf",
    "mmproj-tiny-F16.gguf",
    "big/tiny-F16-00001-of-00002.gguf",
    "big/tiny-F16-00002-of-00002.gguf",
]


def test_a_quant_picks_its_file_case_insensitively():
    assert choose(HFRef(REPO, "Q8_0"), FILES) == ["tiny-q8_0.gguf"]
    assert choose(HFRef(REPO, "q4_k_m"), FILES) == ["tiny-Q4_K_M.gguf"]


def test_a_split_gguf_is_its_first_part_and_all_parts_come_with_it():
    assert choose(HFRef(REPO, "F16"), FILES) == [
        "big/tiny-F16-00001-of-00002.gguf",
        "big/tiny-F16-00002-of-00002.gguf",
    ]


def test_an_mmproj_is_never_a_text_model():
    assert "mmproj" not in " ".join(choose(HFRef(REPO, "F16"), FILES))
    with pytest.raises(ModelNotFound, match="vision projector"):
        choose(HFRef(REPO, "mmproj-tiny-F16.gguf"), FILES)
    assert hf_source.pick_mmproj(FILES) == "mmproj-tiny-F16.gguf"


def test_a_quant_matching_several_files_or_none_is_an_error_listing_them():
    with pytest.raises(ModelNotFound, match="matches several") as info:
        choose(HFRef(REPO, "Q4_K"), FILES)
    assert "tiny-Q4_K_M.gguf" in str(info.value) and "tiny-Q4_K_S.gguf" in str(info.value)
    with pytest.raises(ModelNotFound, match=r"no \.gguf file") as info:
        choose(HFRef(REPO, "Q3_K_L"), FILES)
    assert "tiny-q8_0.gguf" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ModelNotFound, match="has no file"):
        choose(HFRef(REPO, "nope.gguf"), FILES)


# ---- the cache, with no network ----------------------------------------------------------------


def test_a_cached_file_is_used_with_no_network(hf_env, monkeypatch, tiny_model):
    snap = put_in_cache(hf_env, REPO, {"tiny-Q8_0.gguf": Path(tiny_model)})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # and HF_ENDPOINT points at a closed port
    spec = resolve(f"hf:{REPO}:Q8_0")
    assert spec.path == str(snap / "tiny-Q8_0.gguf") and spec.display_name == f"hf:{REPO}:Q8_0"
    answer = llm_magic.ask("hello", model=f"hf:{REPO}:Q8_0", max_tokens=4, temperature=0)
    assert answer.n_tokens == 4 and answer.model == f"hf:{REPO}:Q8_0"
    assert model_sources.resolve(f"hf:{REPO}:tiny-Q8_0.gguf") == str(snap / "tiny-Q8_0.gguf")
    assert llm_magic.estimate(f"hf:{REPO}:Q8_0").total_bytes == llm_magic.estimate(tiny_model).total_bytes


def test_offline_and_not_cached_is_one_line_naming_the_repo(hf_env, monkeypatch, shell, tiny_model):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound) as info:
        resolve(f"hf:{REPO}:Q4_K_M")
    message = str(info.value)
    assert REPO in message and "offline" in message and "\n" not in message
    monkeypatch.setenv("LLM_MAGIC_MODEL", tiny_model)
    shell.run_line_magic("load_ext", "llm_magic")
    error, _ = run_error(shell, f"%%ask -m hf:{REPO}:Q4_K_M\nhello")
    assert type(error).__name__ == "UsageError" and REPO in str(error) and "offline" in str(error)
    _, out = run(shell, "%ask -n 3 still working")  # the kernel and the default model keep working
    assert llm_magic.last_answer().n_tokens == 3


def test_the_hub_unreachable_says_so_in_one_line(hf_env):
    with pytest.raises(ModelNotFound) as info:
        resolve(f"hf:{REPO}:Q4_K_M")
    assert REPO in str(info.value) and "offline" in str(info.value) and "\n" not in str(info.value)


# ---- downloads from the loopback hub --------------------------------------------------------------


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_a_download_runs_in_the_background_then_works_offline(hub, hf_env, monkeypatch, tiny_model):
    commit = hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": tiny_model, "tiny-Q8_0.gguf": tiny_model, "README.md": b"hi"})
    name = f"hf:{REPO}:Q4_K_M"
    with pytest.raises(ModelNotFound, match="not downloaded yet"):  # nothing to read a header from yet
        llm_magic.estimate(name)
    with pytest.raises(ModelNotFound, match="not downloaded yet"):
        model_sources.resolve(name)
    started = time.monotonic()
    [entry] = llm_magic.preload(name)
    assert time.monotonic() - started < 5  # returns at once: the download is the background load
    answer = llm_magic.ask("hello", model=name, max_tokens=4, temperature=0, timeout=120)
    assert answer.n_tokens == 4
    target = hf_env / f"models--{REPO.replace('/', '--')}" / "snapshots" / commit / "tiny-Q4_K_M.gguf"
    assert target.is_symlink() and target.read_bytes() == Path(tiny_model).read_bytes()
    assert (target.parent.parent.parent / "refs" / "main").read_text() == commit
    assert [g[1] for g in hub.gets()] == [f"/{REPO}/resolve/{commit}/tiny-Q4_K_M.gguf"]  # only that file
    # the same model again: the cache, no network at all
    llm_magic.cleanup_models()
    hub.stop()
    hf_source._listings.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve(name).path == str(target)
    assert llm_magic.ask("hello", model=name, max_tokens=2).n_tokens == 2


def test_a_split_model_downloads_every_part(hub, hf_env, tmp_path):
    first = write_tiny_model(tmp_path / "src" / "tiny-F16.gguf", split_max_tensors=8)
    parts = sorted(first.parent.glob("tiny-F16-*-of-*.gguf"))
    assert len(parts) >= 2
    hub.add_repo(REPO, {p.name: p for p in parts})
    answer = llm_magic.ask("hello", model=f"hf:{REPO}:F16", max_tokens=3, timeout=120)
    assert answer.n_tokens == 3
    assert sorted(g[1].rsplit("/", 1)[1] for g in hub.gets()) == [p.name for p in parts]


def test_a_stopped_download_resumes_where_it_stopped(hub, hf_env, tiny_model):
    data = Path(tiny_model).read_bytes()
    commit = hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": data})
    name = f"hf:{REPO}:Q4_K_M"
    hub.stall_at = len(data) // 2
    [entry] = llm_magic.preload(name)
    assert hub.stalled.wait(60)
    wait_for(lambda: (p := model_sources.progress(entry.spec.path)) is not None and p.done >= len(data) // 2)
    status = llm_magic.models()
    row = next(r for r in status if r["name"] == name)
    assert row["state"] == "loading" and row["note"].startswith("downloading")
    assert llm_magic.unload(name) == 1  # %llm unload stops it
    hub.release()
    wait_for(lambda: model_sources.progress(entry.spec.path).state == "stopped")
    blobs = hf_env / f"models--{REPO.replace('/', '--')}" / "blobs"
    [partial] = blobs.glob("*.incomplete")
    kept = partial.stat().st_size
    assert len(data) // 2 <= kept < len(data)
    assert not Path(entry.spec.path).exists()
    answer = llm_magic.ask("hello", model=name, max_tokens=3, timeout=120)
    assert answer.n_tokens == 3
    ranges = [g[2] for g in hub.gets()]
    assert ranges == [None, f"bytes={kept}-"]  # the second request asked only for the rest
    assert Path(entry.spec.path).read_bytes() == data
    assert model_sources.progress(entry.spec.path).resumed_from == kept
    assert commit in entry.spec.path


def test_ask_shows_the_progress_and_an_interrupt_stops_the_download(hub, hf_env, shell, tiny_model):
    import _thread

    data = Path(tiny_model).read_bytes()
    hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": data})
    shell.run_line_magic("load_ext", "llm_magic")
    hub.stall_at = len(data) // 2

    def interrupt_when_stalled():
        if hub.stalled.wait(60):
            time.sleep(0.3)
            _thread.interrupt_main()  # what the kernel's stop button does
            time.sleep(0.3)
            hub.release()

    threading.Thread(target=interrupt_when_stalled, daemon=True).start()
    error, out = run_error(shell, f"%%ask -m hf:{REPO}:Q4_K_M -n 3\nhello")
    assert type(error).__name__ == "UsageError"
    assert "stopped the download" in str(error) and "resumes" in str(error)
    assert f"downloading hf:{REPO}:Q4_K_M" in out  # the text progress bar (tqdm) in a terminal
    # the next ask resumes, shows the bar, and answers
    _, out = run(shell, f"%%ask -m hf:{REPO}:Q4_K_M -n 3 -f text\nhello")
    assert llm_magic.last_answer().n_tokens == 3
    assert "100%" in out or "B/s" in out
    assert hub.gets()[-1][2] is not None and hub.gets()[-1][2].startswith("bytes=")


def test_alias_settings_and_load_take_hf_names(hub, hf_env, shell, tiny_model, tmp_path):
    chat = write_tiny_model(tmp_path / "chat.gguf", chat_template=CHATML_TEMPLATE)
    hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": tiny_model, "tiny-chat-Q8_0.gguf": chat})
    shell.run_line_magic("load_ext", "llm_magic")
    _, out = run(shell, f"%llm alias small hf:{REPO}:Q4_K_M --n-ctx 512")
    assert f"hf:{REPO}:Q4_K_M" in out
    _, out = run(shell, "%llm load small --wait")
    assert "ready" in out
    _, _ = run(shell, "%ask -m small -n 2 hi")
    assert llm_magic.last_answer().n_tokens == 2
    shell.run_line_magic("config", f"AskMagics.model = 'hf:{REPO}:Q8_0'")
    _, _ = run(shell, "%ask -n 2 hi")
    assert llm_magic.last_answer().model == f"hf:{REPO}:Q8_0"
    error, _ = run_error(shell, f"%ask -m hf:{REPO}:Q5_K_M hi")
    assert "no .gguf file" in str(error) and "tiny-Q4_K_M.gguf" in str(error)
    error, _ = run_error(shell, "%ask -m hf:nobody/nothing:Q4 hi")
    assert "nobody/nothing" in str(error) and "\n" not in str(error)


def test_the_repo_projector_is_offered_for_vision(hub, hf_env, tmp_path):
    from tiny_vision_gguf import png_bytes, write_tiny_vision_pair

    text, mmproj = write_tiny_vision_pair(tmp_path / "vision")
    hub.add_repo(REPO, {"tiny-vision-Q8_0.gguf": text, "mmproj-tiny-F16.gguf": mmproj})
    assert model_sources.hf_projector(f"hf:{REPO}:Q8_0").endswith("mmproj-tiny-F16.gguf")
    answer = llm_magic.ask("what is it?", model=f"hf:{REPO}:Q8_0", images=[png_bytes()], max_tokens=3, timeout=120)
    assert answer.n_tokens >= 1
    [entry] = [e for e in runtime.get().cache.entries() if e.state == "ready"]
    assert entry.spec.mmproj.endswith("mmproj-tiny-F16.gguf") and Path(entry.spec.mmproj).is_file()
    # a vision alias may name the projector as an hf: file too
    llm_magic.cleanup_models()
    llm_magic.current_settings().models = {
        "v": {"path": f"hf:{REPO}:Q8_0", "mmproj": f"hf:{REPO}:mmproj-tiny-F16.gguf", "n_ctx": 1024}
    }
    assert resolve("v").mmproj == entry.spec.mmproj
    assert llm_magic.ask("and this?", model="v", images=[png_bytes()], max_tokens=2, timeout=120).n_tokens >= 1


def test_the_panel_shows_the_download_and_stop_stops_it(hub, hf_env, tiny_model, recording_comm):
    from test_ask_panel import status_text
    from test_ask_panel import wait_for as panel_wait

    from llm_magic.ask_panel import AskPanel

    data = Path(tiny_model).read_bytes()
    hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": data})
    name = f"hf:{REPO}:Q4_K_M"
    hub.stall_at = len(data) // 2
    panel = AskPanel(model=name, max_tokens=3, timeout=60, temperature=0.0)
    assert any(value == name for _, value in panel.model.options)  # in the picker, like any model
    panel.ask("hello")
    assert panel_wait(lambda: "downloading" in status_text(panel), timeout=30), status_text(panel)
    path = resolve(name).path
    assert panel_wait(lambda: model_sources.progress(path).done >= len(data) // 2, timeout=30)
    total = f"/ {len(data) / (1 << 20):,.1f} MB"
    assert panel_wait(lambda: total in status_text(panel), timeout=30), status_text(panel)
    assert name in status_text(panel)
    panel.stop_button.click()
    hub.release()
    answer = panel.wait(30)
    assert answer.finish_reason == "cancelled", answer.error
    wait_for(lambda: model_sources.progress(path).state == "stopped")
    panel.ask("hello")  # Ask again: the download resumes and the answer comes
    assert panel.wait(60).n_tokens == 3
    assert hub.gets()[-1][2] is not None
    panel.close()


def test_a_failed_download_and_a_half_downloaded_file_are_one_line_errors(hub, hf_env, tiny_model, corrupt_files):
    from llm_magic.errors import ModelLoadError

    hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": tiny_model})
    name = f"hf:{REPO}:Q4_K_M"
    resolve(name)  # the listing says the file is there ...
    hub.repos[REPO][1].clear()  # ... but the server no longer serves it
    with pytest.raises(ModelLoadError) as info:
        llm_magic.ask("hello", model=name, max_tokens=2, timeout=60)
    assert f"downloading tiny-Q4_K_M.gguf from {REPO} failed" in str(info.value) and "\n" not in str(info.value)
    # a file cut short in the cache (copied by hand, a disk filled up): the load says why
    put_in_cache(hf_env, "org/Cut-GGUF", {"cut-Q8_0.gguf": corrupt_files["truncated"]})
    with pytest.raises(ModelLoadError, match="truncated"):
        llm_magic.ask("hello", model="hf:org/Cut-GGUF:Q8_0", max_tokens=2, timeout=60)
    assert llm_magic.ask("hello", model=tiny_model, max_tokens=2).n_tokens == 2  # the rest keeps working


def test_the_preload_setting_downloads_in_the_background_on_load_ext(hub, hf_env, shell, tiny_model):
    from traitlets.config import Config

    data = Path(tiny_model).read_bytes()
    hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": data})
    name = f"hf:{REPO}:Q4_K_M"
    hub.stall_at = len(data) // 2
    shell.config = Config({"AskMagics": {"preload": [name], "model": name}})
    started = time.monotonic()
    shell.run_line_magic("load_ext", "llm_magic")
    assert time.monotonic() - started < 5  # %load_ext does not wait for the download
    assert hub.stalled.wait(60)
    _, out = run(shell, "%llm status")
    assert name in out and "downloading" in out
    hub.release()
    _, _ = run(shell, "%ask -n 2 hi")  # the default model, downloaded by the preload
    assert llm_magic.last_answer().model == name and llm_magic.last_answer().n_tokens == 2
    assert len(hub.gets()) == 1


def test_a_connection_lost_mid_file_is_one_line_and_the_next_try_resumes(hub, hf_env, tiny_model):
    from llm_magic.errors import ModelLoadError

    data = Path(tiny_model).read_bytes()
    hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": data})
    name = f"hf:{REPO}:Q4_K_M"
    hub.cut_at = len(data) // 3
    with pytest.raises(ModelLoadError) as info:
        llm_magic.ask("hello", model=name, max_tokens=2, timeout=60)
    message = str(info.value)
    assert f"tiny-Q4_K_M.gguf from {REPO}" in message and "\n" not in message
    answer = llm_magic.ask("hello", model=name, max_tokens=2, timeout=60)  # the next ask resumes it
    assert answer.n_tokens == 2
    [first, second] = hub.gets()
    assert first[2] is None and second[2] is not None and int(second[2][6:-1]) >= len(data) // 3
    assert Path(resolve(name).path).read_bytes() == data


def test_hf_token_opens_a_private_repository(hub, hf_env, tiny_model, monkeypatch):
    hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": tiny_model})
    hub.token = "hf_secret_test_token"
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(hf_env.parent / "hf-home"))  # no token stored by `hf auth login`
    with pytest.raises(ModelNotFound) as info:
        resolve(f"hf:{REPO}:Q4_K_M")
    assert "HF_TOKEN" in str(info.value) and "hf_secret" not in str(info.value)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_test_token")
    answer = llm_magic.ask("hello", model=f"hf:{REPO}:Q4_K_M", max_tokens=2, timeout=60)
    assert answer.n_tokens == 2 and len(hub.gets()) == 1


# ---- a hostile or broken Hub ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "listed",
    [
        "../../escaped-Q4_K_M.gguf",
        "ABSOLUTE",
        "sub/../../../escaped-Q4_K_M.gguf",
        "a\\..\\x-Q4_K_M.gguf",
    ],
)
def test_a_listed_file_name_leaving_the_snapshot_is_refused(hub, hf_env, tiny_model, listed):
    if listed == "ABSOLUTE":
        listed = str(hf_env.parent / "escaped-Q4_K_M.gguf")
    hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": tiny_model})
    hub.listed[REPO] = [listed]
    with pytest.raises(ModelNotFound) as info:
        llm_magic.ask("hello", model=f"hf:{REPO}:Q4_K_M", max_tokens=2, timeout=60)
    message = str(info.value)
    assert REPO in message and repr(listed) in message and "\n" not in message
    assert hub.gets() == []  # nothing was fetched
    assert not list(hf_env.parent.rglob("*escaped*"))


def test_the_download_itself_refuses_a_file_name_leaving_the_snapshot(hub, hf_env, tiny_model):
    from llm_magic import hf_download
    from llm_magic.errors import ModelLoadError

    commit = hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": tiny_model})
    snap = hf_source.repo_dir(REPO) / "snapshots" / commit
    name = "../../escaped-Q4_K_M.gguf"
    plan = hf_source.Plan(HFRef(REPO, "Q4_K_M"), commit, [name], [snap / name])
    with pytest.raises(ModelLoadError) as info:
        hf_download.download(plan, hf_download.Progress(name, 0), threading.Event())
    assert repr(name) in str(info.value) and REPO in str(info.value) and "\n" not in str(info.value)
    assert not (hf_source.repo_dir(REPO) / "escaped-Q4_K_M.gguf").exists() and hub.gets() == []


@pytest.mark.parametrize("sha", ["../../../victim.txt", "main", "C" * 40, "0" * 39])
def test_a_listing_whose_commit_is_not_a_hash_is_refused(hub, hf_env, tiny_model, sha):
    hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": tiny_model})
    hub.listed_sha[REPO] = sha
    with pytest.raises(ModelNotFound) as info:
        hf_source.locate(f"hf:{REPO}:Q4_K_M")
    assert REPO in str(info.value) and "commit" in str(info.value) and "\n" not in str(info.value)
    assert not (hf_source.repo_dir(REPO) / "snapshots").exists()


@pytest.mark.parametrize("revision", ["../../../victim.txt", "a/../../b", "/etc/passwd", "a//b", "x y", "a\\b", "."])
def test_a_revision_that_is_not_a_name_is_a_one_line_error(hub, hf_env, tiny_model, tmp_path, revision):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": tiny_model})
    with pytest.raises(ConfigError) as info:
        llm_magic.ask("hello", model=f"hf:{REPO}@{revision}:Q4_K_M", max_tokens=2, timeout=60)
    assert "revision" in str(info.value) and "\n" not in str(info.value)
    assert victim.read_text() == "keep me" and hub.requests == []


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "my_branch-2", "a" * 40])
def test_ordinary_revisions_are_accepted(revision):
    assert parse(f"hf:org/repo@{revision}:Q4_K_M").revision == revision


def test_a_refs_file_that_is_not_a_commit_is_not_followed(hf_env, tiny_model, tmp_path):
    put_in_cache(hf_env, REPO, {"tiny-Q4_K_M.gguf": Path(tiny_model)})
    outside = tmp_path / "outside"
    (outside / "tiny-Q4_K_M.gguf").parent.mkdir(parents=True)
    shutil.copy(tiny_model, outside / "tiny-Q4_K_M.gguf")
    (hf_source.repo_dir(REPO) / "refs" / "main").write_text(
        os.path.relpath(outside, hf_source.repo_dir(REPO) / "snapshots")
    )
    assert hf_source.cached_snapshot(parse(f"hf:{REPO}:Q4_K_M")) is None


def test_a_hub_that_never_answers_is_a_one_line_error_within_the_timeout(hf_env, monkeypatch, shell):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)  # accepted, never answered

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    name = f"hf:{REPO}:Q4_K_M"
    try:
        started = time.monotonic()
        with pytest.raises(ModelNotFound) as info:
            llm_magic.estimate(name)
        assert time.monotonic() - started < 20
        message = str(info.value)
        assert REPO in message and "offline" in message and "\n" not in message
        asked = len(held)
        assert asked >= 1
        started = time.monotonic()  # remembered: the next calls do not wait on the network again
        with pytest.raises(ModelNotFound):
            resolve(name)
        shell.run_line_magic("load_ext", "llm_magic")
        error, _ = run_error(shell, f"%%ask -m {name}\nhello")
        assert REPO in str(error) and "offline" in str(error)
        run(shell, "%llm status")
        assert time.monotonic() - started < 5 and len(held) == asked
    finally:
        listener.close()
        for conn in held:
            conn.close()


def test_a_hub_that_never_answers_a_file_request_fails_the_download_in_one_line(hub, hf_env, tiny_model, monkeypatch):
    from llm_magic.errors import ModelLoadError

    hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": tiny_model})
    hub.silent_files = True
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        llm_magic.ask("hello", model=f"hf:{REPO}:Q4_K_M", max_tokens=2, timeout=60)
    assert time.monotonic() - started < 8  # huggingface_hub's own wait is 10 s
    message = str(info.value)
    assert REPO in message and "offline" in message and "\n" not in message


def test_a_download_of_unknown_size_cut_short_is_not_taken_as_complete(hub, hf_env, tiny_model):
    from llm_magic.errors import ModelLoadError

    data = Path(tiny_model).read_bytes()
    hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": data})
    hub.no_size = True  # no Content-Length, no X-Linked-Size, no size listed: the body ends when the connection does
    hub.cut_at = len(data) // 3
    name = f"hf:{REPO}:Q4_K_M"
    with pytest.raises(ModelLoadError) as info:
        llm_magic.ask("hello", model=name, max_tokens=2, timeout=60)
    message = str(info.value)
    assert "broke off" in message and REPO in message and "\n" not in message
    blobs = hf_source.repo_dir(REPO) / "blobs"
    etag = hashlib.sha256(data).hexdigest()
    assert not (blobs / etag).exists() and (blobs / f"{etag}.incomplete").is_file()
    answer = llm_magic.ask("hello", model=name, max_tokens=2, timeout=60)  # the next try resumes and checks it
    assert answer.n_tokens == 2
    assert (blobs / etag).read_bytes() == data and not (blobs / f"{etag}.incomplete").exists()
    assert hub.gets()[1][2] is not None
