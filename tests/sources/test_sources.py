"""Every model source against a real server started here: HTTPS (resume, sha256, archives,
tokens), S3 (moto with IAM keys), OCI (go-containerregistry + ORAS), the Hugging Face API (olah
behind HF_ENDPOINT), pvc:// and builtin://; the node cache's hit, repair and lock paths."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from pathlib import Path

import pytest
from support.https_server import FileServer
from support.hub_mirror import HubMirror
from support.oci_registry import Registry
from support.s3_server import S3Server

from gpupool_worker.sources import FetchRequest, Reason, SourceError, fetch, parse_uri
from gpupool_worker.sources.cache import MANIFEST, ModelCache


def _model_files(directory: Path, *, weights: int = 300_000, seed: int = 1) -> dict[str, bytes]:
    """A small model-shaped directory: config, tokenizer, weights (random bytes), a subfolder."""
    import random

    rnd = random.Random(seed)
    files = {"config.json": b'{"model_type": "bert"}', "tokenizer.json": b'{"version": "1.0"}',
             "model.safetensors": rnd.randbytes(weights), "1_Pooling/config.json": b'{"pooling_mode_cls_token": true}'}
    for rel, data in files.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_bytes(data)
    return files


def _same(fetched: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        assert (fetched / rel).read_bytes() == data, rel


def _req(tmp_path: Path, uri: str, **kw: object) -> FetchRequest:
    return FetchRequest(uri=uri, cache_root=tmp_path / "cache", **kw)  # type: ignore[arg-type]


def _reason(exc: pytest.ExceptionInfo[SourceError]) -> Reason:
    return exc.value.reason


# -- uris -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("uri", "scheme", "location", "path", "revision"), [
    ("hf://BAAI/bge-reranker-base", "hf", "BAAI/bge-reranker-base", "", "main"),
    ("hf://org/name@v1.2", "hf", "org/name", "", "v1.2"),
    ("s3://ml-models/vision/resnet50/", "s3", "ml-models", "vision/resnet50/", ""),
    ("oci://registry.example.com/vision/yolov8m:1.2.0", "oci", "registry.example.com", "vision/yolov8m", "1.2.0"),
    ("oci://localhost:5000/m@sha256:" + "a" * 64, "oci", "localhost:5000", "m", "sha256:" + "a" * 64),
    ("pvc://models/minilm", "pvc", "models", "minilm", ""),
    ("builtin://all-minilm-l6-v2", "builtin", "all-minilm-l6-v2", "", ""),
])
def test_uris_parse(uri: str, scheme: str, location: str, path: str, revision: str) -> None:
    parsed = parse_uri(uri)
    assert (parsed.scheme, parsed.location, parsed.path, parsed.revision) == (scheme, location, path, revision)


@pytest.mark.parametrize(("uri", "reason", "words"), [
    ("gs://bucket/model", Reason.UNKNOWN_SCHEME, "AWS_ENDPOINT_URL=https://storage.googleapis.com"),
    ("http://example.com/model.onnx", Reason.UNKNOWN_SCHEME, "use https://"),
    ("ftp://example.com/model.onnx", Reason.UNKNOWN_SCHEME, "known schemes: hf://"),
    ("hf://justaname", Reason.INVALID_URI, "expected hf://org/name"),
    ("s3://No_Such_Bucket/x", Reason.INVALID_URI, "not a valid S3 bucket name"),
    ("pvc://claim/../etc", Reason.INVALID_URI, "may not contain"),
    ("oci://registry.example.com", Reason.INVALID_URI, "expected oci://registry/repository"),
    ("models/minilm", Reason.INVALID_URI, "expected scheme://"),
])
def test_bad_uris_say_what_is_wrong(uri: str, reason: Reason, words: str) -> None:
    with pytest.raises(SourceError) as err:
        parse_uri(uri)
    assert err.value.reason is reason
    assert words in err.value.message
    assert uri in err.value.message


def test_revision_in_uri_and_field_must_agree() -> None:
    assert parse_uri("hf://org/name", "abc123").revision == "abc123"
    with pytest.raises(SourceError, match=r"disagrees with source\.revision"):
        parse_uri("hf://org/name@v1", "v2")


# -- https ------------------------------------------------------------------------------------

def _publish_https(server: FileServer, rel: str, data: bytes) -> str:
    path = server.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return server.url(rel)


def _ca_secret(tmp_path: Path, server: FileServer, **keys: str) -> Path:
    secret = tmp_path / "secret"
    secret.mkdir(exist_ok=True)
    (secret / "ca.crt").write_bytes(server.pki.ca_cert.read_bytes())
    for key, value in keys.items():
        (secret / key).write_text(value)
    return secret


def test_https_single_file_with_sha256(tmp_path: Path, https_files: FileServer) -> None:
    data = b"onnx" * 50_000
    url = _publish_https(https_files, "a/model.onnx", data)
    got = fetch(_req(tmp_path, url, sha256=hashlib.sha256(data).hexdigest(),
                     credentials_dir=_ca_secret(tmp_path, https_files)))
    assert (got.path / "model.onnx").read_bytes() == data
    assert not got.from_cache
    assert got.manifest.files == {"model.onnx": len(data)}


def test_https_archive_is_unpacked(tmp_path: Path, https_files: FileServer) -> None:
    src = tmp_path / "src" / "minilm"
    src.mkdir(parents=True)
    files = _model_files(src)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src, arcname="minilm")
    url = _publish_https(https_files, "b/minilm.tar.gz", buf.getvalue())
    got = fetch(_req(tmp_path, url, credentials_dir=_ca_secret(tmp_path, https_files)))
    _same(got.path, files)  # one top-level folder: served as its contents
    assert set(got.manifest.files) == set(files)


def test_https_resumes_a_cut_download(tmp_path: Path, https_files: FileServer) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    url = _publish_https(https_files, "c/model.safetensors", data)
    https_files.cut_after["c/model.safetensors"] = 300_000
    got = fetch(_req(tmp_path, url, sha256=hashlib.sha256(data).hexdigest(),
                     credentials_dir=_ca_secret(tmp_path, https_files)))
    assert (got.path / "model.safetensors").read_bytes() == data
    gets = [r for m, r in https_files.requests if m == "GET" and r.startswith("c/")]
    assert gets == ["c/model.safetensors", "c/model.safetensors bytes=300000-"]  # resumed, not restarted


def test_https_sha256_mismatch_caches_nothing(tmp_path: Path, https_files: FileServer) -> None:
    url = _publish_https(https_files, "d/model.onnx", b"not what you expected")
    with pytest.raises(SourceError) as err:
        fetch(_req(tmp_path, url, sha256="0" * 64, credentials_dir=_ca_secret(tmp_path, https_files)))
    assert _reason(err) is Reason.CHECKSUM_MISMATCH
    assert "0" * 64 in err.value.message
    assert not any((tmp_path / "cache" / "https").glob("*/model.onnx"))


def test_https_not_found(tmp_path: Path, https_files: FileServer) -> None:
    with pytest.raises(SourceError) as err:
        fetch(_req(tmp_path, https_files.url("nope/model.onnx"), credentials_dir=_ca_secret(tmp_path, https_files)))
    assert _reason(err) is Reason.NOT_FOUND
    assert "HTTP 404" in err.value.message


def test_https_untrusted_certificate_is_refused(tmp_path: Path, https_files: FileServer) -> None:
    url = _publish_https(https_files, "e/model.onnx", b"x")
    with pytest.raises(SourceError) as err:
        fetch(_req(tmp_path, url))  # no ca.crt: the throwaway CA is not trusted
    assert _reason(err) is Reason.FETCH_FAILED
    assert "CERTIFICATE_VERIFY_FAILED" in err.value.message


def test_https_too_large_is_refused_before_downloading(tmp_path: Path, https_files: FileServer) -> None:
    url = _publish_https(https_files, "f/big.safetensors", b"w" * 200_000)
    with pytest.raises(SourceError) as err:
        fetch(_req(tmp_path, url, memory_limit_bytes=100_000, memory_what="the 1g.10gb slice",
                   credentials_dir=_ca_secret(tmp_path, https_files)))
    assert _reason(err) is Reason.WEIGHTS_TOO_LARGE
    assert "195.3 KiB" in err.value.message
    assert "1g.10gb" in err.value.message
    assert ("GET", "f/big.safetensors") not in https_files.requests


def test_https_bearer_token(tmp_path: Path, https_files: FileServer) -> None:
    url = _publish_https(https_files, "g/model.onnx", b"private")
    https_files.token = "s3cret"
    try:
        with pytest.raises(SourceError) as err:
            fetch(_req(tmp_path, url, credentials_dir=_ca_secret(tmp_path, https_files)))
        assert _reason(err) is Reason.CREDENTIALS
        assert "no credentials Secret" in err.value.message or "HTTP 401" in err.value.message
        with pytest.raises(SourceError) as err:
            fetch(_req(tmp_path, url, credentials_dir=_ca_secret(tmp_path, https_files, BEARER_TOKEN="wrong")))
        assert _reason(err) is Reason.CREDENTIALS
        assert "were refused" in err.value.message
        got = fetch(_req(tmp_path, url, credentials_dir=_ca_secret(tmp_path, https_files, BEARER_TOKEN="s3cret")))
        assert (got.path / "model.onnx").read_bytes() == b"private"
    finally:
        https_files.token = None


# -- the node cache ---------------------------------------------------------------------------

def test_cache_hit_needs_no_network_and_a_damaged_entry_is_fetched_again(
        tmp_path: Path, https_files: FileServer) -> None:
    url = _publish_https(https_files, "h/model.onnx", b"m" * 10_000)
    creds = _ca_secret(tmp_path, https_files)
    first = fetch(_req(tmp_path, url, credentials_dir=creds))
    before = len(https_files.requests)
    again = fetch(_req(tmp_path, url, credentials_dir=creds))
    assert again.from_cache
    assert again.path == first.path
    assert len(https_files.requests) == before
    (first.path / "model.onnx").write_bytes(b"m" * 10)  # truncated behind our back
    repaired = fetch(_req(tmp_path, url, credentials_dir=creds))
    assert not repaired.from_cache
    assert (repaired.path / "model.onnx").read_bytes() == b"m" * 10_000
    assert (repaired.path / MANIFEST).is_file()


def test_two_workers_on_one_node_download_once(tmp_path: Path, https_files: FileServer) -> None:
    url = _publish_https(https_files, "i/model.safetensors", b"z" * 2_000_000)
    creds = _ca_secret(tmp_path, https_files)
    results: list[bool] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(fetch(_req(tmp_path, url, credentials_dir=creds)).from_cache)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(results) == [False, True]
    assert [r for m, r in https_files.requests if m == "GET" and r.startswith("i/")] == ["i/model.safetensors"]


def test_cache_keys_are_per_pinned_revision() -> None:
    assert ModelCache.key(parse_uri("hf://o/n@a")) != ModelCache.key(parse_uri("hf://o/n@b"))
    assert ModelCache.key(parse_uri("hf://o/n@a")).startswith("hf/o_n-")


# -- s3 ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3_model(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    src = tmp_path_factory.mktemp("s3-model")
    files = _model_files(src)
    client = s3.client()
    client.create_bucket(Bucket="ml-models")
    for rel, data in files.items():
        client.put_object(Bucket="ml-models", Key=f"text/minilm/{rel}", Body=data)
    client.put_object(Bucket="ml-models", Key="text/minilm-old/config.json", Body=b"{}")
    client.put_object(Bucket="ml-models", Key="vision/resnet50/model.onnx", Body=b"onnx-bytes")
    return files


def test_s3_prefix(tmp_path: Path, s3: S3Server, s3_model: dict[str, bytes]) -> None:
    got = fetch(_req(tmp_path, "s3://ml-models/text/minilm", credentials_dir=s3.secret(tmp_path / "secret")))
    _same(got.path, s3_model)
    assert set(got.manifest.files) == set(s3_model)  # minilm-old/ is not under text/minilm/


def test_s3_single_object(tmp_path: Path, s3: S3Server, s3_model: dict[str, bytes]) -> None:
    got = fetch(_req(tmp_path, "s3://ml-models/vision/resnet50/model.onnx",
                     credentials_dir=s3.secret(tmp_path / "secret")))
    assert (got.path / "model.onnx").read_bytes() == b"onnx-bytes"


def test_s3_wrong_keys_are_refused(tmp_path: Path, s3: S3Server, s3_model: dict[str, bytes]) -> None:
    fetch(_req(tmp_path, "s3://ml-models/text/minilm", credentials_dir=s3.secret(tmp_path / "good")))
    # the node cache holds it now, fetched with good keys; a pool with wrong keys must not read it
    with pytest.raises(SourceError) as err:
        fetch(_req(tmp_path, "s3://ml-models/text/minilm",
                   credentials_dir=s3.secret(tmp_path / "secret", AWS_SECRET_ACCESS_KEY="wrong")))
    assert _reason(err) is Reason.CREDENTIALS
    assert "SignatureDoesNotMatch" in err.value.message
    with pytest.raises(SourceError) as err:
        fetch(_req(tmp_path, "s3://ml-models/text/minilm",
                   credentials_dir=s3.secret(tmp_path / "secret2", AWS_ACCESS_KEY_ID="AKIANOSUCHKEY0000000")))
    assert _reason(err) is Reason.CREDENTIALS
    assert "InvalidAccessKeyId" in err.value.message


def test_s3_secret_without_keys_is_refused(tmp_path: Path, s3: S3Server) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "HF_TOKEN").write_text("hf_x")
    with pytest.raises(SourceError) as err:
        fetch(_req(tmp_path, "s3://ml-models/text/minilm", credentials_dir=secret))
    assert _reason(err) is Reason.CREDENTIALS
    assert "no AWS_ACCESS_KEY_ID" in err.value.message
    assert "HF_TOKEN" in err.value.message


@pytest.mark.parametrize("uri", ["s3://no-such-bucket/x", "s3://ml-models/text/nothing-here"])
def test_s3_not_found(tmp_path: Path, s3: S3Server, s3_model: dict[str, bytes], uri: str) -> None:
    with pytest.raises(SourceError) as err:
        fetch(_req(tmp_path, uri, credentials_dir=s3.secret(tmp_path / "secret")))
    assert _reason(err) is Reason.NOT_FOUND


# -- oci --------------------------------------------------------------------------------------

def test_oci_artifact(tmp_path: Path, registry: Registry) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = {"model.pt": b"torchscript" * 1000, "model.json": b'{"kind": "torchscript"}'}
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    registry.push("vision/yolo", "1.0", [Path(n) for n in files], cwd=src)
    got = fetch(_req(tmp_path, f"oci://{registry.host}/vision/yolo:1.0"))
    _same(got.path, files)
    assert got.manifest.sha256["model.pt"] == hashlib.sha256(files["model.pt"]).hexdigest()
    assert fetch(_req(tmp_path, f"oci://{registry.host}/vision/yolo", revision="1.0")).from_cache


def test_oci_directory_layer(tmp_path: Path, registry: Registry) -> None:
    src = tmp_path / "src"
    (src / "minilm").mkdir(parents=True)
    files = _model_files(src / "minilm")
    registry.push("text/minilm", "v1", [Path("minilm")], cwd=src)
    got = fetch(_req(tmp_path, f"oci://{registry.host}/text/minilm:v1"))
    _same(got.path / "minilm", files)


def test_oci_missing_tag(tmp_path: Path, registry: Registry) -> None:
    with pytest.raises(SourceError) as err:
        fetch(_req(tmp_path, f"oci://{registry.host}/vision/yolo:9.9"))
    assert _reason(err) is Reason.NOT_FOUND


# -- hf (olah, a Hugging Face mirror, through HF_ENDPOINT) ------------------------------------

def test_hf_repository_at_a_pinned_revision(tmp_path: Path, hub_online: HubMirror) -> None:
    v1_dir, v2_dir = tmp_path / "v1", tmp_path / "v2"
    v1_dir.mkdir()
    v2_dir.mkdir()
    v1 = _model_files(v1_dir, seed=1)
    v2 = _model_files(v2_dir, seed=2)
    first = hub_online.publish("testorg/pinned", v1_dir)
    hub_online.publish("testorg/pinned", v2_dir)
    at_main = fetch(_req(tmp_path, "hf://testorg/pinned", model_format="SafeTensors"))
    _same(at_main.path, v2)
    pinned = fetch(_req(tmp_path, f"hf://testorg/pinned@{first}", model_format="SafeTensors"))
    _same(pinned.path, v1)
    assert pinned.manifest.revision == first
    assert not (pinned.path / ".cache").exists()


def test_hf_takes_only_the_files_of_the_format(tmp_path: Path, hub_online: HubMirror) -> None:
    src = tmp_path / "repo"
    src.mkdir()
    files = _model_files(src)
    (src / "pytorch_model.bin").write_bytes(b"pickle")
    (src / "onnx").mkdir()
    (src / "onnx" / "model.onnx").write_bytes(b"onnx")
    hub_online.publish("testorg/formats", src)
    st = fetch(_req(tmp_path, "hf://testorg/formats", model_format="SafeTensors"))
    assert set(st.manifest.files) == set(files)
    onnx = fetch(_req(tmp_path / "2", "hf://testorg/formats", model_format="ONNX"))
    assert "onnx/model.onnx" in onnx.manifest.files
    assert "model.safetensors" not in onnx.manifest.files


def test_hf_not_found(tmp_path: Path, hub_online: HubMirror) -> None:
    with pytest.raises(SourceError) as err:
        fetch(_req(tmp_path, "hf://testorg/does-not-exist", model_format="SafeTensors"))
    assert _reason(err) is Reason.NOT_FOUND
    assert "HF_TOKEN" in err.value.message  # says what to do if it is private


def test_hf_offline_uses_the_cache_or_says_why_not(tmp_path: Path, hub_online: HubMirror,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    src = tmp_path / "repo"
    src.mkdir()
    _model_files(src)
    hub_online.publish("testorg/offline", src)
    fetch(_req(tmp_path, "hf://testorg/offline", model_format="SafeTensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert fetch(_req(tmp_path, "hf://testorg/offline", model_format="SafeTensors")).from_cache
    with pytest.raises(SourceError) as err:
        fetch(_req(tmp_path, "hf://testorg/offline@other", model_format="SafeTensors"))
    assert _reason(err) is Reason.OFFLINE


# -- pvc and builtin --------------------------------------------------------------------------

def test_pvc_is_read_in_place(tmp_path: Path) -> None:
    claim = tmp_path / "pvc" / "models" / "minilm"
    claim.mkdir(parents=True)
    files = _model_files(claim)
    got = fetch(_req(tmp_path, "pvc://models/minilm", pvc_root=tmp_path / "pvc"))
    assert got.path == claim
    assert set(got.manifest.files) == set(files)
    one = fetch(_req(tmp_path, "pvc://models/minilm/model.safetensors", pvc_root=tmp_path / "pvc"))
    assert one.main == claim / "model.safetensors"
    with pytest.raises(SourceError) as err:
        fetch(_req(tmp_path, "pvc://models/other", pvc_root=tmp_path / "pvc"))
    assert _reason(err) is Reason.NOT_FOUND
    assert "mounted read-only" in err.value.message
    with pytest.raises(SourceError) as err:
        fetch(_req(tmp_path, "pvc://models/minilm", pvc_root=tmp_path / "pvc", memory_limit_bytes=1000))
    assert _reason(err) is Reason.WEIGHTS_TOO_LARGE


def test_builtin(tmp_path: Path) -> None:
    got = fetch(_req(tmp_path, "builtin://all-minilm-l6-v2"))
    assert (got.path / "config.json").is_file()
    with pytest.raises(SourceError) as err:
        fetch(_req(tmp_path, "builtin://gpt-5"))
    assert _reason(err) is Reason.NOT_FOUND
    assert "all-minilm-l6-v2" in err.value.message
