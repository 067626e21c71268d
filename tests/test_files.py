"""Attachments (api.md, "Attachments"): uploaded, sniffed from their bytes, given to the model
(the demo names them; an OpenAI-compatible server gets the image part and the extracted text),
shown and served to their owner only, refused with a message and nothing stored when bad, and
deleted with their chat."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re

import pytest
from PIL import ExifTags, Image
from sqlalchemy import func, select

from chat.extensions import db
from chat.files.store import FileStoreError
from chat.models import FileBlob, Identity, Message, StoredFile
from helpers.accounts import AccountActions
from helpers.axe import violations
from helpers.browser import wait_finished
from helpers.chats import latest_reply, new_chat_id, wait_for
from helpers.files import SVG, damaged_pdf, encrypted_pdf, jpeg_with_location, pdf, png, zip_file
from helpers.s3 import CREDENTIALS, object_keys, s3_server
from helpers.sse import read_events

REPORT = "Quarterly report: revenue grew nine percent"


def upload(client, name: str, data: bytes, **headers):
    return client.post("/api/files", data={"file": (io.BytesIO(data), name)}, headers=headers)


def uploaded(client, name: str, data: bytes) -> dict:
    response = upload(client, name, data)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def send(client, chat_id: str, message: str, files: list[str], agent: str = "helper"):
    body = {"chatId": chat_id, "agent": agent, "message": message, "files": files}
    return client.post("/api/chat", json=body, buffered=False)


def stored_counts(app) -> tuple[int, int]:
    with app.app_context():
        return (
            db.session.scalar(select(func.count()).select_from(StoredFile)) or 0,
            db.session.scalar(select(func.count()).select_from(FileBlob)) or 0,
        )


def test_files_sent_with_a_message_reach_the_demo_model_and_the_page(app, client):
    image = uploaded(client, "chart.png", png())
    report = uploaded(client, "report.pdf", pdf(REPORT))
    notes = uploaded(client, "notes.md", b"# Notes\n\nShip the attachments feature on Monday.")
    assert (image["type"], report["type"], notes["type"]) == ("image/png", "application/pdf", "text/plain")
    assert image["name"] == "chart.png" and image["size"] == len(png())

    chat_id = new_chat_id()
    reply = read_events(
        send(client, chat_id, "What do these say?", [image["fileId"], report["fileId"], notes["fileId"]])
    )
    assert reply.events[-1].event == "finish"
    for line in ("**chart.png** (image/png", "**report.pdf** (application/pdf", "**notes.md** (text/plain"):
        assert line in reply.text
    assert "“Quarterly report: revenue grew nine percent”" in reply.text
    assert "Ship the attachments feature on Monday." in reply.text
    stored = latest_reply(app, chat_id)
    assert stored.content == reply.text
    assert stored.prompt_tokens > 765  # the estimate counts the image (and the documents' text)

    assert client.post(f"/agent/helper/{chat_id}/regenerate").status_code == 303
    wait_for(lambda: latest_reply(app, chat_id).status == "complete" and latest_reply(app, chat_id).id != stored.id)
    assert "**report.pdf** (application/pdf" in latest_reply(app, chat_id).content  # sent again with its files

    page = client.get(f"/agent/helper/{chat_id}").get_data(as_text=True)
    assert f'src="/files/{image["fileId"]}/thumbnail"' in page
    assert f'href="/files/{report["fileId"]}"' in page and "report.pdf" in page

    original = client.get(f"/files/{image['fileId']}")
    assert original.status_code == 200 and original.mimetype == "image/png" and original.data == png()
    assert original.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in original.headers["Content-Security-Policy"]
    assert not original.headers.get("Content-Disposition", "").startswith("attachment")
    thumbnail = client.get(f"/files/{image['fileId']}/thumbnail")
    assert thumbnail.mimetype == "image/webp" and Image.open(io.BytesIO(thumbnail.data)).format == "WEBP"
    document = client.get(f"/files/{report['fileId']}")
    assert document.headers["Content-Disposition"].startswith("attachment")
    assert document.mimetype == "application/pdf" and document.data == pdf(REPORT)
    assert client.get(f"/files/{report['fileId']}/thumbnail").status_code == 404


def test_the_model_gets_the_image_as_an_image_part_and_the_document_as_text(model_app, provider):
    client = model_app.test_client()
    image = uploaded(client, "chart.png", png("green"))
    report = uploaded(client, "report.pdf", pdf(REPORT))
    reply = read_events(send(client, new_chat_id(), "Summarise", [image["fileId"], report["fileId"]]))
    assert reply.events[-1].event == "finish"
    request = next(r["body"] for r in provider.requests if r["body"].get("stream"))
    content = request["messages"][-1]["content"]
    assert request["messages"][-1]["role"] == "user" and isinstance(content, list)
    text, picture = content
    assert text["type"] == "text" and text["text"].startswith("Summarise")
    assert "--- Attached file report.pdf (application/pdf" in text["text"] and REPORT in text["text"]
    assert picture["type"] == "image_url"
    assert picture["image_url"]["url"].startswith("data:image/png;base64,")
    assert "files" not in request["messages"][-1]  # only what the API knows


def test_a_document_longer_than_the_history_budget_is_cut_and_says_so(app_factory):
    app = app_factory(HISTORY_CHAR_BUDGET=200)
    client = app.test_client()
    long_text = ("word " * 400).encode()
    notes = uploaded(client, "long.txt", long_text)
    reply = read_events(send(client, new_chat_id(), "Read this", [notes["fileId"]]))
    assert re.search(r"\(cut: 1,\d{3} characters did not fit\)", reply.text), reply.text


@pytest.mark.parametrize(
    ("name", "data", "status", "says"),
    [
        ("empty.txt", b"", 400, "is empty"),
        ("archive.zip", zip_file(), 415, "application/zip"),
        ("damaged.pdf", damaged_pdf(), 400, "damaged PDF"),
        ("locked.pdf", encrypted_pdf(), 400, "encrypted"),
        ("drawing.svg", SVG, 415, "SVG or HTML"),
        ("page.html", b"<!DOCTYPE html><html><script>alert(1)</script></html>", 415, "SVG or HTML"),
        ("picture.pdf", png(), 415, "named like a PDF, but its contents are a PNG image"),
        ("binary.txt", b"\x00\x01\x02\x03" * 10, 415, "not a type we take"),
    ],
)
def test_a_bad_file_is_refused_with_a_message_and_nothing_is_stored(app, client, name, data, status, says):
    response = upload(client, name, data)
    assert response.status_code == status
    assert says in response.get_json()["error"]
    assert stored_counts(app) == (0, 0)


def test_a_file_over_the_limit_is_refused_before_anything_is_stored(app_factory):
    app = app_factory(MAX_UPLOAD_BYTES=1000)
    client = app.test_client()
    response = upload(client, "big.txt", b"a" * 1001)
    assert response.status_code == 413 and "larger than 1,000 bytes, the limit per file" in response.get_json()["error"]
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="huge.txt"\r\n\r\n'
    body = part + b"a" * 1_100_000 + b"\r\n--b--\r\n"  # (by hand: the test client would spool it to a file)
    way_over = client.post(
        "/api/files", data=body, content_type="multipart/form-data; boundary=b"
    )  # past the body limit
    assert way_over.status_code == 413 and "too much to send at once" in way_over.get_json()["error"]
    assert stored_counts(app) == (0, 0)


def test_a_message_refuses_too_many_files_a_type_its_agent_does_not_take_and_files_not_the_callers(app_factory):
    app = app_factory(MAX_FILES_PER_MESSAGE=2)
    client = app.test_client()
    ids = [uploaded(client, f"n{i}.txt", f"note {i}".encode())["fileId"] for i in range(3)]
    chat_id = new_chat_id()
    too_many = send(client, chat_id, "three", ids)
    assert too_many.status_code == 400 and "at most 2" in too_many.get_json()["error"]
    picture = uploaded(client, "photo.png", png())["fileId"]
    refused = send(client, chat_id, "look", [picture], agent="coder")  # coder takes PDFs and text only
    assert refused.status_code == 400
    assert (
        "Coder does not take a PNG image (photo.png); it takes application/pdf, text/*" in refused.get_json()["error"]
    )
    stranger = app.test_client()
    foreign = send(stranger, new_chat_id(), "mine?", [ids[0]])
    assert foreign.status_code == 404
    assert send(client, chat_id, "not ids", "nope").status_code == 400
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Message)) == 0  # nothing stored

    assert read_events(send(client, chat_id, "two", ids[:2])).events[-1].event == "finish"
    again = send(client, new_chat_id(), "again", [ids[0]])  # a file goes with one message only
    assert again.status_code == 404


def test_a_file_is_its_uploaders_alone(app, client):
    image = uploaded(client, "private.png", png("purple"))
    chat_id = new_chat_id()
    read_events(send(client, chat_id, "mine", [image["fileId"]]))
    stranger = app.test_client()
    assert stranger.get(f"/files/{image['fileId']}").status_code == 404
    assert stranger.get(f"/files/{image['fileId']}/thumbnail").status_code == 404
    assert stranger.get("/files/00000000-0000-0000-0000-000000000000").status_code == 404
    assert client.get(f"/files/{image['fileId']}").status_code == 200


def test_an_upload_from_another_site_is_refused_and_a_bearer_token_is_not(app, client):
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        response = upload(client, "note.txt", b"hello", **headers)
        assert response.status_code == 403 and "other websites" in response.get_json()["error"]
    assert stored_counts(app) == (0, 0)
    owner = AccountActions(app.test_client())
    owner.sign_up()
    token = owner.create_token()
    scripted = app.test_client()
    response = upload(scripted, "note.txt", b"hello", Authorization=f"Bearer {token}", Origin="https://evil.example")
    assert response.status_code == 201
    assert owner.client.get(f"/files/{response.get_json()['fileId']}").status_code == 200  # the account's


def test_where_a_photo_was_taken_is_stripped_and_the_rest_kept(client):
    photo = uploaded(client, "holiday.jpg", jpeg_with_location())
    served = Image.open(io.BytesIO(client.get(f"/files/{photo['fileId']}").data))
    exif = served.getexif()
    assert ExifTags.IFD.GPSInfo not in exif and exif[0x010F] == "TestCam"
    thumbnail = Image.open(io.BytesIO(client.get(f"/files/{photo['fileId']}/thumbnail").data))
    assert not thumbnail.getexif()


def test_deleting_a_chat_deletes_its_files_and_their_bytes_unless_another_chat_holds_them(app, client):
    shared_bytes, own_bytes = pdf("kept by two chats"), pdf("only in the first chat")
    first, second = new_chat_id(), new_chat_id()
    ids = [uploaded(client, "both.pdf", shared_bytes)["fileId"], uploaded(client, "own.pdf", own_bytes)["fileId"]]
    read_events(send(client, first, "first", ids))
    read_events(send(client, second, "second", [uploaded(client, "both.pdf", shared_bytes)["fileId"]]))
    assert stored_counts(app) == (3, 2)  # the same bytes uploaded twice are stored once
    assert client.post(f"/agent/helper/{first}/delete").status_code in (200, 303)
    assert stored_counts(app) == (1, 1)
    assert client.get(f"/files/{ids[1]}").status_code == 404
    client.post(f"/agent/helper/{second}/delete")
    assert stored_counts(app) == (0, 0)


def test_two_instances_on_one_database_serve_each_others_uploads(app_factory):
    first, second = app_factory(), app_factory()
    person = AccountActions(first.test_client())
    person.sign_up()
    auth = {"Authorization": f"Bearer {person.create_token()}"}
    report = upload(first.test_client(), "report.pdf", pdf(REPORT), **auth).get_json()
    chat_id = new_chat_id()
    body = {"chatId": chat_id, "agent": "helper", "message": "Read it", "files": [report["fileId"]]}
    reply = read_events(second.test_client().post("/api/chat", json=body, headers=auth, buffered=False))
    assert REPORT in reply.text
    assert first.test_client().get(f"/files/{report['fileId']}", headers=auth).data == pdf(REPORT)
    assert second.test_client().get(f"/files/{report['fileId']}", headers=auth).data == pdf(REPORT)


def test_the_page_form_sends_files_without_javascript(app, client):
    chat_id = new_chat_id()
    form = {
        "message": "Here are two files",
        "files": [(io.BytesIO(png("orange")), "sketch.png"), (io.BytesIO(pdf(REPORT)), "report.pdf")],
    }
    response = client.post(f"/agent/helper/{chat_id}/messages", data=form, content_type="multipart/form-data")
    assert response.status_code == 303
    with app.app_context():
        names = sorted(db.session.scalars(select(StoredFile.name)))
    assert names == ["report.pdf", "sketch.png"]
    refused = client.post(
        f"/agent/helper/{new_chat_id()}/messages",
        data={"message": "bad", "files": [(io.BytesIO(SVG), "x.svg")]},
        content_type="multipart/form-data",
    )
    assert refused.status_code == 415 and "SVG or HTML" in refused.get_data(as_text=True)
    assert stored_counts(app)[0] == 2


def test_exports_list_the_files_with_their_links(client):
    report = uploaded(client, "report.pdf", pdf(REPORT))
    chat_id = new_chat_id()
    read_events(send(client, chat_id, "Read it", [report["fileId"]]))
    exported = json.loads(client.get(f"/agent/helper/{chat_id}/export.json").data)
    (attached,) = exported["messages"][0]["files"]
    assert attached["fileId"] == report["fileId"] and attached["name"] == "report.pdf"
    assert attached["url"].endswith(f"/files/{report['fileId']}")
    markdown = client.get(f"/agent/helper/{chat_id}/export.md").get_data(as_text=True)
    assert f"- Attached: [report.pdf](<http://localhost/files/{report['fileId']}>) (application/pdf" in markdown


def test_a_fork_keeps_the_files_for_its_new_owner_and_a_share_link_viewer_sees_names_only(app, client):
    image = uploaded(client, "diagram.png", png("teal"))
    chat_id = new_chat_id()
    read_events(send(client, chat_id, "See this", [image["fileId"]]))
    with app.app_context():
        reply = latest_reply(app, chat_id)
    other = app.test_client()
    share = client.post(f"/agent/helper/{chat_id}/shares", follow_redirects=True).get_data(as_text=True)
    token_path = re.search(r"(/s/[A-Za-z0-9_-]+)", share)
    assert token_path, "the shares page lists the new link"
    viewed = other.get(token_path.group(1)).get_data(as_text=True)
    assert "diagram.png" in viewed and f"/files/{image['fileId']}" not in viewed
    forked = other.post(f"{token_path.group(1)}/fork/{reply.id}")
    assert forked.status_code == 303
    fork_page = other.get(forked.headers["Location"]).get_data(as_text=True)
    copy_id = re.search(r'src="/files/([0-9a-f-]{36})/thumbnail"', fork_page)
    assert copy_id and copy_id.group(1) != image["fileId"]
    assert other.get(f"/files/{copy_id.group(1)}").data == png("teal")
    assert other.get(f"/files/{image['fileId']}").status_code == 404


PASTE = """([name, type, encoded]) => {
  const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type}));
  document.querySelector('#message-input').dispatchEvent(
    new ClipboardEvent('paste', {bubbles: true, cancelable: true, clipboardData: transfer}));
}"""

DROP = """([name, type, encoded]) => {
  const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type}));
  const target = document.querySelector('#message-input');
  for (const kind of ['dragover', 'drop']) {
    target.dispatchEvent(new DragEvent(kind, {bubbles: true, cancelable: true, dataTransfer: transfer}));
  }
}"""


@pytest.mark.browser
def test_in_the_browser_drop_paste_pick_preview_remove_and_send(live_server, page, tmp_path):
    server = live_server()
    page.goto(f"{server.url}/agent/helper")
    page.evaluate(DROP, ["dropped.png", "image/png", base64.b64encode(png("navy")).decode()])
    page.wait_for_selector("#attachment-previews li img")
    page.evaluate(PASTE, ["pasted.png", "image/png", base64.b64encode(png("maroon")).decode()])
    wait_for(lambda: page.locator("#attachment-previews li").count() == 2, message="the pasted image's preview")
    (tmp_path / "report.pdf").write_bytes(pdf(REPORT))
    (tmp_path / "extra.txt").write_bytes(b"remove me")
    page.set_input_files("#attach-input", [str(tmp_path / "report.pdf"), str(tmp_path / "extra.txt")])
    wait_for(lambda: page.locator("#attachment-previews li").count() == 4, message="four previews")
    assert violations(page) == [], "the composer with previews"
    page.click("#attachment-previews button[aria-label='Remove extra.txt']")
    wait_for(lambda: page.locator("#attachment-previews li").count() == 3, message="three previews")
    page.fill("#message-input", "What is in these?")
    page.keyboard.press("Enter")
    wait_finished(page)
    reply = page.inner_text(".message.assistant")
    assert "dropped.png (image/png" in reply and "report.pdf (application/pdf" in reply and "pasted.png" in reply
    assert "extra.txt" not in reply
    wait_for(lambda: page.evaluate("document.querySelector('.message.user .attachment img').naturalWidth") > 0)
    assert page.locator("#attachment-previews li").count() == 0  # the composer is empty again
    assert violations(page) == [], "the chat with attachments"


@pytest.mark.browser
def test_without_javascript_the_form_sends_the_files(live_server, browser_context, tmp_path):
    server = live_server()
    page = browser_context(java_script_enabled=False).new_page()
    page.goto(f"{server.url}/agent/helper")
    (tmp_path / "plain.pdf").write_bytes(pdf(REPORT))
    page.set_input_files("#attach-input", [str(tmp_path / "plain.pdf")])
    page.fill("#message-input", "Sent without JavaScript")
    page.click("#composer button.send")
    page.wait_for_selector(".message.user .attachment a:text('plain.pdf')")
    chat_id = page.url.rstrip("/").split("/")[-1]
    wait_for(lambda: (reply := latest_reply(server.app, chat_id)) and reply.status == "complete")
    assert "plain.pdf" in latest_reply(server.app, chat_id).content


def test_with_a_bucket_the_bytes_live_there_and_go_with_their_chat(app_factory, tmp_path, monkeypatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with s3_server(tmp_path / "s3", "attachments") as endpoint:
        app = app_factory(FILE_STORE="s3://attachments/chat-files", S3_ENDPOINT_URL=endpoint)
        client = app.test_client()
        report = uploaded(client, "report.pdf", pdf(REPORT))
        chat_id = new_chat_id()
        reply = read_events(send(client, chat_id, "Read it", [report["fileId"]]))
        assert REPORT in reply.text  # the text was extracted as it came in
        sha256 = hashlib.sha256(pdf(REPORT)).hexdigest()
        assert object_keys(endpoint, "attachments") == [f"chat-files/{sha256}"]
        with app.app_context():
            assert db.session.get(FileBlob, sha256).data is None, "the database keeps no copy"
        assert client.get(f"/files/{report['fileId']}").data == pdf(REPORT)
        image = uploaded(client, "chart.png", png("olive"))  # not sent: kept until the daily sweep
        assert client.post(f"/agent/helper/{chat_id}/delete").status_code in (200, 303)
        assert object_keys(endpoint, "attachments") == [f"chat-files/{hashlib.sha256(png('olive')).hexdigest()}"]
        assert client.get(f"/files/{image['fileId']}").data == png("olive")


def test_a_file_store_that_is_not_a_bucket_url_stops_the_app_at_start(app_factory):
    with pytest.raises(FileStoreError, match="FILE_STORE must be `database` or s3://bucket/prefix"):
        app_factory(FILE_STORE="ftp://nowhere")


def test_a_guest_who_signs_up_keeps_its_files(app, client):
    report = uploaded(client, "report.pdf", pdf(REPORT))
    unsent = uploaded(client, "later.txt", b"for a later message")
    chat_id = new_chat_id()
    read_events(send(client, chat_id, "Read it", [report["fileId"]]))
    assert AccountActions(client).sign_up("ada@example.com").status_code == 303
    assert client.get(f"/files/{report['fileId']}").data == pdf(REPORT)
    assert read_events(send(client, new_chat_id(), "Now this", [unsent["fileId"]])).events[-1].event == "finish"


def test_a_refused_page_send_keeps_its_files_for_the_next_try(app_factory):
    """Without JavaScript a refused send re-renders the page: its text and its files are still
    there (the files as checked boxes), and sending again sends them — nothing is lost."""
    app = app_factory(GUEST_CREDIT_GRANT=0)
    client = app.test_client()
    chat_id = new_chat_id()
    form = {"message": "Read this", "files": [(io.BytesIO(pdf(REPORT)), "report.pdf")]}
    refused = client.post(f"/agent/helper/{chat_id}/messages", data=form, content_type="multipart/form-data")
    assert refused.status_code == 402
    page = refused.get_data(as_text=True)
    kept = re.search(r'name="kept_files" value="([0-9a-f-]{36})" checked> report.pdf', page)
    assert kept and "Read this" in page, "the text and the file are still in the form"
    with app.app_context():
        db.session.query(Identity).update({"balance_micros": 50_000_000})
        db.session.commit()
    again = client.post(f"/agent/helper/{chat_id}/messages", data={"message": "Read this", "kept_files": kept.group(1)})
    assert again.status_code == 303
    with app.app_context():
        (stored,) = db.session.scalars(select(StoredFile))
        assert stored.message_id is not None and str(stored.id) == kept.group(1)
    wait_for(lambda: latest_reply(app, chat_id).status == "complete")
    assert "**report.pdf** (application/pdf" in latest_reply(app, chat_id).content
