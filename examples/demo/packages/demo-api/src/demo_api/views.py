"""Views of the demo site's API."""

import psycopg
from django.http import HttpRequest, JsonResponse


def status(request: HttpRequest) -> JsonResponse:
    """Which psycopg implementation serves the site ("c" when built from sdist)."""
    return JsonResponse({"psycopg": psycopg.pq.__impl__})
