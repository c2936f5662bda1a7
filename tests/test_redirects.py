"""Redirect targets taken from the request stay on this site."""
import pytest

pytestmark = pytest.mark.django_db

OFF_SITE = ["https://evil.example/", "//evil.example/", "http:///evil.example/", "/\\evil.example/",
            "javascript:alert(1)"]


@pytest.mark.parametrize("target", OFF_SITE)
def test_redacting_follows_next_only_within_the_site(admin_client, make_chat, make_message, target):
    chat = make_chat("C" + "01" * 16)
    first, second = make_message(chat, "one"), make_message(chat, "two")
    url = "/admin/conversations/message/{}/redact/"

    kept = admin_client.post(url.format(first.pk), {"reason": "PII", "next": "/admin/conversations/chat/"})
    refused = admin_client.post(url.format(second.pk), {"reason": "PII", "next": target})

    assert kept.status_code == 302 and kept["Location"] == "/admin/conversations/chat/"
    assert refused.status_code == 302
    assert refused["Location"] == f"/admin/conversations/message/{second.pk}/change/"
