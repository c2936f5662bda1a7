"""The API never returns a saved secret, to readers or to superusers, on any endpoint that reads."""
import pytest

from tests.test_api import api, api_test_settings, reader, reader_api, superuser  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db

CHANNEL_SECRET = "apichsecretK4p8distinct"
ACCESS_TOKEN = "apichtokenW2n5distinct"
API_KEY = "apikeyJ6r3distinct"


@pytest.fixture
def secret_holders(api) -> tuple[int, int]:
    """A channel and a backend given their secrets over the API, so the audit trail has the writes too."""
    channel = api.post("/api/v1/channels/", {"name": "Shop", "slug": "shop", "channel_secret": CHANNEL_SECRET,
                                             "access_token": ACCESS_TOKEN}, format="json")
    backend = api.post("/api/v1/backends/", {"name": "Cloud", "kind": "replicate", "is_local": False,
                                             "base_url": "https://api.replicate.com", "model": "google/gemma-3-4b-it",
                                             "api_key": API_KEY}, format="json")
    assert (channel.status_code, backend.status_code) == (201, 201)
    return channel.json()["id"], backend.json()["id"]


@pytest.mark.parametrize("who", ["reader_api", "api"])
def test_no_read_returns_a_secret(request, secret_holders, who):
    client = request.getfixturevalue(who)
    channel_id, backend_id = secret_holders
    urls = ["/api/v1/channels/", f"/api/v1/channels/{channel_id}/", "/api/v1/backends/",
            f"/api/v1/backends/{backend_id}/", "/api/v1/presets/", "/api/v1/chats/", "/api/v1/audit-events/"]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        content = response.content.decode()
        assert not [secret for secret in (CHANNEL_SECRET, ACCESS_TOKEN, API_KEY) if secret in content], url
    channel = client.get(f"/api/v1/channels/{channel_id}/").json()
    backend = client.get(f"/api/v1/backends/{backend_id}/").json()
    assert (channel["has_channel_secret"], channel["has_access_token"], backend["has_api_key"]) == (True, True, True)
    assert not {"channel_secret", "access_token"} & set(channel) and "api_key" not in backend
