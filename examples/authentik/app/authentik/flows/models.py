"""Flow models (stand-in)."""

from django.db import models


class Flow(models.Model):
    """A login flow."""

    slug = models.SlugField(unique=True)
