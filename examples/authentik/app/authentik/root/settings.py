"""Django settings of the stand-in, shaped like authentik's authentik/root/settings.py."""

from pathlib import Path

from authentik.lib.config import CONFIG

# The packaged build substitutes the closure's path here, as the real build does.
BASE_DIR = Path(__file__).absolute().parent.parent.parent
BLUEPRINTS_DIR = Path(CONFIG["blueprints_dir"])

SECRET_KEY = "stand-in-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "authentik.core",
    "authentik.flows",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": CONFIG["postgresql"]["host"],
        "NAME": CONFIG["postgresql"]["name"],
        "USER": CONFIG["postgresql"]["user"],
        "PASSWORD": CONFIG["postgresql"].get("password", ""),
        "PORT": int(CONFIG["postgresql"]["port"]),
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
