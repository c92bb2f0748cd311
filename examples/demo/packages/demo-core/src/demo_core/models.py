"""Models of the demo site's core."""

from django.db import models


class Tenant(models.Model):
    """Someone the site serves."""

    name = models.CharField(max_length=100, unique=True)
