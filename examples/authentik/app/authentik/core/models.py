"""Core models (stand-in)."""

from django.db import models


class Brand(models.Model):
    """A brand the identity provider serves, with the flow its users log in through."""

    domain = models.CharField(max_length=255, unique=True)
    flow_authentication = models.ForeignKey("authentik_flows.Flow", null=True,
                                            on_delete=models.SET_NULL)
