"""Serving layer: Ray Serve + FastAPI online inference, rollouts, batch inference."""
