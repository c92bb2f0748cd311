from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "authentik.core"
    label = "authentik_core"
