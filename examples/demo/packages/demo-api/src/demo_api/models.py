"""Models of the demo site's API."""

from django.db import models


class Token(models.Model):
    """An API token of a tenant."""

    tenant = models.ForeignKey("demo_core.Tenant", on_delete=models.CASCADE)
    key = models.CharField(max_length=64)
