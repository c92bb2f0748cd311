from django.apps import AppConfig


class FlowsConfig(AppConfig):
    name = "authentik.flows"
    label = "authentik_flows"
