"""The review app under bad input, served by a real uvicorn on loopback: an oversized chunked
upload, a decompression bomb, content that lies about its type, a script in a file name, a form
post without its CSRF token, anonymous writes, and a DICOM full of identifiers."""

from __future__ import annotations

import http.client
import json
import logging
import re
import struct
import urllib.parse
import zlib

import pytest
from fastapi.testclient import TestClient
from support.dicoms import PHI_VALUES, write_dicom
from support.review import champion_workspace, png_bytes, served

from medimg.feedback.log import read_log
from medimg.feedback.predictions import read_predictions
from medimg.review.app import create_app
from medimg.review.auth import add_user, users_path
from medimg.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_mlflow_env")]

LIMIT_MB = 1


@pytest.fixture
def review(workspace_templates, tmp_path):
    ws = champion_workspace(workspace_templates, tmp_path / "ws", serve={"max_upload_mb": LIMIT_MB})
    token = add_user(users_path(ws), "dr-a")
    return ws, create_app(ws, ws.config, Settings()), {"Authorization": f"Bearer {token}"}


def _multipart(name: str, data: bytes, boundary: str = "medimgboundary") -> tuple[bytes, str]:
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
        f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    kind = f"multipart/form-data; boundary={boundary}"
    return body + data + f"\r\n--{boundary}--\r\n".encode(), kind


def test_an_oversized_chunked_upload_is_refused_while_it_streams(review):
    ws, app, auth = review
    with served(app) as url:
        host, port = urllib.parse.urlsplit(url).netloc.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.putrequest("POST", "/predict")
        conn.putheader("Authorization", auth["Authorization"])
        conn.putheader("Content-Type", "multipart/form-data; boundary=b")
        conn.putheader("Transfer-Encoding", "chunked")  # no Content-Length to refuse up front
        conn.endheaders()
        chunk = b"\0" * 65536
        sent = 0
        try:
            for _ in range(4 * LIMIT_MB * 16):  # four times the limit, if it were all read
                conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: what a streaming limit does
        response = conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 413, body
        assert "serve.max_upload_mb" in body["detail"]
        # a declared length over the limit is refused before any body byte is read
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request(
            "POST",
            "/predict",
            body=b"x" * 10,
            headers={
                **auth,
                "Content-Length": str(2 * LIMIT_MB * 1024 * 1024),
                "Content-Type": "multipart/form-data; boundary=b",
            },
        )
        assert conn.getresponse().status == 413
    assert read_predictions(ws) == []


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with a tiny (truncated) image stream:
    refusing it by its header is the only way to answer it correctly."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 4096, 9))
        + chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_is_refused_before_decoding(review):
    ws, app, auth = review
    client = TestClient(app)
    bomb = _bomb_png(100_000, 100_000)  # 10 gigapixels claimed in a few hundred bytes
    answer = client.post("/predict", files={"image": ("bomb.png", bomb, "image/png")}, headers=auth)
    assert answer.status_code == 413, answer.text
    assert "too_many_pixels" in answer.json()["detail"]
    assert read_predictions(ws) == []


def test_content_is_sniffed_not_taken_from_the_name(review, tmp_path):
    ws, app, auth = review
    client = TestClient(app)
    png_as_dcm = client.post(
        "/predict",
        files={"image": ("film.dcm", png_bytes(seed=5), "application/dicom")},
        headers=auth,
    )
    assert png_as_dcm.status_code == 200, png_as_dcm.text
    dicom = write_dicom(tmp_path / "scan.png").read_bytes()  # a DICOM named .png
    dcm_as_png = client.post(
        "/predict", files={"image": ("scan.png", dicom, "image/png")}, headers=auth
    )
    assert dcm_as_png.status_code == 200, dcm_as_png.text
    kept = sorted((ws.root / "data" / "feedback" / "images").iterdir())
    assert len(kept) == 2 and all(p.read_bytes().startswith(b"\x89PNG") for p in kept)
    # a file of no known format is refused whatever its name says
    text = client.post(
        "/predict", files={"image": ("x.dcm", b"hello " * 400, "image/png")}, headers=auth
    )
    assert text.status_code == 422 and "image refused" in text.json()["detail"]


