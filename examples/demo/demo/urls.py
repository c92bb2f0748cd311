"""URLs of the demo site."""

from demo_api.views import status
from django.urls import path

urlpatterns = [path("status", status)]
