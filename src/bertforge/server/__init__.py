"""`bertforge serve`: models over HTTP with dynamic batching, metrics and a web page."""

from bertforge.server.app import create_app
from bertforge.server.background import background_server
from bertforge.server.limits import ServerSettings
from bertforge.server.models import ServedModel, load_served_model

__all__ = ["ServedModel", "background_server", "ServerSettings", "create_app", "load_served_model"]
