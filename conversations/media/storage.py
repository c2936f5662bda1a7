"""Where media files live: Django's storage API, on a storage of their own that never has a URL."""
from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.utils.functional import cached_property

STORAGE_ALIAS = "linebot_media"


class PrivateFileSystemStorage(FileSystemStorage):
    """A folder (LINEBOT_MEDIA_ROOT) readable by this account alone, with no public URL: files
    reach a browser only through the audited staff view."""

    def __init__(self, location=None, **kwargs) -> None:
        kwargs.update(base_url=None, file_permissions_mode=0o600, directory_permissions_mode=0o700)
        super().__init__(location=location, **kwargs)

    @cached_property
    def base_location(self):
        return self._value_or_setting(self._location, settings.LINEBOT_MEDIA_ROOT)

    def _clear_cached_properties(self, setting, **kwargs) -> None:
        super()._clear_cached_properties(setting, **kwargs)
        if setting == "LINEBOT_MEDIA_ROOT":
            self.__dict__.pop("base_location", None)
            self.__dict__.pop("location", None)

    def url(self, name):
        raise ValueError("Media files have no public URL; staff see them through the audited media view.")


def media_storage() -> Storage:
    """The storage of every media file (settings.STORAGES["linebot_media"])."""
    return storages[STORAGE_ALIAS]