def _login(client: TestClient, reviewer: str, token: str) -> str:
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    done = client.post(
        "/login", data={"reviewer": reviewer, "token": token, "csrf": csrf}, follow_redirects=False
    )
    assert done.status_code == 303, done.text
    home = client.get("/")
    return re.search(r'name="csrf" value="([^"]+)"', home.text).group(1)


def test_a_script_in_a_file_name_is_never_rendered(review):
    ws, app, auth = review
    client = TestClient(app)
    csrf = _login(client, "dr-a", auth["Authorization"].split()[1])
    name = '<script>alert("x")</script><img src=x onerror=alert(1)>.png'
    body, kind = _multipart(name, png_bytes(seed=7))
    body = body.replace(
        b'name="image"',
        b'name="csrf"\r\n\r\n'
        + csrf.encode()
        + b"\r\n--medimgboundary\r\nContent-Disposition: form-data; "
        b'name="image"',
        1,
    )
    uploaded = client.post(
        "/review", content=body, headers={"content-type": kind}, follow_redirects=True
    )
    assert uploaded.status_code == 200, uploaded.text
    pages = uploaded.text + client.get("/").text + client.get("/worklist").text
    assert "<script>alert" not in pages and "onerror" not in pages and "alert(" not in pages
    assert "script" not in (ws.root / "data" / "feedback" / "predictions.jsonl").read_text()
    csp = uploaded.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def test_a_form_post_without_its_csrf_token_is_refused(review):
    ws, app, auth = review
    client = TestClient(app)
    _login(client, "dr-a", auth["Authorization"].split()[1])
    predicted = client.post(
        "/predict", files={"image": ("a.png", png_bytes(), "image/png")}, headers=auth
    ).json()
    url = f"/review/{predicted['prediction_id']}/feedback"
    label = predicted["label"]
    for form in ({"label": label}, {"label": label, "csrf": "forged"}):
        refused = client.post(url, data=form, follow_redirects=False)
        assert refused.status_code == 403 and "CSRF" in refused.text
    # nor from another site, even with the session cookie
    refused = client.post(
        url,
        data={"label": label},
        headers={"origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert refused.status_code == 403
    no_login_csrf = TestClient(app).post("/login", data={"reviewer": "dr-a", "token": "t"})
    assert no_login_csrf.status_code == 403
    assert read_log(ws) == []
    cookie = client.cookies.get("medimg_session")
    assert cookie is not None


def test_anonymous_writes_get_401_and_reads_are_closed_by_default(review):
    ws, app, _ = review
    client = TestClient(app)
    image = {"image": ("a.png", png_bytes(), "image/png")}
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        answer = client.post("/predict", files=image, headers=headers)
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
        feedback = client.post(
            "/feedback", json={"prediction_id": "ab" * 16, "label": "x"}, headers=headers
        )
        assert feedback.status_code == 401
    assert client.get("/worklist").status_code == 401
    assert client.get("/model").status_code == 401
    assert client.get("/health").status_code == 200  # for load balancers
    page = client.post("/review", files=image, data={"csrf": "x"}, follow_redirects=False)
    assert page.status_code == 401
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    assert read_predictions(ws) == [] and read_log(ws) == []


def test_reads_open_to_anonymous_users_by_the_setting(workspace_templates, tmp_path):
    ws = champion_workspace(workspace_templates, tmp_path / "ws", serve={"anonymous_reads": True})
    client = TestClient(create_app(ws, ws.config, Settings()))
    assert client.get("/worklist").status_code == 200
    assert client.get("/model").json()["version"] == "1"
    assert client.get("/").status_code == 200
    answer = client.post("/predict", files={"image": ("a.png", png_bytes(), "image/png")})
    assert answer.status_code == 401  # writes stay closed


def test_no_identifier_of_an_uploaded_dicom_is_logged_returned_or_kept(review, tmp_path, caplog):
    ws, app, auth = review
    planted = {v for k, v in PHI_VALUES.items() if not k.endswith("Time")}
    dicom = write_dicom(tmp_path / f"{PHI_VALUES['PatientName']}.dcm").read_bytes()
    caplog.set_level(logging.DEBUG)
    responses = []
    with served(app) as url:
        import httpx

        with httpx.Client(base_url=url, headers=auth, timeout=60) as client:
            p = client.post(
                "/predict",
                files={"image": (f"{PHI_VALUES['PatientID']}.dcm", dicom, "application/dicom")},
            )
            assert p.status_code == 200, p.text
            pid = p.json()["prediction_id"]
            responses += [
                p,
                client.get(f"/predictions/{pid}"),
                client.get("/worklist"),
                client.get(f"/predictions/{pid}/heatmap"),
                client.get(f"/predictions/{pid}/image"),
            ]
            label = p.json()["label"]
            responses.append(client.post("/feedback", json={"prediction_id": pid, "label": label}))
            assert responses[-1].status_code == 200, responses[-1].text
    texts = [r.content.decode("latin-1") for r in responses]
    texts += [caplog.text]
    texts += [
        f.read_bytes().decode("latin-1") for f in (ws.root / "data").rglob("*") if f.is_file()
    ]
    texts += [
        f.read_bytes().decode("latin-1") for f in (ws.root / "reports").rglob("*") if f.is_file()
    ]
    for value in planted:
        spellings = {value, value.replace("^", " "), *value.split("^")}
        for text in texts:
            for spelling in spellings:
                if len(spelling) >= 5:
                    assert spelling not in text, f"{spelling!r} leaked"


def test_a_dicom_the_decoder_chokes_on_is_refused_without_quoting_its_header(review, tmp_path):
    from pydicom import dcmread

    ws, app, auth = review
    client = TestClient(app)
    odd = dcmread(write_dicom(tmp_path / "odd.dcm"))
    odd.PhotometricInterpretation = "DOEJOHN"  # a value a decoder's message would quote
    odd.save_as(tmp_path / "odd.dcm")
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    frames = dcmread(write_dicom(tmp_path / "frames.dcm"))
    # NumberOfFrames "Z", written raw (pydicom refuses to set it): not a number, which pydicom
    # raises on outside its decoders
    tag = Tag(0x00280008)
    frames._dict[tag] = RawDataElement(tag, "IS", 2, b"Z ", 0, False, True)
    frames.save_as(tmp_path / "frames.dcm")
    for name in ("odd.dcm", "frames.dcm"):
        answer = client.post("/predict", headers=auth, files={
            "image": (name, (tmp_path / name).read_bytes(), "application/dicom")})
        assert answer.status_code == 422, answer.text
        assert "DOEJOHN" not in answer.text and "Traceback" not in answer.text
        assert answer.json()["detail"].startswith("image refused")
    assert read_predictions(ws) == []


def test_odd_bytes_in_a_cookie_or_a_token_are_refused_not_a_500(review):
    _, app, _ = review
    client = TestClient(app)
    odd = "medimg_session=e30.\u00e9\u00e9; medimg_login=\u00e9".encode()  # raw UTF-8 bytes
    assert client.get("/", headers={"cookie": odd}, follow_redirects=False).status_code == 303
    assert client.post("/login", headers={"cookie": odd}, data={
        "reviewer": "dr-a", "token": "\u00e9", "csrf": "\u00e9"}).status_code == 403
    assert client.post("/predict", headers={"Authorization": "Bearer \u00e9t\u00e9".encode()},
                       files={"image": ("a.png", png_bytes(), "image/png")}).status_code == 401


def test_feedback_checks_the_reviewer_before_the_body_and_bounds_the_body(review):
    ws, app, auth = review
    client = TestClient(app)
    anonymous = client.post("/feedback", content=b"{not json",
                            headers={"content-type": "application/json"})
    assert anonymous.status_code == 401
    broken = client.post("/feedback", content=b"{not json", headers={
        **auth, "content-type": "application/json"})
    assert broken.status_code == 400 and "not JSON" in broken.json()["detail"]
    huge = client.post("/feedback", content=b"x" * (LIMIT_MB * 1024 * 1024 + 10), headers={
        **auth, "content-type": "application/json"})
    assert huge.status_code == 413
    assert read_log(ws) == []


def test_a_new_token_ends_the_sessions_of_the_old_one(review):
    ws, app, auth = review
    client = TestClient(app)
    _login(client, "dr-a", auth["Authorization"].split()[1])
    assert client.get("/", follow_redirects=False).status_code == 200
    add_user(users_path(ws), "dr-a")  # a new token, as after a lost one
    assert client.get("/", follow_redirects=False).status_code == 303
