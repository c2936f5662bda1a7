"""django-q2 entry points of the model registry, thin (their paths are in the modules that queue them)."""
from . import pulls


def pull_model(pull_id: int) -> str:
    return pulls.run_pull(pull_id=pull_id)
