# The Celery app is created on import so that @shared_task binds to it (Celery's Django convention).
from plgapp.celery import app as celery_app

__all__ = ("celery_app",)
