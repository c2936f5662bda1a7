from django.urls import path

from . import views

app_name = "conversations"

urlpatterns = [
    path("line/webhook/", views.webhook, name="webhook"),
    path("line/webhook/<slug:slug>/", views.webhook, name="webhook"),
]
